#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <thread>

#include "data_testing.h"
#include "levanter/data/cache/builder.h"
#include "levanter/data/cache/token_cache.h"

using namespace levanter::data;
using namespace levanter::data::testing;
using ::testing::HasSubstr;

namespace {

struct Corpus {
  std::vector<std::string> files;
  std::vector<std::string> docs;  // all documents, in cache order
};

// Three input files of different formats and sizes.
Corpus make_corpus(const TempDir& t, int docs_per_file = 40) {
  Corpus c;
  auto d0 = make_docs(0, docs_per_file), d1 = make_docs(1, docs_per_file / 2 + 3);
  write_gz(t / "in/a.jsonl.gz", jsonl(d0));
  write_text(t / "in/b.jsonl", jsonl(d1));
  write_text(t / "in/c.txt", "one document\nfrom a text file\n");
  c.files = {t / "in/a.jsonl.gz", t / "in/b.jsonl", t / "in/c.txt"};
  c.docs = d0;
  c.docs.insert(c.docs.end(), d1.begin(), d1.end());
  c.docs.push_back("one document\nfrom a text file\n");
  return c;
}

std::vector<int32_t> read_all(TokenCache& cache) {
  std::vector<int32_t> out(static_cast<size_t>(cache.total_tokens()));
  cache.read_tokens(0, static_cast<int64_t>(out.size()), out.data());
  return out;
}

CacheBuildOptions opts(int threads, int64_t chunk = 4) {
  CacheBuildOptions o;
  o.num_threads = threads;
  o.chunk_documents = chunk;
  o.log_warnings = false;
  return o;
}

}  // namespace

TEST(TokenCache, BuildsAndReadsBackDocumentsInFileOrder) {
  TempDir t;
  Corpus c = make_corpus(t);
  auto cache = build_or_load_cache(t / "cache", c.files, byte_encoder(), opts(2));
  ASSERT_NE(cache->builder(), nullptr);
  cache->builder()->wait();
  EXPECT_TRUE(cache->finished());
  EXPECT_EQ(read_all(*cache), expected_bytes_tokens(c.docs));
  EXPECT_EQ(cache->total_rows(), static_cast<int64_t>(c.docs.size()));
  // Document offsets: each document's range ends with EOS.
  int64_t pos = 0;
  for (size_t i = 0; i < c.docs.size(); ++i) {
    auto [b, e] = cache->document(static_cast<int64_t>(i));
    EXPECT_EQ(b, pos);
    EXPECT_EQ(e - b, static_cast<int64_t>(c.docs[i].size()) + 1);
    pos = e;
  }
  // The manifest has the totals; reopening needs no build.
  std::optional<CacheManifest> m = read_manifest(t / "cache");
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->finished);
  EXPECT_EQ(m->rows, static_cast<int64_t>(c.docs.size()));
  auto again = build_or_load_cache(t / "cache", c.files, byte_encoder(), opts(2));
  EXPECT_EQ(again->builder(), nullptr);
  EXPECT_EQ(read_all(*again), expected_bytes_tokens(c.docs));
  auto reader = TokenCache::open(t / "cache", byte_encoder().processing);
  EXPECT_EQ(read_all(*reader), expected_bytes_tokens(c.docs));
  std::vector<int32_t> buf(4);
  EXPECT_THROW(reader->read_tokens(reader->total_tokens() - 2, 4, buf.data()), std::out_of_range);
}

TEST(TokenCache, BytesDoNotDependOnThreadCount) {
  TempDir t;
  Corpus c = make_corpus(t);
  for (int threads : {1, 2, 3}) {
    auto cache = build_or_load_cache(t / ("cache" + std::to_string(threads)), c.files, byte_encoder(), opts(threads));
    cache->builder()->wait();
  }
  auto s1 = snapshot(t / "cache1");
  EXPECT_EQ(s1, snapshot(t / "cache2"));
  EXPECT_EQ(s1, snapshot(t / "cache3"));
  EXPECT_EQ(s1.count("00000/tokens.i32"), 1u);
  EXPECT_EQ(s1.count("00002/ledger.json"), 1u);
}

