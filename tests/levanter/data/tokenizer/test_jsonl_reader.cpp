// The JSONL line reader (src/levanter/data/jsonl_reader.h) and the atomic text writer: plain, gzip and zstd,
// CRLF, a missing final newline, long lines, and errors that name the file and the line.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "levanter/data/text_writer.h"
#include "levanter/temp_dir.h"
#include "test_util.h"

namespace levanter::data {
namespace {

namespace fs = std::filesystem;

class JsonlReaderTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = levanter::testing::fresh_test_dir("levanter_jsonl_test"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write_raw(const std::string& name, const std::string& data) const {
    std::ofstream(path(name), std::ios::binary) << data;
  }
  std::vector<std::string> lines(const std::string& name) const {
    std::vector<std::string> out;
    auto r = open_lines(path(name));
    std::string_view l;
    while (r->next(l)) {
      out.push_back(std::string(l));
      EXPECT_EQ(r->line_number(), out.size());
    }
    return out;
  }
  fs::path dir_;
};

TEST_F(JsonlReaderTest, PlainGzipAndZstdReadTheSame) {
  std::string big(3 << 20, 'x');  // a line longer than the reader's buffer
  std::string content = "{\"text\":\"a\"}\r\n\n  \n{\"text\":\"" + big + "\"}\nlast line without newline";
  for (const std::string name : {"in.jsonl", "in.jsonl.gz", "in.jsonl.zst"}) {
    auto w = open_text_writer(path(name));
    w->write(content.substr(0, 10));
    w->write(content.substr(10));
    w->commit();
    auto got = lines(name);
    ASSERT_EQ(got.size(), 5u) << name;
    EXPECT_EQ(got[0], "{\"text\":\"a\"}");  // \r dropped
    EXPECT_EQ(got[1], "");
    EXPECT_EQ(got[3].size(), big.size() + 11);
    EXPECT_EQ(got[4], "last line without newline");
  }
  // The format is recognised by its magic bytes, whatever the name says.
  fs::rename(path("in.jsonl.gz"), path("renamed.txt"));
  EXPECT_EQ(lines("renamed.txt").size(), 5u);
}

TEST_F(JsonlReaderTest, MultiMemberGzip) {
  {
    auto a = open_text_writer(path("a.gz"));
    a->write("one\n");
    a->commit();
    auto b = open_text_writer(path("b.gz"));
    b->write("two\nthree\n");
    b->commit();
  }
  std::ifstream a(path("a.gz"), std::ios::binary), b(path("b.gz"), std::ios::binary);
  std::string both =
      std::string(std::istreambuf_iterator<char>(a), {}) + std::string(std::istreambuf_iterator<char>(b), {});
  write_raw("both.gz", both);
  EXPECT_EQ(lines("both.gz"), (std::vector<std::string>{"one", "two", "three"}));
}

TEST_F(JsonlReaderTest, CorruptAndTruncatedStreamsAreErrors) {
  auto w = open_text_writer(path("ok.gz"));
  std::string data;
  for (int i = 0; i < 20000; ++i) data += "{\"text\": \"line " + std::to_string(i * 7919 % 10007) + "\"}\n";
  w->write(data);
  w->commit();
  std::ifstream in(path("ok.gz"), std::ios::binary);
  std::string gz(std::istreambuf_iterator<char>(in), {});
  write_raw("truncated.gz", gz.substr(0, gz.size() / 2));
  EXPECT_THROW(lines("truncated.gz"), DataError);
  std::string corrupt = gz;
  for (std::size_t i = 20; i < 60; ++i) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x55);
  write_raw("corrupt.gz", corrupt);
  try {
    lines("corrupt.gz");
    FAIL();
  } catch (const DataSourceError& e) {
    EXPECT_EQ(e.source(), path("corrupt.gz"));
  }
  try {
    open_lines(path("missing.jsonl"));
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.jsonl: cannot open"), std::string::npos) << e.what();
  }
}

TEST_F(JsonlReaderTest, TextRecordsAndErrors) {
  write_raw("docs.jsonl", "{\"text\": \"a\", \"id\": 1}\n\n{\"body\": \"b\", \"text\": \"\\u00e9\\ud83d\\ude00\"}\n");
  JsonlTextReader r(open_lines(path("docs.jsonl")));
  TextRecord rec;
  ASSERT_TRUE(r.next(rec));
  EXPECT_EQ(rec.text, "a");
  EXPECT_EQ(rec.line, 1u);
  ASSERT_TRUE(r.next(rec));
  EXPECT_EQ(rec.text, "\u00e9\U0001F600");
  EXPECT_EQ(rec.line, 3u);
  EXPECT_FALSE(r.next(rec));

  auto error_of = [](const std::string& line) {
    try {
      jsonl_text_field(line, "text", "f.jsonl", 7);
    } catch (const DataSourceError& e) {
      EXPECT_EQ(e.line(), 7u);
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(error_of("{\"text\": ").find("f.jsonl:7: malformed JSON"), std::string::npos);
  EXPECT_NE(error_of("[1, 2]").find("f.jsonl:7: expected a JSON object"), std::string::npos);
  EXPECT_NE(error_of("{\"txt\": \"x\"}").find("f.jsonl:7: no field \"text\""), std::string::npos);
  EXPECT_NE(error_of("{\"text\": 3}").find("f.jsonl:7: field \"text\" is number"), std::string::npos);
  EXPECT_NE(error_of("{\"text\": \"a\xFF\"}").find("f.jsonl:7: invalid UTF-8 (byte 0xFF at column 12)"),
            std::string::npos);
  EXPECT_NE(error_of("{\"text\": \"\\ud800\"}").find("f.jsonl:7: malformed JSON"),
            std::string::npos);  // lone surrogate
}

TEST_F(JsonlReaderTest, WriterIsAtomic) {
  {
    auto w = open_text_writer(path("out.jsonl"));
    w->write("partial\n");
    // destroyed without commit()
  }
  EXPECT_FALSE(fs::exists(path("out.jsonl")));
  EXPECT_TRUE(fs::is_empty(dir_));  // no temporary file left behind
  auto w = open_text_writer(path("out.jsonl"));
  w->write("done\n");
  EXPECT_FALSE(fs::exists(path("out.jsonl")));
  w->commit();
  EXPECT_EQ(lines("out.jsonl"), std::vector<std::string>{"done"});
  EXPECT_THROW(open_text_writer(path("no/such/dir/out.jsonl")), DataError);
}

}  // namespace
}  // namespace levanter::data
