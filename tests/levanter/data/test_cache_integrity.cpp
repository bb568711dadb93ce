// The token cache is not trusted blindly: truncated, shortened, altered or foreign caches are refused with a
// DataError that names the file, the shard and the fix, never read as zeros, never a SIGBUS; and a reader
// whose builder (another process) dies takes the build over instead of polling forever.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "data_testing.h"
#include "levanter/data/cache/builder.h"
#include "levanter/data/cache/token_cache.h"
#include "levanter/data/loader.h"
#include "levanter/data/text.h"

using namespace levanter::data;
using namespace levanter::data::testing;
using ::testing::HasSubstr;

namespace {

struct Corpus {
  std::vector<std::string> files;
  std::vector<std::string> docs;  // in cache order
};

Corpus make_corpus(const TempDir& t, int files = 3, int docs_per_file = 40) {
  Corpus c;
  for (int f = 0; f < files; ++f) {
    auto d = make_docs(f, docs_per_file);
    std::string path = t / ("in/f" + std::to_string(f) + ".jsonl");
    write_text(path, jsonl(d));
    c.files.push_back(path);
    c.docs.insert(c.docs.end(), d.begin(), d.end());
  }
  return c;
}

CacheBuildOptions opts(int threads = 2, int64_t chunk = 4) {
  CacheBuildOptions o;
  o.num_threads = threads;
  o.chunk_documents = chunk;
  o.log_warnings = false;
  o.vocab_size = kByteEos + 1;
  return o;
}

std::shared_ptr<TokenCache> build(const std::string& dir, const Corpus& c, CacheBuildOptions o = opts()) {
  auto cache = build_or_load_cache(dir, c.files, byte_encoder(), o);
  if (cache->builder()) cache->builder()->wait();
  return cache;
}

std::vector<int32_t> read_all(TokenCache& cache) {
  std::vector<int32_t> out(static_cast<size_t>(cache.total_tokens()));
  cache.read_tokens(0, static_cast<int64_t>(out.size()), out.data());
  return out;
}

CacheReadOptions read_opts() {
  CacheReadOptions r;
  r.vocab_size = kByteEos + 1;
  r.log_waits = false;
  return r;
}

// The message of the DataError that fn throws ("" if none).
template <typename F>
std::string data_error(F fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

void truncate_to(const std::string& path, int64_t size) { ASSERT_EQ(::truncate(path.c_str(), size), 0) << path; }

// Overwrites 4 bytes at `offset` of a file.
void poke_i32(const std::string& path, int64_t offset, int32_t value) {
  auto f = levanter::runtime::File::open(path, O_WRONLY);
  f.write_all_at(&value, sizeof(value), static_cast<uint64_t>(offset));
}

// Recomputes a shard's checksums from its files, so that only the other checks can catch a change.
void rechecksum(const std::string& dir, size_t shard) {
  ShardLedger l = *read_ledger(dir, shard);
  auto crcs = [&](const std::string& path) {
    std::string bytes = read_file(path);
    std::vector<uint32_t> out;
    for (size_t b = 0; b < bytes.size(); b += static_cast<size_t>(l.checksum_block_bytes)) {
      levanter::runtime::Crc32 crc;
      crc.update(bytes.data() + b, std::min(bytes.size() - b, static_cast<size_t>(l.checksum_block_bytes)));
      out.push_back(crc.value());
    }
    return out;
  };
  l.tokens_crc32 = crcs(tokens_path(dir, shard));
  l.offsets_crc32 = crcs(offsets_path(dir, shard));
  write_file_atomic(ledger_path(dir, shard), l.to_json());
}

void expect_names_shard_and_fix(const std::string& m, const std::string& dir, size_t shard, const std::string& file) {
  EXPECT_THAT(m, HasSubstr(shard_dir(dir, shard) + "/" + file));
  EXPECT_THAT(m, HasSubstr("shard " + std::to_string(shard) + " of the token cache " + dir));
  EXPECT_THAT(m, HasSubstr("delete " + shard_dir(dir, shard)));
  EXPECT_THAT(m, HasSubstr("levanter cache --config"));
}

}  // namespace

TEST(CacheIntegrity, LedgersHoldBlockChecksumsOfTheirFiles) {
  TempDir t;
  Corpus c = make_corpus(t);
  build(t / "cache", c);
  ShardLedger l = *read_ledger(t / "cache", 1);
  EXPECT_EQ(l.checksum_block_bytes, kChecksumBlockBytes);
  ASSERT_EQ(l.tokens_crc32.size(), 1u);  // a small shard: one partial block
  ASSERT_EQ(l.offsets_crc32.size(), 1u);
  std::string bytes = read_file(tokens_path(t / "cache", 1));
  levanter::runtime::Crc32 crc;
  crc.update(bytes.data(), bytes.size());
  EXPECT_EQ(l.tokens_crc32[0], crc.value());
}

TEST(CacheIntegrity, ATruncatedTokenFileIsRefusedAtOpenNamingFileShardAndFix) {
  TempDir t;
  Corpus c = make_corpus(t);
  build(t / "cache", c);
  const std::string tokens = tokens_path(t / "cache", 1);
  truncate_to(tokens, static_cast<int64_t>(fs::file_size(tokens)) - 400);
  std::string m = data_error([&] { TokenCache::open(t / "cache", std::nullopt, read_opts()); });
  expect_names_shard_and_fix(m, t / "cache", 1, "tokens.i32");
  EXPECT_THAT(m, HasSubstr("truncated"));
  // The builder's path (what training takes) refuses it too, before anything is read.
  m = data_error([&] { build_or_load_cache(t / "cache", c.files, byte_encoder(), opts()); });
  expect_names_shard_and_fix(m, t / "cache", 1, "tokens.i32");
  // The fix the message gives works: delete the shard, build again; the same tokens come back.
  fs::remove_all(shard_dir(t / "cache", 1));
  EXPECT_EQ(read_all(*build(t / "cache", c)), expected_bytes_tokens(c.docs));
}

TEST(CacheIntegrity, ATruncatedOffsetsFileOrValidationShardIsRefused) {
  TempDir t;
  Corpus c = make_corpus(t, 1);
  build(t / "cache", c);
  truncate_to(offsets_path(t / "cache", 0), 8);
  std::string m = data_error([&] { TokenCache::open(t / "cache", std::nullopt, read_opts()); });
  expect_names_shard_and_fix(m, t / "cache", 0, "offsets.i64");

  // A validation set through TextData: an error, not a wrong loss.
  DataConfig cfg;
  cfg.train_urls = c.files;
  cfg.validation_urls = c.files;
  cfg.cache_dir = t / "data";
  TextData data(cfg, byte_encoder());
  data.set_build_options(opts());
  data.validation_sets(16);
  truncate_to(tokens_path(t / "data/validation", 0), 40);
  TextData again(cfg, byte_encoder());
  again.set_build_options(opts());
  m = data_error([&] { again.validation_sets(16); });
  expect_names_shard_and_fix(m, t / "data/validation", 0, "tokens.i32");
}

TEST(CacheIntegrity, ALedgerOrManifestDisagreeingWithTheOtherIsRefused) {
  TempDir t;
  Corpus c = make_corpus(t);
  build(t / "cache", c);
  // A ledger claiming fewer tokens than its file (and than the manifest's total) holds.
  ShardLedger l = *read_ledger(t / "cache", 0);
  ShardLedger fewer = l;
  fewer.tokens -= 10;
  write_file_atomic(ledger_path(t / "cache", 0), fewer.to_json());
  std::string m = data_error([&] { TokenCache::open(t / "cache", std::nullopt, read_opts()); });
  expect_names_shard_and_fix(m, t / "cache", 0, "tokens.i32");
  EXPECT_THAT(m, HasSubstr("ledger"));
  write_file_atomic(ledger_path(t / "cache", 0), l.to_json());
  EXPECT_EQ(read_all(*TokenCache::open(t / "cache", std::nullopt, read_opts())), expected_bytes_tokens(c.docs));

  // A manifest whose totals differ from the ledgers'.
  CacheManifest manifest = *read_manifest(t / "cache");
  CacheManifest more = manifest;
  more.tokens += 1000;
  write_file_atomic(manifest_path(t / "cache"), more.to_json());
  m = data_error([&] { TokenCache::open(t / "cache", std::nullopt, read_opts()); });
  EXPECT_THAT(m, HasSubstr("manifest.json: the manifest says the cache holds"));
  EXPECT_THAT(m, HasSubstr("levanter cache --config"));
  write_file_atomic(manifest_path(t / "cache"), manifest.to_json());

  // A complete manifest with a shard gone.
  fs::remove_all(shard_dir(t / "cache", 2));
  m = data_error([&] { TokenCache::open(t / "cache", std::nullopt, read_opts()); });
  EXPECT_THAT(m, HasSubstr("shard 2 has no ledger"));
}

TEST(CacheIntegrity, AFlippedByteFailsItsChecksumOnFirstRead) {
  TempDir t;
  Corpus c = make_corpus(t);
  build(t / "cache", c);
  const std::string tokens = tokens_path(t / "cache", 1);
  poke_i32(tokens, 40, 'x');  // a valid id: only the checksum can tell
  auto cache = TokenCache::open(t / "cache", std::nullopt, read_opts());
  std::vector<int32_t> head(8);
  cache->read_tokens(0, 8, head.data());  // shard 0 is fine
  std::string m = data_error([&] { read_all(*cache); });
  expect_names_shard_and_fix(m, t / "cache", 1, "tokens.i32");
  EXPECT_THAT(m, HasSubstr("fails its checksum"));

  // The offsets file too (a document boundary moved by one token).
  TempDir t2;
  build(t2 / "cache", c);
  int64_t end0;
  {
    auto f = levanter::runtime::File::open(offsets_path(t2 / "cache", 0), O_RDONLY);
    f.read_exact_at(&end0, 8, 0);
  }
  auto f = levanter::runtime::File::open(offsets_path(t2 / "cache", 0), O_WRONLY);
  int64_t moved = end0 + 1;
  f.write_all_at(&moved, 8, 0);
  cache = TokenCache::open(t2 / "cache", std::nullopt, read_opts());
  m = data_error([&] { cache->document(0); });
  expect_names_shard_and_fix(m, t2 / "cache", 0, "offsets.i64");
  EXPECT_THAT(m, HasSubstr("fails its checksum"));
  // verify_all (levanter cache) finds it without being asked for that document.
  cache = TokenCache::open(t2 / "cache", std::nullopt, read_opts());
  EXPECT_THAT(data_error([&] { cache->verify_all(); }), HasSubstr("fails its checksum"));
}

TEST(CacheIntegrity, AnOutOfVocabularyIdIsADataErrorNamingFileAndStep) {
  TempDir t;
  Corpus c = make_corpus(t, 1);
  build(t / "cache", c);
  poke_i32(tokens_path(t / "cache", 0), 4 * 100, 70000);
  rechecksum(t / "cache", 0);  // consistent checksums: only the vocabulary check is left
  auto cache = TokenCache::open(t / "cache", std::nullopt, read_opts());
  std::string m = data_error([&] { read_all(*cache); });
  expect_names_shard_and_fix(m, t / "cache", 0, "tokens.i32");
  EXPECT_THAT(m, HasSubstr("token 100 of the shard has id 70000, outside the vocabulary [0, 257)"));
  // Through the loader: the step is named too.
  auto ds = std::make_shared<TokenSeqDataset>(TokenCache::open(t / "cache", std::nullopt, read_opts()), 16);
  m = data_error([&] { batch_at(*ds, 2, 3); });
  EXPECT_THAT(m, HasSubstr("the batch of step 3: "));
  EXPECT_THAT(m, HasSubstr("outside the vocabulary"));
  // Without a vocabulary size nothing is checked (and the checksums pass).
  EXPECT_EQ(read_all(*TokenCache::open(t / "cache")).at(100), 70000);
}

TEST(CacheIntegrity, TextDataChecksIdsAgainstTheTokenizersVocabulary) {
  std::string tok = std::string(LEVANTER_SOURCE_DIR) + "/data/gpt2/tokenizer.json";
  if (!fs::exists(tok)) GTEST_SKIP() << "no bundled tokenizer at " << tok;
  TempDir t;
  Corpus c = make_corpus(t, 1);
  DataConfig cfg;
  cfg.tokenizer = tok;
  cfg.train_urls = c.files;
  cfg.cache_dir = t / "cache";
  {
    TextData data(cfg);
    EXPECT_EQ(data.vocab_size(), 50257);
    data.cache("", Split::kTrain)->wait_finished();
  }
  poke_i32(tokens_path(t / "cache/train", 0), 4 * 3, 50257);
  rechecksum(t / "cache/train", 0);
  TextData data(cfg);
  auto train = data.train_set(8, 0, 2);
  std::string m = data_error([&] { batch_at(*train, 2, 0); });
  EXPECT_THAT(m, HasSubstr("the batch of step 0: "));
  EXPECT_THAT(m, HasSubstr("has id 50257, outside the vocabulary [0, 50257)"));
  EXPECT_THAT(m, HasSubstr(tokens_path(t / "cache/train", 0)));
}

TEST(CacheIntegrity, AFileShrinkingAfterOpenIsAnErrorNotASigbus) {
  TempDir t;
  Corpus c = make_corpus(t);
  build(t / "cache", c);
  auto cache = TokenCache::open(t / "cache", std::nullopt, read_opts());
  EXPECT_EQ(read_all(*cache), expected_bytes_tokens(c.docs));
  truncate_to(tokens_path(t / "cache", 2), 0);
  std::string m = data_error([&] { read_all(*cache); });
  expect_names_shard_and_fix(m, t / "cache", 2, "tokens.i32");
}

TEST(CacheIntegrity, OldLedgersWithoutChecksumsStillRead) {
  TempDir t;
  Corpus c = make_corpus(t);
  auto ref = build(t / "ref", c);
  auto expected = snapshot(t / "ref");
  // A complete cache from before checksums.
  build(t / "cache", c);
  for (size_t i = 0; i < c.files.size(); ++i) {
    ShardLedger l = *read_ledger(t / "cache", i);
    l.checksum_block_bytes = 0;
    l.tokens_crc32.clear();
    l.offsets_crc32.clear();
    write_file_atomic(ledger_path(t / "cache", i), l.to_json());
    EXPECT_EQ(read_file(ledger_path(t / "cache", i)).find("checksums"), std::string::npos);
  }
  EXPECT_EQ(read_all(*TokenCache::open(t / "cache", std::nullopt, read_opts())), expected_bytes_tokens(c.docs));
  EXPECT_EQ(read_all(*build(t / "cache", c)), expected_bytes_tokens(c.docs));
  // Its sizes and ids are still checked.
  truncate_to(tokens_path(t / "cache", 0), 4);
  EXPECT_THAT(data_error([&] { TokenCache::open(t / "cache", std::nullopt, read_opts()); }), HasSubstr("truncated"));

  // An unfinished one from before checksums resumes, and ends with checksummed ledgers like a fresh build.
  CacheBuildOptions kill = opts();
  kill.simulate_kill_after_chunks = 5;
  build(t / "old", c, kill);
  for (size_t i = 0; i < c.files.size(); ++i) {
    std::optional<ShardLedger> l = read_ledger(t / "old", i);
    if (!l) continue;
    l->checksum_block_bytes = 0;
    l->tokens_crc32.clear();
    l->offsets_crc32.clear();
    write_file_atomic(ledger_path(t / "old", i), l->to_json());
  }
  build(t / "old", c);
  EXPECT_EQ(snapshot(t / "old"), expected);
}

TEST(CacheIntegrity, AResumedShardWhoseCommittedBytesFailTheirChecksumsIsRestarted) {
  TempDir t;
  Corpus c = make_corpus(t, 1, 60);
  build(t / "ref", c);
  CacheBuildOptions kill = opts(1);
  kill.simulate_kill_after_chunks = 5;
  build(t / "cache", c, kill);
  ASSERT_FALSE(read_ledger(t / "cache", 0)->finished);
  poke_i32(tokens_path(t / "cache", 0), 8, 'q');
  auto cache = build(t / "cache", c);
  EXPECT_EQ(read_all(*cache), expected_bytes_tokens(c.docs));
  EXPECT_EQ(snapshot(t / "cache"), snapshot(t / "ref"));
}

TEST(CacheIntegrity, TheCommittedPartOfAnUnfinishedShardIsCheckedAsItIsRead) {
  TempDir t;
  Corpus c = make_corpus(t, 1, 60);
  CacheBuildOptions kill = opts(1);
  kill.simulate_kill_after_chunks = 5;
  auto cache = build(t / "cache", c, kill);
  ASSERT_FALSE(cache->finished());
  int64_t n = cache->tokens_available();
  ASSERT_GT(n, 20);
  std::vector<int32_t> got(static_cast<size_t>(n));
  cache->read_tokens(0, n, got.data());
  poke_i32(tokens_path(t / "cache", 0), 4 * 20, -7);
  EXPECT_THAT(data_error([&] { cache->read_tokens(0, n, got.data()); }), HasSubstr("has id -7"));
  truncate_to(tokens_path(t / "cache", 0), 8);
  EXPECT_THAT(data_error([&] { cache->read_tokens(0, n, got.data()); }),
              HasSubstr("cannot read tokens committed in its ledger"));
}

// --- a builder that dies -------------------------------------------------------------------------------------

namespace {

// Kills this test process if a wait never ends (the bug this guards against): a failure, not a hang.
struct Watchdog {
  explicit Watchdog(unsigned seconds) { ::alarm(seconds); }
  ~Watchdog() { ::alarm(0); }
};

// A child process building `dir` slowly (10 ms per document, 4 documents per commit), as another training
// process would. Returns once its first commit is on disk.
pid_t start_builder_process(const std::string& dir, const Corpus& c) {
  pid_t pid = ::fork();
  if (pid == 0) {
    try {
      auto cache = build_or_load_cache(dir, c.files, byte_encoder(10000), opts(1));
      cache->builder()->wait();
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  for (int i = 0; i < 1000 && !fs::exists(ledger_path(dir, 0)); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pid;
}

void kill_and_reap(pid_t pid, int sig) {
  ::kill(pid, sig);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status)) << "the builder process should have been killed, not have finished";
}

}  // namespace

TEST(CacheTakeover, AReaderTakesTheBuildOverWhenTheBuildingProcessIsKilled) {
  Watchdog watchdog(60);
  TempDir t;
  Corpus c = make_corpus(t);
  build(t / "ref", c);
  pid_t child = start_builder_process(t / "cache", c);
  CacheBuildOptions o = opts(2);
  o.log_warnings = true;
  auto cache = build_or_load_cache(t / "cache", c.files, byte_encoder(), o);
  EXPECT_EQ(cache->builder(), nullptr) << "the child process builds it";
  kill_and_reap(child, SIGKILL);
  ::testing::internal::CaptureStderr();
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> all = read_all(*cache);
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
  EXPECT_EQ(all, expected_bytes_tokens(c.docs));
  EXPECT_NE(cache->builder(), nullptr) << "the reader should have resumed the build itself";
  EXPECT_THAT(err, HasSubstr("(process " + std::to_string(child) + ") is gone; resuming the build in this process"));
  EXPECT_EQ(snapshot(t / "cache"), snapshot(t / "ref"));
}

TEST(CacheTakeover, AStoppedBuilderIsReportedAndTakenOverOnceKilled) {
  Watchdog watchdog(60);
  TempDir t;
  Corpus c = make_corpus(t);
  pid_t child = start_builder_process(t / "cache", c);
  ::kill(child, SIGSTOP);
  CacheBuildOptions o = opts(2);
  o.log_warnings = true;
  auto cache = build_or_load_cache(t / "cache", c.files, byte_encoder(), o);
  ::testing::internal::CaptureStderr();
  std::thread reader([&] { cache->wait_finished(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_FALSE(cache->finished());
  kill_and_reap(child, SIGKILL);
  reader.join();
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr("waiting for process " + std::to_string(child) + " (holding " + t / "cache/.lock"));
  EXPECT_THAT(err, HasSubstr("this reader needs the whole cache"));
  EXPECT_THAT(err, HasSubstr("That process is stopped"));
  EXPECT_EQ(err.find("waiting for"), err.rfind("waiting for")) << "said once (then every 30 s):\n" << err;
  EXPECT_THAT(err, HasSubstr("is gone; resuming the build"));
  EXPECT_EQ(read_all(*cache), expected_bytes_tokens(c.docs));
}

TEST(CacheTakeover, APlainReaderFailsWhenNobodyBuilds) {
  Watchdog watchdog(60);
  TempDir t;
  Corpus c = make_corpus(t);
  CacheBuildOptions kill = opts();
  kill.simulate_kill_after_chunks = 3;
  build(t / "cache", c, kill);  // an unfinished cache, its builder gone
  auto cache = TokenCache::open(t / "cache", std::nullopt, read_opts());
  std::string m = data_error([&] { cache->wait_finished(); });
  EXPECT_THAT(m, HasSubstr("the token cache is incomplete"));
  EXPECT_THAT(m, HasSubstr("no process is building it"));
  EXPECT_THAT(m, HasSubstr("levanter cache --config"));
}

TEST(CacheTakeover, ABuilderThatDiesBeforeWritingTheManifestIsReplaced) {
  Watchdog watchdog(60);
  TempDir t;
  Corpus c = make_corpus(t);
  fs::create_directories(t / "cache");
  int locked[2];
  ASSERT_EQ(::pipe(locked), 0);
  pid_t child = ::fork();
  if (child == 0) {  // takes the build lock, says so, and hangs (before any manifest)
    auto lock =
        levanter::runtime::FileLock::try_lock(t / "cache/.lock", levanter::runtime::FileLock::IfMissing::kCreateFile);
    char ok = lock.locked() ? 1 : 0;
    if (::write(locked[1], &ok, 1) != 1) ::_exit(3);
    ::pause();
    ::_exit(0);
  }
  char ok = 0;
  ASSERT_EQ(::read(locked[0], &ok, 1), 1);
  ASSERT_EQ(ok, 1);
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    kill_and_reap(child, SIGKILL);
  });
  auto t0 = std::chrono::steady_clock::now();
  auto cache = build_or_load_cache(t / "cache", c.files, byte_encoder(), opts());
  killer.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_NE(cache->builder(), nullptr) << "the dead process's build should be done here";
  EXPECT_EQ(read_all(*cache), expected_bytes_tokens(c.docs));
  ::close(locked[0]);
  ::close(locked[1]);
}
