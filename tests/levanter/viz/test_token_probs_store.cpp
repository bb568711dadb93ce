// <run dir>/token_probs.jsonl: the exact line format, appending across writers, the resume rule, a half-written
// last line, a corrupt line, and how byte-level BPE tokens that split UTF-8 characters are shown.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "../temp_dir.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/viz/token_probs.h"

using levanter::data::Tokenizer;
using levanter::testing::TempDir;
using namespace levanter::viz;

namespace {

const Tokenizer& gpt2() {
  static const Tokenizer tok = Tokenizer::from_file(std::string(LEVANTER_SOURCE_DIR) + "/data/gpt2/tokenizer.json");
  return tok;
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<int32_t> encode(const std::string& text) {
  auto ids = gpt2().encode(text);
  return {ids.begin(), ids.end()};
}

// Scores whose values say which step wrote them.
std::vector<DocScores> scores_of(int64_t step, size_t n_tokens) {
  DocScores s;
  s.loss = 1.0 + static_cast<double>(step) / 1000.0;
  for (size_t j = 1; j < n_tokens; ++j) {
    s.p.push_back(static_cast<float>(j) / static_cast<float>(n_tokens) + static_cast<float>(step) * 1e-4f);
    s.rank.push_back(static_cast<int64_t>(j));
    s.top.push_back({{262, 0.5f}, {11, 0.25f}});
  }
  return {s};
}

}  // namespace

TEST(TokenProbsStore, LinesHaveTheDocumentedFormat) {
  TempDir dir;
  const std::string path = dir / kTokenProbsFile;
  const std::vector<int32_t> ids = encode("Hello world");
  ASSERT_EQ(ids, (std::vector<int32_t>{15496, 995}));
  {
    TokenProbsWriter w(path, docs_record("validation", 2, {{7, ids}}, gpt2()));
    EXPECT_FALSE(w.existed());
    DocScores s;
    s.loss = 2.302585092994046;  // printed at float32 precision
    s.p = {0.1f};
    s.rank = {3};
    s.top = {{{262, 0.5f}, {11, 0.25f}}};
    w.append(step_record(100, {s}, gpt2()));
    w.resume_at(100);
  }
  EXPECT_EQ(
      read(path),
      "{\"kind\":\"docs\",\"format\":1,\"source\":\"validation\",\"top_k\":2,\"docs\":[{\"index\":7,\"tokens\":"
      "[15496,995],\"pieces\":[\"Hello\",\" world\"],\"partial\":[]}]}\n"
      "{\"kind\":\"step\",\"step\":100,\"docs\":[{\"loss\":2.3025851,\"p\":[0.1],\"rank\":[3],\"top\":[[[\" the\","
      "0.5],[\",\",0.25]]]}]}\n"
      "{\"kind\":\"resume\",\"step\":100}\n");
}

TEST(TokenProbsStore, AppendsAcrossWritersAndReadsPageData) {
  TempDir dir;
  const std::string path = dir / kTokenProbsFile;
  const std::vector<int32_t> ids = encode("It is a truth universally acknowledged");
  for (int64_t step : {0, 10}) {
    TokenProbsWriter w(path, docs_record("val", 2, {{3, ids}}, gpt2()));
    EXPECT_EQ(w.existed(), step != 0);
    w.append(step_record(step, scores_of(step, ids.size()), gpt2()));
  }
  std::string text = read(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3);
  EXPECT_EQ(text.find("\"kind\":\"docs\""), text.rfind("\"kind\":\"docs\"")) << "one docs line";
  nlohmann::json page = read_page_data(path, "my run");
  EXPECT_EQ(page["title"], "my run");
  EXPECT_EQ(page["source"], "val");
  EXPECT_EQ(page["top_k"], 2);
  EXPECT_TRUE(page["compare"].is_null());
  ASSERT_EQ(page["docs"].size(), 1u);
  EXPECT_EQ(page["docs"][0]["name"], "val #3");
  EXPECT_EQ(page["docs"][0]["tokens"].get<std::vector<int32_t>>(), ids);
  EXPECT_EQ(page["docs"][0]["pieces"][1], " is");
  ASSERT_EQ(page["series"].size(), 2u);
  EXPECT_EQ(page["series"][0]["label"], "step 0");
  EXPECT_EQ(page["series"][1]["step"], 10);
  const auto& d = page["series"][1]["docs"][0];
  EXPECT_FLOAT_EQ(d["loss"].get<float>(), 1.01f);
  ASSERT_EQ(d["p"].size(), ids.size() - 1);
  EXPECT_FLOAT_EQ(d["p"][0].get<float>(), 1.0f / static_cast<float>(ids.size()) + 10 * 1e-4f);
  EXPECT_EQ(d["top"][0][0][0], " the");
}

TEST(TokenProbsStore, ResumeDropsTheStepsWrittenAgain) {
  TempDir dir;
  const std::string path = dir / kTokenProbsFile;
  const std::vector<int32_t> ids = encode("one two three four");
  {
    TokenProbsWriter w(path, docs_record("", 2, {{0, ids}}, gpt2()));
    for (int64_t step : {0, 10, 20, 30}) w.append(step_record(step, scores_of(step, ids.size()), gpt2()));
  }
  {
    // Resumed from the checkpoint of step 10: steps 10 on are written again, with other values (a different run).
    TokenProbsWriter w(path, docs_record("", 2, {{0, ids}}, gpt2()));
    w.resume_at(10);
    w.append(step_record(10, scores_of(1010, ids.size()), gpt2()));
  }
  {
    TokenProbsWriter w(path, docs_record("", 2, {{0, ids}}, gpt2()));
    EXPECT_TRUE(w.has_step(0));
    EXPECT_TRUE(w.has_step(10));
    EXPECT_FALSE(w.has_step(20)) << "dropped by the resume line";
    EXPECT_FALSE(w.has_step(5));
  }
  nlohmann::json page = read_page_data(path);
  ASSERT_EQ(page["series"].size(), 2u) << page["series"].dump();
  EXPECT_EQ(page["series"][0]["step"], 0);
  EXPECT_EQ(page["series"][1]["step"], 10);
  EXPECT_FLOAT_EQ(page["series"][1]["docs"][0]["loss"].get<float>(), 2.01f) << "the value written after resuming";
  EXPECT_EQ(page["docs"][0]["name"], "document #0");
}

TEST(TokenProbsStore, HalfWrittenLastLineIsIgnoredThenCutByTheNextWriter) {
  TempDir dir;
  const std::string path = dir / kTokenProbsFile;
  const std::vector<int32_t> ids = encode("one two three");
  {
    TokenProbsWriter w(path, docs_record("", 2, {{0, ids}}, gpt2()));
    w.append(step_record(0, scores_of(0, ids.size()), gpt2()));
  }
  const std::string whole = read(path);
  std::ofstream(path, std::ios::app) << "{\"kind\":\"step\",\"step\":5,\"docs\":[{\"loss\":1.";
  nlohmann::json page = read_page_data(path);
  EXPECT_EQ(page["series"].size(), 1u);
  {
    TokenProbsWriter w(path, docs_record("", 2, {{0, ids}}, gpt2()));
    EXPECT_TRUE(w.existed());
    EXPECT_EQ(read(path), whole) << "the unfinished line is cut, nothing else changes";
    w.append(step_record(5, scores_of(5, ids.size()), gpt2()));
  }
  EXPECT_EQ(read_page_data(path)["series"].size(), 2u);
}

TEST(TokenProbsStore, CorruptLineIsAnErrorNamingFileAndLine) {
  TempDir dir;
  const std::string path = dir / kTokenProbsFile;
  const std::vector<int32_t> ids = encode("one two three");
  {
    TokenProbsWriter w(path, docs_record("", 2, {{0, ids}}, gpt2()));
    w.append(step_record(0, scores_of(0, ids.size()), gpt2()));
  }
  std::ofstream(path, std::ios::app) << "{\"kind\":\"step\",\"step\":5,\"do\n";
  {
    TokenProbsWriter w(path, docs_record("", 2, {{0, ids}}, gpt2()));
    w.append(step_record(10, scores_of(10, ids.size()), gpt2()));
  }
  try {
    read_page_data(path);
    FAIL() << "a corrupt line was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":3:"), std::string::npos) << e.what();
  }
  std::ofstream(path, std::ios::trunc) << "{\"kind\":\"step\",\"step\":0,\"docs\":[]}\n";
  EXPECT_THROW(read_page_data(path), std::runtime_error);
  std::ofstream(path, std::ios::trunc) << "";
  EXPECT_THROW(read_page_data(path), std::runtime_error);
}

TEST(TokenProbsStore, Utf8CharactersSplitOverTokensShowInTheTokenCompletingThem) {
  const std::string text = "naïve café — ☃ 🙂 日本語";
  const std::vector<int32_t> ids = encode(text);
  Pieces p = display_pieces(gpt2(), ids);
  ASSERT_EQ(p.pieces.size(), ids.size());
  // Independently: the byte range of each token, and for each character the token holding its last byte.
  std::vector<size_t> token_end;
  size_t total = 0;
  for (int32_t id : ids) {
    const auto t = static_cast<levanter::data::TokenId>(id);
    total += gpt2().decode(&t, 1).size();
    token_end.push_back(total);
  }
  ASSERT_EQ(total, text.size());
  std::vector<std::string> expected(ids.size());
  for (size_t i = 0; i < text.size();) {
    const auto b = static_cast<unsigned char>(text[i]);
    const size_t n = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    const size_t last = i + n - 1;
    size_t t = 0;
    while (token_end[t] <= last) ++t;
    expected[t] += text.substr(i, n);
    i += n;
  }
  std::vector<int64_t> expected_partial;
  for (size_t t = 0; t < ids.size(); ++t) {
    if (expected[t].empty()) {
      expected_partial.push_back(static_cast<int64_t>(t));
      EXPECT_TRUE(std::regex_match(p.pieces[t], std::regex("(\\\\x[0-9A-F]{2})+"))) << t << ": " << p.pieces[t];
    } else {
      EXPECT_EQ(p.pieces[t], expected[t]) << "token " << t;
    }
  }
  EXPECT_EQ(p.partial, expected_partial);
  EXPECT_FALSE(p.partial.empty()) << "the text was meant to split a character over tokens";
  std::string joined;
  for (size_t t = 0; t < ids.size(); ++t) {
    if (!expected[t].empty()) joined += p.pieces[t];
  }
  EXPECT_EQ(joined, text);
  // The docs line holds them as valid JSON strings (nlohmann refuses invalid UTF-8).
  EXPECT_NO_THROW(docs_record("", 1, {{0, ids}}, gpt2()).dump());
  // Alone, a token with part of a character shows it as escapes.
  for (int64_t t : p.partial) {
    EXPECT_TRUE(std::regex_match(display_piece(gpt2(), ids[t]), std::regex("(\\\\x[0-9A-F]{2})+")));
  }
  // A document cut in the middle of a character keeps its bytes visible.
  std::vector<int32_t> cut(ids.begin(), ids.begin() + p.partial[0] + 1);
  Pieces pc = display_pieces(gpt2(), cut);
  EXPECT_EQ(pc.partial.back(), p.partial[0]);
}

TEST(TokenProbsStore, FloatsKeepFloat32PrecisionCompactly) {
  EXPECT_EQ(nlohmann::json(f32(0.1f)).dump(), "0.1");
  EXPECT_EQ(nlohmann::json(f32(1.0 / 3.0)).dump(), "0.33333334");
  EXPECT_EQ(static_cast<float>(f32(1.0 / 3.0)), 1.0f / 3.0f);
  EXPECT_EQ(nlohmann::json(f32(1e-30)).dump(), "1e-30");
}
