// What the loader refuses, and how it says so: every error names the file and the component.
#include <gtest/gtest.h>

#include <chrono>

#include "test_util.h"

namespace levanter::data {
namespace {

nlohmann::json minimal() {
  return nlohmann::json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
    "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "post_processor": null, "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}
  })");
}

std::string load_error(const nlohmann::json& j) {
  try {
    Tokenizer::from_json(j.dump(), "test.json");
  } catch (const TokenizerError& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_error(const nlohmann::json& j, const std::string& part) {
  std::string msg = load_error(j);
  EXPECT_NE(msg.find("test.json: "), std::string::npos) << msg;
  EXPECT_NE(msg.find(part), std::string::npos) << msg;
}

TEST(TokenizerErrors, MinimalLoads) {
  Tokenizer tok = Tokenizer::from_json(minimal().dump());
  EXPECT_EQ(tok.encode("ab"), std::vector<TokenId>{2});
  EXPECT_EQ(tok.encode("abba"), (std::vector<TokenId>{2, 1, 0}));
  EXPECT_EQ(tok.encode("xy"), std::vector<TokenId>{});  // no unk token: unknown characters are dropped, as in HF
}

TEST(TokenizerErrors, UnsupportedComponentsAreNamed) {
  auto j = minimal();
  j["model"]["type"] = "WordPiece";
  expect_error(j, "unsupported model type 'WordPiece'");
  j = minimal();
  j["model"]["type"] = "Unigram";
  expect_error(j, "unsupported model type 'Unigram'");
  j = minimal();
  j["normalizer"] = {{"type", "NFKC"}};
  expect_error(j, "unsupported normalizer type 'NFKC'");
  j = minimal();
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "Lowercase"}}}}};
  expect_error(j, "unsupported normalizer type 'Lowercase'");
  j = minimal();
  j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", " "}};
  expect_error(j, "Regex patterns are not supported");
  j = minimal();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "x"}}}};
  expect_error(j, "unsupported pre_tokenizer type 'Split'");
  j = minimal();
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "ByteLevel"}}, {{"type", "Metaspace"}}}}};
  expect_error(j, "ByteLevel must be the last");
  j = minimal();
  j["post_processor"] = {{"type", "Whatever"}};
  expect_error(j, "unsupported post_processor type 'Whatever'");
  j = minimal();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(j, "unsupported decoder type 'WordPiece'");
  j = minimal();
  j["model"]["dropout"] = 0.1;
  expect_error(j, "dropout is not supported");
  j = minimal();
  j["truncation"] = {{"max_length", 512}};
  expect_error(j, "truncation is not supported");
  j = minimal();
  j["padding"] = {{"strategy", "BatchLongest"}};
  expect_error(j, "padding is not supported");
}

TEST(TokenizerErrors, BrokenFiles) {
  auto j = minimal();
  j["model"]["merges"] = {"a c"};
  expect_error(j, "model.merges[0]: token 'c' is not in the vocabulary");
  j = minimal();
  j["model"]["merges"] = {"ab"};
  expect_error(j, "is not \"left right\"");
  j = minimal();
  j["model"].erase("vocab");
  expect_error(j, "missing \"vocab\"");
  j = minimal();
  j["model"]["vocab"]["x"] = -3;
  expect_error(j, "model.vocab: 'x': token id -3 is out of range: ids must lie in [0, 16777216)");
  EXPECT_NE(load_error(nlohmann::json::array()).find("not a tokenizer.json"), std::string::npos);
  try {
    Tokenizer::from_json("{\"model\": ", "broken.json");
    FAIL();
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("broken.json: not valid JSON"), std::string::npos) << e.what();
  }
  try {
    Tokenizer::from_file("/nonexistent/tokenizer.json");
    FAIL();
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.json: cannot open"), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, TokenIdsNear2To31AreRefusedBeforeAllocatingAndNamedAsTheyAre) {
  // Before: an id near 2^31 allocated gigabytes of empty vocabulary before failing, and 4e9 was called "negative".
  auto j = minimal();
  j["model"]["vocab"]["x"] = 2147483000;
  const auto t0 = std::chrono::steady_clock::now();
  expect_error(j, "model.vocab: 'x': token id 2147483000 is out of range");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  j = minimal();
  j["added_tokens"] = nlohmann::json::parse(R"([{"id": 4000000000, "content": "<s>", "special": true}])");
  expect_error(j, "added_tokens: '<s>': token id 4000000000 is out of range: ids must lie in [0, 16777216)");
  j = minimal();
  j["added_tokens"] = nlohmann::json::parse(R"([{"id": 16777216, "content": "<s>", "special": true}])");
  expect_error(j, "token id 16777216 is out of range");
  j = minimal();
  j["post_processor"] = nlohmann::json::parse(R"({"type": "RobertaProcessing", "cls": ["<s>", 4294967296],
                                                  "sep": ["</s>", 1]})");
  expect_error(j, "post_processor RobertaProcessing: \"cls\": token id 4294967296 is out of range");
  j = minimal();  // an id past the vocabulary but within the bound still loads, as in Hugging Face tokenizers
  j["added_tokens"] = nlohmann::json::parse(R"([{"id": 300000, "content": "<big>", "special": true}])");
  EXPECT_EQ(load_error(j), "(no error)");
}

TEST(TokenizerErrors, MergesAsPairsAndStringsAreTheSame) {
  auto strings = minimal();
  auto pairs = minimal();
  pairs["model"]["merges"] = nlohmann::json::array({nlohmann::json::array({"a", "b"})});
  Tokenizer a = Tokenizer::from_json(strings.dump()), b = Tokenizer::from_json(pairs.dump());
  EXPECT_EQ(a.encode("abab"), b.encode("abab"));
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
}

}  // namespace
}  // namespace levanter::data
