// Inputs found by the fuzz targets (fuzz/, scripts/fuzz) that broke the data parsers: each is the bytes the fuzzer
// found (or their minimal form) and the error the parser must give instead. fuzz/README.md lists the findings.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "data_testing.h"
#include "levanter/data/jsonl_reader.h"
#include "levanter/data/tokenizer/tokenizer.h"

using namespace levanter::data;
using namespace levanter::data::testing;
using ::testing::HasSubstr;

// fuzz_jsonl: a number beyond double's range makes nlohmann throw out_of_range, not parse_error; it escaped the
// reader as a library exception, so skip_bad_lines could not skip the line and the message named no file.
TEST(FuzzRegressionJsonl, NumberOutOfRangeIsMalformedJsonOfItsLine) {
  try {
    jsonl_text_field(R"({"text": "a", "score": 1e400})", "text", "f.jsonl", 2);
    FAIL() << "no error";
  } catch (const DataSourceError& e) {
    EXPECT_EQ(e.line(), 2u);
    EXPECT_STREQ(e.what(), "f.jsonl:2: malformed JSON: number overflow parsing '1e400'");
  }

  TempDir t;
  write_text(t / "in/a.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\", \"score\": -1e400}\n{\"text\": \"c\"}\n");
  CacheBuildOptions o;
  o.num_threads = 1;
  o.skip_bad_lines = true;
  o.log_warnings = false;
  auto cache = build_or_load_cache(t / "cache", {t / "in/a.jsonl"}, byte_encoder(), o);
  cache->builder()->wait();
  auto m = read_manifest(t / "cache");
  ASSERT_TRUE(m && m->finished);
  EXPECT_EQ(m->bad_lines, 1);
  EXPECT_EQ(m->rows, 2);
}

// fuzz_tokenizer_json: the same out_of_range from the tokenizer.json parser escaped Tokenizer::from_json.
TEST(FuzzRegressionTokenizer, NumberOutOfRangeIsInvalidJson) {
  try {
    Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 1e400}, "merges": []}})", "t.json");
    FAIL() << "no error";
  } catch (const TokenizerError& e) {
    EXPECT_THAT(e.what(), HasSubstr("t.json: not valid JSON: "));
    EXPECT_THAT(e.what(), HasSubstr("number overflow parsing '1e400'"));
  }
}

namespace {

std::string tokenizer_error(const std::string& json) {
  try {
    Tokenizer::from_json(json, "t.json");
  } catch (const TokenizerError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

// fuzz_tokenizer_json: tables are sized by the largest id, so a vocabulary id of 2^31 - 1 overflowed `id + 1`
// (undefined behaviour) and 2,000,000,000 asked for 64 GB (out of memory); an added token's id the same (8 GB).
TEST(FuzzRegressionTokenizer, HugeIdsAreRefusedNotAllocated) {
  EXPECT_EQ(tokenizer_error(R"({"model": {"type": "BPE", "vocab": {"a": 2147483647}, "merges": []}})"),
            "t.json: model.vocab: 'a': token id 2147483647 is out of range: ids must lie in [0, 16777216) (the largest "
            "vocabularies in use have about 256K tokens)");
  EXPECT_EQ(tokenizer_error(R"({"model": {"type": "BPE", "vocab": {"a": 2000000000}, "merges": []}})"),
            "t.json: model.vocab: 'a': token id 2000000000 is out of range: ids must lie in [0, 16777216) (the largest "
            "vocabularies in use have about 256K tokens)");
  EXPECT_EQ(tokenizer_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                                "added_tokens": [{"id": 2000000000, "content": "x"}]})"),
            "t.json: added_tokens: 'x': token id 2000000000 is out of range: ids must lie in [0, 16777216) (the "
            "largest vocabularies in use have about 256K tokens)");
  // The largest allowed id still loads.
  EXPECT_EQ(Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                                     "added_tokens": [{"id": 16777215, "content": "x"}]})")
                .vocab_size(),
            16777216u);
}

// fuzz_tokenizer_json: a post-processor id that is no token made encode(text, true) return ids at or past
// vocab_size() (the token cache refuses them only when read back); 4294967296 silently became id 0.
TEST(FuzzRegressionTokenizer, PostProcessorIdsMustBeTokens) {
  const std::string model = R"("model": {"type": "BPE", "vocab": {"a": 0, "<s>": 1}, "merges": []})";
  EXPECT_EQ(tokenizer_error("{" + model + R"(, "post_processor": {"type": "RobertaProcessing",
                                                "cls": ["<s>", 99], "sep": ["<s>", 1]}})"),
            "t.json: post_processor: token id 99 is neither in model.vocab nor in added_tokens");
  EXPECT_THAT(tokenizer_error("{" + model + R"(, "post_processor": {"type": "RobertaProcessing",
                                                 "cls": ["<s>", 4294967296], "sep": ["<s>", 1]}})"),
              HasSubstr("t.json: post_processor RobertaProcessing: \"cls\": token id 4294967296 is out of range"));
  const Tokenizer ok = Tokenizer::from_json("{" + model + R"(, "post_processor": {"type": "RobertaProcessing",
                                                               "cls": ["<s>", 1], "sep": ["<s>", 1]}})");
  EXPECT_EQ(ok.encode("a", true), (std::vector<TokenId>{1, 0, 1}));
}
