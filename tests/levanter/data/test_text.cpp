// The data config and the pipeline from it (TextData), including the bundled GPT-2 tokenizer and corpus.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "data_testing.h"
#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"

using namespace levanter::data;
using namespace levanter::data::testing;
using levanter::config::ConfigError;
using ::testing::HasSubstr;

namespace {

DataConfig parse(const std::string& yaml) { return levanter::config::parse_string<DataConfig>(yaml, "data.yaml"); }

const std::string kSource = LEVANTER_SOURCE_DIR;
const std::string kCli = std::string(LEVANTER_BINARY_DIR) + "/levanter";

}  // namespace

TEST(DataConfig, ParsesLevantersKeys) {
  DataConfig c = parse(
      "train_urls: [\"a/{1..2}.jsonl.gz\"]\nvalidation_urls: v.jsonl\ncache_dir: /tmp/c\ntokenizer: gpt2\n"
      "text_key: content\nshuffle: 1024\nenforce_eos: true\nskip_bad_lines: yes\n"
      "cache_options: {num_threads: 3, num_shard_groups: 128}\n");
  EXPECT_EQ(c.train_urls, std::vector<std::string>{"a/{1..2}.jsonl.gz"});
  EXPECT_EQ(c.validation_urls, std::vector<std::string>{"v.jsonl"});
  EXPECT_EQ(c.shuffle.mode, ShuffleMode::kEra);
  EXPECT_EQ(c.shuffle.era_length, 1024);
  EXPECT_EQ(c.text_key, "content");
  EXPECT_TRUE(c.skip_bad_lines);
  EXPECT_EQ(c.cache_options.num_threads, 3);
  EXPECT_NO_THROW(c.validate());
  EXPECT_EQ(parse("shuffle: true").shuffle.mode, ShuffleMode::kFull);
  EXPECT_EQ(parse("shuffle: false").shuffle.mode, ShuffleMode::kNone);
  DataConfig d;
  EXPECT_EQ(d.tokenizer, "gpt2");
  EXPECT_EQ(d.cache_dir, "cache/");
  EXPECT_EQ(d.mixture_block_size, 2048);
  EXPECT_TRUE(d.enforce_eos);
  EXPECT_FALSE(d.enforce_bos);
  EXPECT_EQ(d.shuffle.mode, ShuffleMode::kNone);
  // Round trip through a dump.
  DataConfig back = parse(levanter::config::dump(levanter::config::to_yaml_value(c)));
  EXPECT_EQ(back.shuffle.era_length, 1024);
  EXPECT_EQ(back.train_urls, c.train_urls);
}

TEST(DataConfig, MixtureWeightsAsMapOrSchedule) {
  DataConfig c = parse(
      "configs:\n  kjv: {train_urls: [k.jsonl], validation_urls: [kv.jsonl]}\n  austen: {train_urls: [a.jsonl], "
      "cache_dir: /x}\n"
      "train_weights: {kjv: 0.25, austen: 0.75}\nmixture_block_size: 64\n");
  ASSERT_TRUE(c.is_mixture());
  ASSERT_EQ(c.train_weights.stages.size(), 1u);
  EXPECT_DOUBLE_EQ(c.train_weights.stages[0].second.at("austen"), 0.75);
  EXPECT_NO_THROW(c.validate());
  DataConfig s = parse(
      "configs: {a: {train_urls: [a]}, b: {train_urls: [b]}}\n"
      "train_weights: [[0, {a: 1.0}], [100, {a: 0.5, b: 0.5}]]\n");
  ASSERT_EQ(s.train_weights.stages.size(), 2u);
  EXPECT_EQ(s.train_weights.stages[1].first, 100);
  EXPECT_NO_THROW(s.validate());
  DataConfig back = parse(levanter::config::dump(levanter::config::to_yaml_value(s)));
  EXPECT_EQ(back.train_weights.stages, s.train_weights.stages);
  EXPECT_THROW(parse("train_weights: [[5, {a: 1.0}]]"), ConfigError);  // must start at 0
  EXPECT_THROW(parse("train_weights: [[0, {a: -1}]]"), ConfigError);
  try {
    parse("configs: {a: {train_urls: [a]}}\ntrain_weights: {b: 1.0}\n").validate();
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("'b' is not a source under data.configs"));
  }
  EXPECT_THROW(parse("configs: {a: {train_urls: [a]}}\n").validate(), ConfigError);  // no weights
  EXPECT_THROW(parse("configs: {a: {train_urls: [a]}}\ntrain_urls: [x]\ntrain_weights: {a: 1}\n").validate(),
               ConfigError);
}

