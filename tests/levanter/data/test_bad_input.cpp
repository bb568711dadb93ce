// Bad input: each case fails with a message naming the file (and line), leaves no half-written shard, and
// with skip_bad_lines is skipped and counted instead.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "data_testing.h"
#include "levanter/data/text.h"

using namespace levanter::data;
using namespace levanter::data::testing;
using ::testing::HasSubstr;

namespace {

// Builds a cache of good.jsonl (3 documents) followed by `bad`; returns the build error ("" if none).
std::string build_error(const TempDir& t, const std::string& bad, bool skip = false) {
  write_text(t / "in/good.jsonl", jsonl(make_docs(0, 3)));
  CacheBuildOptions o;
  o.num_threads = 2;
  o.chunk_documents = 2;
  o.skip_bad_lines = skip;
  o.log_warnings = false;
  try {
    auto cache = build_or_load_cache(t / "cache", {t / "in/good.jsonl", bad}, byte_encoder(), o);
    cache->builder()->wait();
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

// The failing shard (1) is gone entirely; the cache is not marked complete.
void expect_no_half_written_shard(const TempDir& t) {
  EXPECT_FALSE(fs::exists(shard_dir(t / "cache", 1))) << "the failing shard must be removed";
  EXPECT_FALSE(read_manifest(t / "cache")->finished);
  for (const auto& e : fs::recursive_directory_iterator(t / "cache")) {
    EXPECT_FALSE(levanter::runtime::is_temporary_name(e.path().filename().string())) << e.path();
  }
}

std::string lines(std::initializer_list<std::string> ls) {
  std::string out;
  for (const auto& l : ls) out += l + "\n";
  return out;
}

}  // namespace

TEST(BadInput, MalformedJsonNamesFileAndLine) {
  TempDir t;
  write_text(t / "in/bad.jsonl",
             lines({R"({"text": "ok"})", R"({"text": "ok too"})", R"({"text": "broken)", R"({"text": "x"})"}));
  std::string m = build_error(t, t / "in/bad.jsonl");
  EXPECT_THAT(m, HasSubstr(t / "in/bad.jsonl:3: malformed JSON"));
  EXPECT_THAT(m, HasSubstr("data.skip_bad_lines"));
  expect_no_half_written_shard(t);
}

TEST(BadInput, MissingTextKeyNamesTheKeysThereAre) {
  TempDir t;
  write_gz(t / "in/bad.jsonl.gz", lines({R"({"text": "ok"})", R"({"content": "no text here", "id": 7})"}));
  std::string m = build_error(t, t / "in/bad.jsonl.gz");
  EXPECT_THAT(m, HasSubstr(t / "in/bad.jsonl.gz:2: no field \"text\" (fields: content, id)"));
  EXPECT_THAT(m, HasSubstr("data.text_key"));
  expect_no_half_written_shard(t);
}

TEST(BadInput, NonStringTextAndNonObjectLines) {
  TempDir t;
  write_text(t / "in/bad.jsonl", lines({R"({"text": 12})"}));
  EXPECT_THAT(build_error(t, t / "in/bad.jsonl"), HasSubstr("bad.jsonl:1: field \"text\" is number, not a string"));
  TempDir u;
  write_text(u / "in/bad.jsonl", lines({R"(["text"])"}));
  EXPECT_THAT(build_error(u, u / "in/bad.jsonl"), HasSubstr("bad.jsonl:1: expected a JSON object"));
}

TEST(BadInput, InvalidUtf8InJsonAndText) {
  TempDir t;
  write_text(t / "in/bad.jsonl",
             lines({R"({"text": "ok"})", R"({"text": "ok"})", R"({"text": "ok"})", "{\"text\": \"caf\xe9\"}"}));
  std::string m = build_error(t, t / "in/bad.jsonl");
  EXPECT_THAT(m, HasSubstr(t / "in/bad.jsonl:4: invalid UTF-8 (byte 0xE9 at column 14)"));
  expect_no_half_written_shard(t);
  TempDir u;
  write_text(u / "in/bad.txt", "text with a bad byte \xff here");
  EXPECT_THAT(build_error(u, u / "in/bad.txt"),
              HasSubstr(u / "in/bad.txt:1: invalid UTF-8 (byte 0xFF at offset 22 of the file)"));
  expect_no_half_written_shard(u);
}

TEST(BadInput, EmptyFile) {
  TempDir t;
  write_text(t / "in/empty.jsonl", "");
  EXPECT_THAT(build_error(t, t / "in/empty.jsonl"), HasSubstr(t / "in/empty.jsonl: empty file (no documents)"));
  expect_no_half_written_shard(t);
  TempDir u;
  write_gz(u / "in/blank.jsonl.gz", "\n\n  \n");
  EXPECT_THAT(build_error(u, u / "in/blank.jsonl.gz"), HasSubstr("blank.jsonl.gz: empty file"));
  // Skipping makes it an empty shard.
  TempDir v;
  write_text(v / "in/empty.jsonl", "");
  EXPECT_EQ(build_error(v, v / "in/empty.jsonl", true), "");
}

TEST(BadInput, UnreadablePaths) {
  TempDir t;
  fs::create_directories(t / "in/dir.jsonl");
  try {
    build_or_load_cache(t / "cache", {t / "in/dir.jsonl"}, byte_encoder());
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(t / "in/dir.jsonl: is a directory"));
  }
  try {
    build_or_load_cache(t / "cache", {t / "in/missing.jsonl"}, byte_encoder());
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(t / "in/missing.jsonl: cannot read"));
  }
  EXPECT_FALSE(fs::exists(t / "cache")) << "nothing is written before the inputs are checked";
  if (::geteuid() != 0) {  // root reads anything
    write_text(t / "in/locked.jsonl", jsonl({"x"}));
    ::chmod((t / "in/locked.jsonl").c_str(), 0);
    try {
      build_or_load_cache(t / "cache2", {t / "in/locked.jsonl"}, byte_encoder());
      FAIL();
    } catch (const DataError& e) {
      EXPECT_THAT(e.what(), HasSubstr("locked.jsonl: cannot read"));
    }
  }
  write_text(t / "in/data.parquet", "PAR1");
  EXPECT_THAT(build_error(t, t / "in/data.parquet"), HasSubstr("data.parquet: unknown input format"));
  write_text(t / "in/trunc.jsonl.gz", "\x1f\x8b\x08\x00garbage");
  EXPECT_THAT(build_error(t, t / "in/trunc.jsonl.gz"), HasSubstr("trunc.jsonl.gz: "));
}

TEST(BadInput, GlobMatchingNothingNamesTheConfigKeyAndPattern) {
  TempDir t;
  DataConfig cfg;
  cfg.train_urls = {t / "corpus/*.jsonl.gz"};
  cfg.cache_dir = t / "cache";
  TextData data(cfg, byte_encoder());
  try {
    data.cache("", Split::kTrain);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("data.train_urls: " + t / "corpus/*.jsonl.gz: the pattern matches no files"));
  }
  try {
    data.cache("", Split::kValidation);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("data.validation_urls: no files configured"));
  }
}

