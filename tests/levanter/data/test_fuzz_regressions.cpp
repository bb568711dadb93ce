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
