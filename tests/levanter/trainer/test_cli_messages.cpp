// Messages of the `levanter` CLI for common mistakes, run as a user would (the built binary, through a shell).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

// Runs `levanter ARGS`; returns the exit code and stderr.
std::pair<int, std::string> run(const std::string& args) {
  const fs::path err = fs::temp_directory_path() / ("levanter_cli_msg_" + std::to_string(::getpid()) + ".txt");
  std::string cmd = std::string(LEVANTER_BINARY_DIR) + "/levanter " + args + " > /dev/null 2> '" + err.string() + "'";
  int rc = std::system(cmd.c_str());
  std::ifstream in(err);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  fs::remove(err);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, text};
}

}  // namespace

TEST(CliMessages, UnknownCommandNamesTheNearest) {
  auto [rc, err] = run("trian --config x.yaml");
  EXPECT_EQ(rc, 2);
  EXPECT_THAT(err, HasSubstr("unknown command 'trian'; did you mean 'train'?"));
  EXPECT_THAT(err, HasSubstr("Commands: cache, config, dashboard, eval, export, import, launch, sample, senses, "
                             "tokenize, train, version, viz"));
}

TEST(CliMessages, ConfigThatIsNotARegularFile) {
  const fs::path dir = fs::temp_directory_path() / ("levanter_cli_dir_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto [rc, err] = run("train --config '" + dir.string() + "'");
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(err, HasSubstr(dir.string() + ": is a directory, not a config file"));
  ASSERT_EQ(::mkfifo((dir / "fifo.yaml").c_str(), 0600), 0);
  auto [rc2, err2] = run("config --check '" + (dir / "fifo.yaml").string() + "'");  // must return, not block
  EXPECT_NE(rc2, 0);
  EXPECT_THAT(err2, HasSubstr("not a regular file"));
  fs::remove_all(dir);
}

TEST(CliMessages, ValidationShorterThanOneSequenceIsAnError) {
  // Before: "loss 0.0000, perplexity 1.00" and exit 0.
  const fs::path dir = fs::temp_directory_path() / ("levanter_cli_val_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "val.jsonl") << "{\"text\": \"Too short.\"}\n";
  const std::string corpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";
  std::ofstream(dir / "c.yaml") << "data:\n  train_urls: [\"" << corpus << "\"]\n  validation_urls: [\""
                                << (dir / "val.jsonl").string() << "\"]\n  cache_dir: " << (dir / "cache").string()
                                << "\nmodel: {type: gpt2, hidden_dim: 16, num_heads: 2, num_layers: 1, seq_len: 32}\n"
                                   "trainer:\n  num_train_steps: 2\n  train_batch_size: 2\n  steps_per_eval: 1\n"
                                   "  num_threads: 1\n  peak_flops: 1e9\n  log_dir: "
                                << (dir / "logs").string()
                                << "\n  checkpointer: {base_path: " << (dir / "ckpt").string() << "}\n";
  auto [rc, err] = run("train --quiet --config '" + (dir / "c.yaml").string() + "'");
  EXPECT_EQ(rc, 1) << err;
  EXPECT_THAT(err, HasSubstr("validation set holds no complete sequence of 32 tokens"));
  fs::remove_all(dir);
}

TEST(CliMessages, ThreadCountsAreBounded) {
  // Before: trainer.num_threads 100000 started ~935 threads and stalled.
  auto [rc, err] = run("train --config '" + std::string(LEVANTER_SOURCE_DIR) +
                       "/config/gpt2_nano.yaml' --trainer.num_threads 100000 --trainer.num_train_steps 1");
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(err, HasSubstr("trainer.num_threads: 100000 is more than 4x the"));
  auto [rc2, err2] = run("cache --config '" + std::string(LEVANTER_SOURCE_DIR) +
                         "/config/gpt2_nano.yaml' --data.cache_options.num_threads 100000");
  EXPECT_EQ(rc2, 1);
  EXPECT_THAT(err2, HasSubstr("data.cache_options.num_threads: 100000 is more than 4x the"));
}

TEST(CliMessages, TrainOpensTheValidationDataBeforeStepZero) {
  // Before: a missing validation file was found at the first evaluation, steps_per_eval steps in, and the
  // checkpoint due at that step was lost.
  const fs::path dir = fs::temp_directory_path() / ("levanter_cli_val0_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string corpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";
  auto [rc, err] = run("train --config '" + std::string(LEVANTER_SOURCE_DIR) + "/config/gpt2_nano.yaml'" +
                       " --data.train_urls '[\"" + corpus + "\"]' --data.validation_urls '[\"" + dir.string() +
                       "/missing.jsonl\"]' --data.cache_dir '" + (dir / "cache").string() + "' --trainer.log_dir '" +
                       (dir / "logs").string() + "' --trainer.checkpointer.base_path '" + (dir / "ckpt").string() +
                       "' --trainer.num_train_steps 4 --trainer.steps_per_eval 2" +
                       " --model.hidden_dim 16 --model.num_heads 2 --model.num_layers 1 --model.seq_len 32" +
                       " --trainer.train_batch_size 2");
  EXPECT_EQ(rc, 1) << err;
  EXPECT_THAT(err, HasSubstr("data.validation_urls: " + dir.string() + "/missing.jsonl: no such file"));
  EXPECT_THAT(err, Not(HasSubstr("step 1/")));  // no training step was taken
  fs::remove_all(dir);
}

TEST(CliMessages, ConfigCheckOpensDataFilesAndTokenizer) {
  // Before: `config --check` said "ok" for train, validation and tokenizer paths that do not exist.
  const std::string cfg = std::string(LEVANTER_SOURCE_DIR) + "/config/gpt2_nano.yaml";
  const std::string corpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/";
  const std::string data = " --data.train_urls '[\"" + corpus + "train.jsonl.gz\"]' --data.validation_urls '[\"" +
                           corpus + "validation.jsonl.gz\"]'";
  auto [rc, err] = run("config --check '" + cfg + "'" + data);
  EXPECT_EQ(rc, 0) << err;
  EXPECT_THAT(err, HasSubstr("data.train_urls: 1 file; data.validation_urls: 1 file; tokenizer: 50257 tokens"));
  auto [rc2, err2] =
      run("config --check '" + cfg + "'" + data + " --data.validation_urls '[\"/nonexistent/v*.jsonl\"]'");
  EXPECT_EQ(rc2, 1);
  EXPECT_THAT(err2, HasSubstr("data.validation_urls: "));
  EXPECT_THAT(err2, HasSubstr("/nonexistent/v*.jsonl"));
  auto [rc3, err3] = run("config --check '" + cfg + "'" + data + " --data.tokenizer /nonexistent/tokenizer.json");
  EXPECT_EQ(rc3, 1);
  // Before: a garbled doubled path ("data//nonexistent/...") and no "not found".
  EXPECT_THAT(err3, HasSubstr("data.tokenizer: /nonexistent/tokenizer.json: not found"));
}

TEST(CliMessages, ResumingWithAnotherModelShapeNamesTheCheckpointAndTheKeys) {
  // Before: only the tensor was named.
  const fs::path dir = fs::temp_directory_path() / ("levanter_cli_shape_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string corpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/validation.jsonl.gz";
  std::ofstream(dir / "c.yaml") << "data:\n  train_urls: [\"" << corpus
                                << "\"]\n  cache_dir: " << (dir / "cache").string()
                                << "\nmodel: {type: gpt2, hidden_dim: 16, num_heads: 2, num_layers: 1, seq_len: 32}\n"
                                   "trainer:\n  id: shape\n  num_train_steps: 2\n  train_batch_size: 2\n"
                                   "  num_threads: 1\n  peak_flops: 1e9\n  log_dir: "
                                << (dir / "logs").string()
                                << "\n  checkpointer: {base_path: " << (dir / "ckpt").string() << "}\n";
  auto [rc, err] = run("train --quiet --config '" + (dir / "c.yaml").string() + "'");
  ASSERT_EQ(rc, 0) << err;
  auto [rc2, err2] = run("train --quiet --config '" + (dir / "c.yaml").string() +
                         "' --trainer.num_train_steps 4 --model.hidden_dim 32");
  EXPECT_EQ(rc2, 1);
  EXPECT_THAT(err2, HasSubstr((dir / "ckpt" / "shape" / "step-2").string() + ": the checkpoint does not fit"));
  EXPECT_THAT(err2, HasSubstr("model.hidden_dim: 16 in the checkpoint, 32 now"));
  auto [rc3, err3] = run("eval --config '" + (dir / "c.yaml").string() + "' --checkpoint '" +
                         (dir / "ckpt" / "shape").string() + "' --model.num_layers 2");
  EXPECT_EQ(rc3, 1);
  EXPECT_THAT(err3, HasSubstr("model.num_layers: 1 in the checkpoint, 2 now"));
  fs::remove_all(dir);
}

TEST(CliMessages, OverridesAreBlamedOnTheCommandLine) {
  // Before: "config/gpt2_nano.yaml:1: trainer.num_train_steps: expected an integer" for a command-line value.
  const std::string cfg = " --config '" + std::string(LEVANTER_SOURCE_DIR) + "/config/gpt2_nano.yaml'";
  auto [rc1, err1] = run("train" + cfg + " --trainer.num_train_steps abc");
  EXPECT_EQ(rc1, 1);
  EXPECT_THAT(err1,
              HasSubstr("command line (--trainer.num_train_steps): trainer.num_train_steps: expected an integer"));
  auto [rc2, err2] = run("train" + cfg + " --trainer.nmu_train_steps 3");
  EXPECT_EQ(rc2, 1);
  EXPECT_THAT(err2, HasSubstr("command line (--trainer.nmu_train_steps): unknown key 'trainer.nmu_train_steps'"));
  EXPECT_THAT(err2, HasSubstr("did you mean 'num_train_steps'?"));
}

TEST(CliMessages, FifosAsDataOrTokenizerAreRefusedNotWaitedOn) {
  // Before: a FIFO given as a data file or tokenizer blocked forever.
  const fs::path dir = fs::temp_directory_path() / ("levanter_cli_fifo_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  ASSERT_EQ(::mkfifo((dir / "train.jsonl").c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo((dir / "tokenizer.json").c_str(), 0600), 0);
  const std::string cfg = " --config '" + std::string(LEVANTER_SOURCE_DIR) + "/config/gpt2_nano.yaml'";
  auto [rc, err] = run("cache" + cfg + " --data.train_urls '[\"" + (dir / "train.jsonl").string() +
                       "\"]' --data.validation_urls '[]' --data.cache_dir '" + (dir / "cache").string() + "'");
  EXPECT_NE(rc, 0);
  EXPECT_THAT(err, HasSubstr((dir / "train.jsonl").string() + ": not a regular file"));
  auto [rc2, err2] =
      run("tokenize --tokenizer '" + (dir / "tokenizer.json").string() + "' '" + std::string(LEVANTER_SOURCE_DIR) +
          "/data/corpus/austen/validation.jsonl.gz' '" + (dir / "out.jsonl").string() + "'");
  EXPECT_NE(rc2, 0);
  EXPECT_THAT(err2, HasSubstr("not a regular file"));
  fs::remove_all(dir);
}