TEST(DataConfig, HubDatasetsAreRefusedWithAReasonAndAnAlternative) {
  try {
    parse("id: openwebtext\n").validate();
    FAIL();
  } catch (const ConfigError& e) {
    std::string m = e.what();
    EXPECT_THAT(m, HasSubstr("data.id"));
    EXPECT_THAT(m, HasSubstr("network"));
    EXPECT_THAT(m, HasSubstr("data.train_urls"));
  }
  try {
    parse("configs: {owt: {id: openwebtext}}\ntrain_weights: {owt: 1}\n").validate();
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("data.configs.owt.id"));
    EXPECT_THAT(e.what(), HasSubstr("data.configs.owt.train_urls"));
  }
  try {
    parse("train_url: [x]\n");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("did you mean 'train_urls'"));
  }
  EXPECT_THROW(parse("stop_strategy: first_exhausted\n").validate(), ConfigError);
}

TEST(TextData, CacheDirectoriesAndValidationSetNames) {
  TempDir t;
  write_text(t / "k/train.jsonl", jsonl(make_docs(0, 30)));
  write_text(t / "k/val.jsonl", jsonl(make_docs(1, 10)));
  write_text(t / "a/train.jsonl", jsonl(make_docs(2, 30)));
  write_text(t / "a/val.jsonl", jsonl(make_docs(3, 10)));
  DataConfig single;
  single.train_urls = {t / "k/train.jsonl"};
  single.validation_urls = {t / "k/val.jsonl"};
  single.cache_dir = t / "cache";
  TextData one(single, byte_encoder());
  EXPECT_EQ(one.source_names(), std::vector<std::string>{""});
  EXPECT_EQ(one.cache_dir("", Split::kTrain), t / "cache/train");
  auto sets = one.validation_sets(8);
  ASSERT_EQ(sets.size(), 1u);
  EXPECT_EQ(sets.begin()->first, "");
  EXPECT_GT(*sets.at("")->length(), 0);

  DataConfig mix = parse("configs:\n  kjv: {train_urls: [\"" + t / "k/train.jsonl" + "\"], validation_urls: [\"" +
                         t / "k/val.jsonl" + "\"]}\n  austen: {train_urls: [\"" + t / "a/train.jsonl" +
                         "\"], validation_urls: [\"" + t / "a/val.jsonl" + "\"], cache_dir: \"" + t / "austen_cache" +
                         "\"}\ntrain_weights: {kjv: 0.5, austen: 0.5}\nmixture_block_size: 8\ncache_dir: \"" +
                         t / "cache" + "\"\nshuffle: true\n");
  TextData two(mix, byte_encoder());
  EXPECT_EQ(two.source_names(), (std::vector<std::string>{"austen", "kjv"}));
  EXPECT_EQ(two.cache_dir("kjv", Split::kValidation), t / "cache/kjv/validation");
  EXPECT_EQ(two.cache_dir("austen", Split::kTrain), t / "austen_cache/train");
  auto vsets = two.validation_sets(8);
  EXPECT_EQ(vsets.size(), 2u);
  EXPECT_TRUE(vsets.count("kjv") && vsets.count("austen"));

  // The mixed, shuffled training set: same (seed, step) -> same batch, from a fresh pipeline too.
  auto train = two.train_set(8, 17, 4);
  TokenBatch b = batch_at(*train, 4, 3);
  TextData again(mix, byte_encoder());
  EXPECT_EQ(batch_at(*again.train_set(8, 17, 4), 4, 3).tokens, b.tokens);
  EXPECT_NE(batch_at(*again.train_set(8, 18, 4), 4, 3).tokens, b.tokens);
  // A schedule step that is not block-aligned in sequences is an error naming the key.
  DataConfig bad = mix;
  bad.train_weights.stages = {{0, {{"kjv", 1.0}}}, {3, {{"austen", 1.0}}}};
  bad.train_weights.schedule = true;
  TextData three(bad, byte_encoder());
  try {
    three.train_set(8, 1, 4);  // step 3 * batch 4 = sequence 12, not a multiple of 8
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("data.train_weights"));
    EXPECT_THAT(e.what(), HasSubstr("not a multiple of mixture_block_size"));
  }
}