class KillResume : public ::testing::TestWithParam<int> {};

// A build killed after N commits (with half-written data past the ledgers), resumed, killed again and
// resumed again, ends byte-identical to an uninterrupted build.
TEST_P(KillResume, ResumedCacheIsByteIdentical) {
  const int threads = GetParam();
  TempDir t;
  Corpus c = make_corpus(t);
  auto ref = build_or_load_cache(t / "ref", c.files, byte_encoder(), opts(threads));
  ref->builder()->wait();
  auto expected = snapshot(t / "ref");

  for (int64_t kill_after : {1, 4, 9}) {
    std::string dir = t / ("killed" + std::to_string(kill_after));
    CacheBuildOptions o = opts(threads);
    o.simulate_kill_after_chunks = kill_after;
    {
      auto cache = build_or_load_cache(dir, c.files, byte_encoder(), o);
      cache->builder()->wait();  // a kill is not an error of the build
      EXPECT_FALSE(cache->finished());
      EXPECT_FALSE(read_manifest(dir)->finished);
      // What is committed is readable, and correct, even in the killed state.
      int64_t avail = cache->tokens_available();
      EXPECT_GT(avail, 0);
      std::vector<int32_t> got(static_cast<size_t>(avail));
      cache->read_tokens(0, avail, got.data());
      auto all = expected_bytes_tokens(c.docs);
      EXPECT_TRUE(std::equal(got.begin(), got.end(), all.begin()));
    }
    EXPECT_NE(snapshot(dir), expected);
    {
      CacheBuildOptions again = opts(threads == 1 ? 2 : 1);  // resume with another thread count, killed again
      again.simulate_kill_after_chunks = 2;
      auto cache = build_or_load_cache(dir, c.files, byte_encoder(), again);
      cache->builder()->wait();
    }
    auto cache = build_or_load_cache(dir, c.files, byte_encoder(), opts(threads));
    ASSERT_NE(cache->builder(), nullptr);
    cache->builder()->wait();
    EXPECT_EQ(read_all(*cache), expected_bytes_tokens(c.docs));
    EXPECT_EQ(snapshot(dir), expected) << "killed after " << kill_after << " commits";
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, KillResume, ::testing::Values(1, 2),
                         [](const auto& info) { return std::to_string(info.param) + "threads"; });

TEST(TokenCache, ReadersBlockOnlyUntilTheirTokensExist) {
  TempDir t;
  auto docs = make_docs(3, 120);
  write_text(t / "in.jsonl", jsonl(docs));
  // ~3 ms per document and 10 documents per commit: the build takes about half a second.
  auto cache = build_or_load_cache(t / "cache", {t / "in.jsonl"}, byte_encoder(3000), opts(1, 10));
  auto all = expected_bytes_tokens(docs);

  std::vector<int32_t> head(8);
  cache->read_tokens(0, 8, head.data());  // the first chunk suffices
  EXPECT_FALSE(cache->finished()) << "the read should not have waited for the whole build";
  EXPECT_TRUE(std::equal(head.begin(), head.end(), all.begin()));
  EXPECT_GE(cache->wait_for_rows(25), 25);
  EXPECT_FALSE(cache->finished());

  // A second opener while this build runs (as another process would): it cannot take the build lock, so it
  // reads by polling the ledgers.
  auto other = build_or_load_cache(t / "cache", {t / "in.jsonl"}, byte_encoder(3000), opts(1, 10));
  EXPECT_EQ(other->builder(), nullptr);

  // The last tokens: both readers block until the build has written them.
  std::vector<int32_t> tail(5), tail2(5);
  const int64_t n = static_cast<int64_t>(all.size());
  std::thread t2([&] { other->read_tokens(n - 5, 5, tail2.data()); });
  cache->read_tokens(n - 5, 5, tail.data());
  EXPECT_EQ(cache->tokens_available(), n);
  t2.join();
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), all.end() - 5));
  EXPECT_EQ(tail, tail2);
  EXPECT_EQ(other->total_tokens(), n);
}

