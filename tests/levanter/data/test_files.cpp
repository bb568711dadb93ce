#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "data_testing.h"
#include "levanter/data/documents.h"
#include "levanter/data/files.h"

using namespace levanter::data;
using namespace levanter::data::testing;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(DataFiles, BraceExpansionKeepsWrittenOrderRangesAndPadding) {
  EXPECT_THAT(expand_braces("a{b,c}d"), ElementsAre("abd", "acd"));
  EXPECT_THAT(expand_braces("{kjv,austen}/*.gz"), ElementsAre("kjv/*.gz", "austen/*.gz"));
  EXPECT_THAT(expand_braces("s.{1..3}-of-3"), ElementsAre("s.1-of-3", "s.2-of-3", "s.3-of-3"));
  EXPECT_THAT(expand_braces("{08..10}"), ElementsAre("08", "09", "10"));
  EXPECT_THAT(expand_braces("{a,b{1,2}}x"), ElementsAre("ax", "b1x", "b2x"));
  EXPECT_THAT(expand_braces("plain"), ElementsAre("plain"));
  EXPECT_THROW(expand_braces("a{b,c"), DataError);
}

TEST(DataFiles, GlobsAreSortedAndRecursive) {
  TempDir t;
  for (const char* f : {"b/2.jsonl", "b/10.jsonl", "a/x.jsonl", "a/deep/er/y.jsonl", "a/.hidden.jsonl", "a/z.txt"}) {
    write_text(t / f, "{}");
  }
  EXPECT_THAT(expand_urls({t / "b/*.jsonl"}), ElementsAre(t / "b/10.jsonl", t / "b/2.jsonl"));
  EXPECT_THAT(expand_urls({t / "{b,a}/?.jsonl"}), ElementsAre(t / "b/2.jsonl", t / "a/x.jsonl"));
  EXPECT_THAT(expand_urls({t / "a/**/*.jsonl"}), ElementsAre(t / "a/deep/er/y.jsonl", t / "a/x.jsonl"));
  // A file matched by two patterns is kept once, at its first position.
  EXPECT_THAT(expand_urls({t / "a/x.jsonl", t / "a/*"}), ElementsAre(t / "a/x.jsonl", t / "a/z.txt"));
  EXPECT_THAT(expand_urls({"file://" + t / "b/2.jsonl"}), ElementsAre(t / "b/2.jsonl"));
}

TEST(DataFiles, NoMatchAndUnknownSchemeAreErrorsNamingThePattern) {
  TempDir t;
  try {
    expand_urls({t / "nothing/*.jsonl.gz"});
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(t / "nothing/*.jsonl.gz"));
    EXPECT_THAT(e.what(), HasSubstr("matches no files"));
  }
  try {
    expand_urls({t / "missing.jsonl"});
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("missing.jsonl: no such file"));
  }
  try {
    expand_urls({"gs://bucket/train.jsonl"});
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("no store for 'gs://'"));
  }
}

TEST(DataFiles, AtomicWriteReplacesWholeFile) {
  TempDir t;
  write_file_atomic(t / "f.json", "one");
  write_file_atomic(t / "f.json", "two");
  EXPECT_EQ(read_file(t / "f.json"), "two");
  auto snap = snapshot(t.str());
  EXPECT_EQ(snap.size(), 1u);  // no temporary left behind
}

TEST(DataFiles, ContentHashIsStreamingAndSensitive) {
  ContentHash a, b;
  a.update("hello world, this is a test", 27);
  b.update("hello w", 7);
  b.update("orld, this is a", 15);
  b.update(" test", 5);
  EXPECT_EQ(a.digest(), b.digest());
  ContentHash c;
  c.update("hello world, this is a tesT", 27);
  EXPECT_NE(a.digest(), c.digest());
}

TEST(DataDocuments, ReadsJsonlGzZstAndText) {
  TempDir t;
  std::vector<std::string> docs = {"first \xc3\xa9", "second\nline", ""};
  write_text(t / "a.jsonl", jsonl(docs) + "\n  \n");  // trailing blank lines are skipped
  write_gz(t / "b.jsonl.gz", jsonl(docs));
  write_text(t / "c.txt", "a whole file\nis one document\n");
  for (const char* name : {"a.jsonl", "b.jsonl.gz"}) {
    RecordReader r(t / name);
    Record rec;
    std::vector<std::string> got;
    while (r.next(rec)) {
      if (auto text = document_text(rec, r.path(), r.format(), "text")) got.push_back(*text);
    }
    EXPECT_EQ(got, docs) << name;
  }
  RecordReader r(t / "c.txt");
  Record rec;
  ASSERT_TRUE(r.next(rec));
  EXPECT_EQ(*document_text(rec, r.path(), r.format(), "text"), "a whole file\nis one document\n");
  EXPECT_FALSE(r.next(rec));
  EXPECT_THROW(detect_format(t / "x.parquet"), DataError);
}

TEST(DataDocuments, ZstdInput) {
  TempDir t;
  std::vector<std::string> docs = make_docs(1, 20);
  write_text(t / "plain.jsonl", jsonl(docs));
  std::string cmd = "zstd -q " + t / "plain.jsonl" + " -o " + t / "d.jsonl.zst";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "no zstd command to make the test file";
  RecordReader r(t / "d.jsonl.zst");
  Record rec;
  std::vector<std::string> got;
  while (r.next(rec)) got.push_back(*document_text(rec, r.path(), r.format(), "text"));
  EXPECT_EQ(got, docs);
}

TEST(DataDocuments, Utf8Validation) {
  size_t bad = 0;
  EXPECT_TRUE(valid_utf8("plain \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(valid_utf8("ab\xff", &bad));
  EXPECT_EQ(bad, 2u);
  EXPECT_FALSE(valid_utf8("\xc0\xaf", &bad));      // overlong
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80", &bad));  // surrogate
  EXPECT_FALSE(valid_utf8("\xe2\x82", &bad));      // truncated
}