TEST(TextData, Gpt2TokenizerOnTheBundledCorpus) {
  std::string tok = kSource + "/data/gpt2/tokenizer.json";
  std::string val = kSource + "/data/corpus/austen/validation.jsonl.gz";
  if (!fs::exists(tok)) GTEST_SKIP() << "no bundled tokenizer at " << tok;
  TempDir t;
  DataConfig cfg;
  cfg.tokenizer = tok;
  cfg.train_urls = {val};
  cfg.validation_urls = {val};
  cfg.cache_dir = t / "cache";
  TextData data(cfg);
  EXPECT_EQ(data.eos_id(), 50256);
  ASSERT_NE(data.tokenizer(), nullptr);
  EXPECT_EQ(data.tokenizer()->vocab_size(), 50257u);
  auto sets = data.validation_sets(1024);
  auto cache = sets.at("")->cache();
  // 46,026 GPT-2 tokens in 12 documents (data/README), plus one EOS each.
  EXPECT_EQ(cache->total_tokens(), 46026 + 12);
  std::vector<int32_t> head(10);
  cache->read_tokens(0, 10, head.data());
  EXPECT_EQ(head, (std::vector<int32_t>{41166, 290, 14173, 2247, 198, 198, 41481, 2534, 198, 198}));
  auto [b, e] = cache->document(0);
  int32_t last;
  cache->read_tokens(e - 1, 1, &last);
  EXPECT_EQ(last, 50256);
  EXPECT_EQ(e - b, 3716 + 1);
  EXPECT_EQ(*sets.at("")->length(), (46026 + 12) / 1024);
  // The name "gpt2" finds the same bundled file (from the build directory, or the checkout).
  EXPECT_NO_THROW(resolve_tokenizer_path("gpt2"));
  EXPECT_THROW(resolve_tokenizer_path("no-such-tokenizer"), DataError);
}

// The CLI, killed with SIGKILL in the middle of a build and run again, ends with the same bytes as a build
// that was never interrupted.
TEST(CacheCommand, SigkillAndRerunGiveTheSameCache) {
  if (!fs::exists(kCli)) GTEST_SKIP() << "no CLI at " << kCli;
  std::string tok = kSource + "/data/gpt2/tokenizer.json";
  if (!fs::exists(tok)) GTEST_SKIP() << "no bundled tokenizer";
  TempDir t;
  write_text(t / "cfg.yaml", "data:\n  train_urls: [\"" + kSource +
                                 "/data/corpus/austen/validation.jsonl.gz\"]\n  tokenizer: \"" + tok +
                                 "\"\n  cache_options: {chunk_documents: 1}\nmodel: {anything: 1}\n");
  auto run = [&](const std::string& cache_dir, bool kill) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::freopen("/dev/null", "w", stdout);
      ::freopen("/dev/null", "w", stderr);
      ::execl(kCli.c_str(), kCli.c_str(), "cache", "--config", (t / "cfg.yaml").c_str(), "--data.cache_dir",
              cache_dir.c_str(), "--threads", "2", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    if (kill) {
      // Kill once a few chunks are committed (or give up waiting and kill anyway).
      for (int i = 0; i < 2000; ++i) {
        auto l = fs::exists(ledger_path(cache_dir + "/train", 0)) ? read_ledger(cache_dir + "/train", 0) : std::nullopt;
        if (l && l->chunks >= 3) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      ::kill(pid, SIGKILL);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
  };
  int st = run(t / "killed", true);
  EXPECT_TRUE(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 0));
  if (WIFSIGNALED(st)) {
    EXPECT_FALSE(read_manifest(t / "killed/train")->finished) << "killed mid-build";
  }
  EXPECT_EQ(run(t / "killed", false), 0);
  // The reference: the same config built in this process, never interrupted.
  DataConfig cfg;
  cfg.train_urls = {kSource + "/data/corpus/austen/validation.jsonl.gz"};
  cfg.tokenizer = tok;
  cfg.cache_options.chunk_documents = 1;
  cfg.cache_dir = t / "ref";
  TextData(cfg).cache("", Split::kTrain)->wait_finished();
  EXPECT_EQ(snapshot(t / "killed/train"), snapshot(t / "ref/train"));
  EXPECT_TRUE(read_manifest(t / "ref/train")->finished);
}

TEST(CacheCommand, ExplainsHubIdsAndReadsOnlyTheDataSection) {
  if (!fs::exists(kCli)) GTEST_SKIP() << "no CLI at " << kCli;
  TempDir t;
  write_text(t / "cfg.yaml", "data:\n  id: openwebtext\ntrainer: {num_train_steps: 5}\n");
  std::string cmd = kCli + " cache --config " + t / "cfg.yaml" + " > " + t / "out.txt" + " 2>&1";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  std::string out = read_file(t / "out.txt");
  EXPECT_THAT(out, HasSubstr("data.id"));
  EXPECT_THAT(out, HasSubstr("train_urls"));
}