TEST(BadInput, SkipBadLinesCountsThemAndKeepsTheRest) {
  TempDir t;
  write_text(t / "in/bad.jsonl", lines({R"({"text": "a"})", "{oops", R"({"text": "b"})", R"({"other": 1})",
                                        "{\"text\": \"\xff\"}", R"({"text": "c"})"}));
  EXPECT_EQ(build_error(t, t / "in/bad.jsonl", true), "");
  auto m = read_manifest(t / "cache");
  ASSERT_TRUE(m && m->finished);
  EXPECT_EQ(m->bad_lines, 3);
  EXPECT_EQ(m->rows, 3 + 3);
  EXPECT_EQ(read_ledger(t / "cache", 1)->bad_lines, 3);
  auto cache = TokenCache::open(t / "cache");
  auto [b, e] = cache->document(4);  // the second good line of bad.jsonl
  std::vector<int32_t> doc(static_cast<size_t>(e - b));
  cache->read_tokens(b, e - b, doc.data());
  EXPECT_EQ(doc, (std::vector<int32_t>{'b', kByteEos}));
}

TEST(BadInput, FixingTheFileAndRerunningSucceedsWithoutRebuild) {
  TempDir t;
  write_text(t / "in/bad.jsonl", lines({R"({"text": "a"})", "{oops"}));
  EXPECT_NE(build_error(t, t / "in/bad.jsonl"), "");
  write_text(t / "in/bad.jsonl", lines({R"({"text": "a"})", R"({"text": "fixed"})"}));
  EXPECT_EQ(build_error(t, t / "in/bad.jsonl"), "");
  EXPECT_EQ(read_manifest(t / "cache")->rows, 5);
}