TEST(TokenCache, RefusesACacheMadeWithAnotherTokenizer) {
  TempDir t;
  Corpus c = make_corpus(t);
  build_or_load_cache(t / "cache", c.files, byte_encoder(0, "sha256:aaaa"), opts(2))->builder()->wait();
  try {
    build_or_load_cache(t / "cache", c.files, byte_encoder(0, "sha256:bbbb"), opts(2));
    FAIL() << "expected a refusal";
  } catch (const DataError& e) {
    std::string m = e.what();
    EXPECT_THAT(m, HasSubstr("refusing to use this cache"));
    EXPECT_THAT(m, HasSubstr("another tokenizer"));
    EXPECT_THAT(m, HasSubstr("sha256:aaaa"));
    EXPECT_THAT(m, HasSubstr("sha256:bbbb"));
    EXPECT_THAT(m, HasSubstr("data.rebuild_cache: true"));
  }
  EXPECT_THROW(TokenCache::open(t / "cache", byte_encoder(0, "sha256:bbbb").processing), DataError);
  // Another EOS policy is refused too.
  DocumentEncoder no_eos = byte_encoder(0, "sha256:aaaa");
  no_eos.processing.eos_id.reset();
  try {
    build_or_load_cache(t / "cache", c.files, no_eos, opts(2));
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("EOS 256"));
  }
  // With the option, it is rebuilt.
  CacheBuildOptions o = opts(2);
  o.rebuild = true;
  auto cache = build_or_load_cache(t / "cache", c.files, byte_encoder(0, "sha256:bbbb"), o);
  cache->builder()->wait();
  EXPECT_EQ(read_manifest(t / "cache")->processing.tokenizer_fingerprint, "sha256:bbbb");
  EXPECT_EQ(read_all(*cache), expected_bytes_tokens(c.docs));
}

TEST(TokenCache, RefusesAnotherFormatVersionAndOtherInputs) {
  TempDir t;
  Corpus c = make_corpus(t);
  build_or_load_cache(t / "cache", c.files, byte_encoder(), opts(2))->builder()->wait();

  // Other input files.
  try {
    build_or_load_cache(t / "cache", {c.files[0], c.files[1]}, byte_encoder(), opts(2));
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("other input files"));
    EXPECT_THAT(e.what(), HasSubstr("c.txt"));
  }
  // An input that changed since it was cached; a copy (new mtime, same bytes) is fine.
  std::string b = read_file(c.files[1]);
  write_text(c.files[1], b);  // same content, new mtime
  EXPECT_EQ(build_or_load_cache(t / "cache", c.files, byte_encoder(), opts(2))->builder(), nullptr);
  write_text(c.files[1], b + "{\"text\": \"one more\"}\n");
  try {
    build_or_load_cache(t / "cache", c.files, byte_encoder(), opts(2));
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("b.jsonl changed since it was cached"));
  }
  // Another format version.
  std::string mp = manifest_path(t / "cache");
  std::string text = read_file(mp);
  text.replace(text.find("\"format_version\": 1"), 19, "\"format_version\": 0");
  write_file_atomic(mp, text);
  try {
    TokenCache::open(t / "cache");
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("format version 0"));
  }
  try {
    build_or_load_cache(t / "cache", c.files, byte_encoder(), opts(2));
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("format version 0"));
  }
  try {
    TokenCache::open(t / "nothing");
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("no token cache here"));
  }
}

TEST(TokenCache, CacheDoesNotDependOnSequenceLengthAndEmptyFilesList) {
  TempDir t;
  auto cache = build_or_load_cache(t / "empty", {}, byte_encoder(), opts(1));
  if (cache->builder()) cache->builder()->wait();
  EXPECT_TRUE(cache->finished());
  EXPECT_EQ(cache->total_tokens(), 0);
}
