// `levanter tokenize`, run as a user would: the built binary on bundled data, through a shell.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "levanter/data/text_writer.h"
#include "levanter/temp_dir.h"
#include "test_util.h"

namespace levanter::data {
namespace {

namespace fs = std::filesystem;
using testing::read_file;
using testing::read_jsonl;
using testing::source_path;

class TokenizeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    binary_ = std::string(LEVANTER_BINARY_DIR) + "/levanter";
    if (!fs::exists(binary_)) GTEST_SKIP() << binary_ << " is not built";
    dir_ = levanter::testing::fresh_test_dir("levanter_tokenize_cli");
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // Runs `levanter tokenize ARGS`; returns the exit code, stderr in err_.
  int run(const std::string& args) {
    std::string cmd = binary_ + " tokenize " + args + " 2> " + path("stderr.txt");
    int rc = std::system(cmd.c_str());
    err_ = read_file(path("stderr.txt"));
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  }
  void write(const std::string& name, const std::string& data) const {
    std::ofstream(path(name), std::ios::binary) << data;
  }
  std::string binary_, err_;
  fs::path dir_;
};

TEST_F(TokenizeCli, MatchesReferenceIdsWithEveryCompressionAndThreadCount) {
  const std::string in = source_path("tests/data/kjv/validation.jsonl.gz");
  auto refs = read_jsonl(source_path("tests/data/kjv/validation.ids.jsonl.gz"));
  ASSERT_EQ(run(in + " " + path("out.jsonl.gz") + " --threads 2"), 0) << err_;
  EXPECT_NE(err_.find("tokenize: 62 documents, 54051 tokens"), std::string::npos) << err_;
  EXPECT_EQ(read_jsonl(path("out.jsonl.gz")), refs);
  ASSERT_EQ(run(in + " " + path("out1.jsonl") + " --threads 1 --tokenizer " + source_path("data/gpt2/tokenizer.json")),
            0)
      << err_;
  EXPECT_EQ(read_jsonl(path("out1.jsonl")), refs);
  ASSERT_EQ(run(in + " " + path("out.jsonl.zst")), 0) << err_;
  EXPECT_EQ(read_jsonl(path("out.jsonl.zst")), refs);
  // stdin and stdout
  std::string cmd =
      "gzip -dc " + in + " | " + binary_ + " tokenize - - --threads 2 > " + path("piped.jsonl") + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(read_file(path("piped.jsonl")), read_file(path("out1.jsonl")));
}

TEST_F(TokenizeCli, TextKeyBosEos) {
  write("in.jsonl", "{\"body\": \"Hello world\"}\n");
  ASSERT_EQ(run(path("in.jsonl") + " " + path("out.jsonl") + " --text-key body --bos --eos"), 0) << err_;
  EXPECT_EQ(read_file(path("out.jsonl")), "{\"ids\":[50256,15496,995,50256]}\n");
}

TEST_F(TokenizeCli, BadInputNamesFileAndLine) {
  const std::string out = path("out.jsonl");
  write("bad_json.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
  EXPECT_EQ(run(path("bad_json.jsonl") + " " + out), 1);
  EXPECT_NE(err_.find(path("bad_json.jsonl") + ":2: malformed JSON"), std::string::npos) << err_;
  EXPECT_FALSE(fs::exists(out));  // nothing half-written

  write("no_key.jsonl", "\n{\"text\": \"ok\"}\n{\"txt\": \"x\"}\n");
  EXPECT_EQ(run(path("no_key.jsonl") + " " + out), 1);
  EXPECT_NE(err_.find(path("no_key.jsonl") + ":3: no field \"text\""), std::string::npos) << err_;

  write("utf8.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"caf\xE9\"}\n");
  EXPECT_EQ(run(path("utf8.jsonl") + " " + out), 1);
  EXPECT_NE(err_.find(path("utf8.jsonl") + ":2: invalid UTF-8"), std::string::npos) << err_;

  write("empty.jsonl", "");
  EXPECT_EQ(run(path("empty.jsonl") + " " + out), 1);
  EXPECT_NE(err_.find(path("empty.jsonl") + ": no documents"), std::string::npos) << err_;

  EXPECT_EQ(run(path("missing.jsonl") + " " + out), 1);
  EXPECT_NE(err_.find(path("missing.jsonl") + ": cannot open"), std::string::npos) << err_;

  EXPECT_EQ(run(path("utf8.jsonl") + " " + out + " --tokenizer " + path("missing.json")), 1);
  EXPECT_NE(err_.find(path("missing.json") + ": cannot open the tokenizer file"), std::string::npos) << err_;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(TokenizeCli, SkipBadLines) {
  write("mixed.jsonl", "{\"text\": \"Hello\"}\nnot json\n{\"txt\": 1}\n{\"text\": \" world\"}\n");
  ASSERT_EQ(run(path("mixed.jsonl") + " " + path("out.jsonl") + " --skip-bad-lines"), 0) << err_;
  EXPECT_EQ(read_file(path("out.jsonl")), "{\"ids\":[15496]}\n{\"ids\":[995]}\n");
  EXPECT_NE(err_.find("skipped 2 bad lines (first: " + path("mixed.jsonl") + ":2: malformed JSON"), std::string::npos)
      << err_;
}

}  // namespace
}  // namespace levanter::data