namespace {

// A .jsonl.zst whose second line is `line_bytes` long (a JSON string of 'a's): a few hundred KB on disk.
void write_zst_with_long_line(const std::string& path, std::size_t line_bytes) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  std::string out, chunk(1 << 20, 'a');
  std::vector<char> buf(ZSTD_CStreamOutSize());
  auto feed = [&](const std::string& data, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    size_t left;
    do {
      ZSTD_outBuffer o{buf.data(), buf.size(), 0};
      left = ZSTD_compressStream2(cctx, &o, &in, mode);
      ASSERT_FALSE(ZSTD_isError(left));
      out.append(buf.data(), o.pos);
    } while (mode == ZSTD_e_end ? left != 0 : in.pos < in.size);
  };
  feed("{\"text\": \"short\"}\n{\"text\": \"", ZSTD_e_continue);
  for (std::size_t done = 0; done < line_bytes; done += chunk.size()) feed(chunk, ZSTD_e_continue);
  feed("\"}\n", ZSTD_e_end);
  ZSTD_freeCCtx(cctx);
  write_text(path, out);
}

// The error of building a cache of `file` alone with `max_document_bytes` ("" if none).
std::string single_file_build_error(const TempDir& t, const std::string& file, int64_t max_document_bytes) {
  CacheBuildOptions o;
  o.num_threads = 1;
  o.log_warnings = false;
  o.max_document_bytes = max_document_bytes;
  try {
    build_or_load_cache(t / "cache", {file}, byte_encoder(), o)->builder()->wait();
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(BadInput, ADocumentLongerThanTheLimitIsAnErrorNotUnboundedMemory) {
  // Before: a 94 KB .zst expanding to one 3 GB line took 7.4 GB of memory before failing. Here 1 GB against the
  // default limit of 64 MiB: refused after reading a little past the limit, naming file, line and setting.
  TempDir t;
  write_zst_with_long_line(t / "in/long.jsonl.zst", std::size_t{1} << 30);
  EXPECT_LT(fs::file_size(t / "in/long.jsonl.zst"), 1u << 20);
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  const std::string error = single_file_build_error(t, t / "in/long.jsonl.zst", CacheBuildOptions{}.max_document_bytes);
  EXPECT_THAT(error, HasSubstr(t / "in/long.jsonl.zst" + ":2: a line longer than 67108864 bytes (64 MiB)"));
  EXPECT_THAT(error, HasSubstr("(data.cache_options.max_document_bytes)"));
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 512 * 1024) << "KB of peak memory added";

  // The limit is a setting: 2 MiB refuses a 3 MiB line.
  TempDir t2;
  write_zst_with_long_line(t2 / "in/long.jsonl.zst", std::size_t{3} << 20);
  EXPECT_THAT(single_file_build_error(t2, t2 / "in/long.jsonl.zst", 2 << 20),
              HasSubstr(":2: a line longer than 2097152 bytes (2 MiB)"));
}

TEST(BadInput, AWholeTextFileLongerThanTheLimitIsAnError) {
  TempDir t;
  write_text(t / "in/big.txt", std::string(3 << 20, 'b'));
  EXPECT_THAT(single_file_build_error(t, t / "in/big.txt", 1 << 20),
              HasSubstr(t / "in/big.txt" + ": the document (a whole .txt file) is longer than 1048576 bytes"));
}
