// Data parallelism and FSDP over processes (c10d, Gloo over loopback), started by `levanter launch`; FSDP is the
// default (trainer.fsdp_axis: embed), as in Levanter. Two processes with one
// microbatch each give the same loss bits and the same parameters, bit for bit, as one process accumulating the same
// two microbatches (gradients are summed in rank order, the order one process adds its microbatches); a rank that
// dies stops the job with a message naming it; a job killed mid-run and launched again continues to the same bits.
// Each process runs with one thread, as does the single-process reference (GEMM bits depend on the thread count).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "../data/data_testing.h"
#include "levanter/checkpoint/checkpoint.h"
#include "levanter/config/config.h"
#include "levanter/data/cache/builder.h"
#include "levanter/distributed/config.h"
#include "levanter/distributed/process_group.h"
#include "levanter/runtime/file_io.h"
#include "levanter/temp_dir.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

using levanter::testing::slurp;

class DataParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = levanter::testing::fresh_test_dir("levanter_dp");
    const std::string corpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/";
    std::ofstream(root_ / "c.yaml")
        << "data:\n  train_urls: [\"" << corpus << "train.jsonl.gz\"]\n  validation_urls: [\"" << corpus
        << "validation.jsonl.gz\"]\n  cache_dir: " << (root_ / "cache").string()
        << "\nmodel: {type: gpt2, hidden_dim: 32, num_heads: 2, num_layers: 2, seq_len: 32}\n"
           "trainer:\n  num_train_steps: 6\n  train_batch_size: 4\n  steps_per_eval: 100\n"
           "  max_eval_batches: 1\n  num_threads: 1\n  peak_flops: 1e9\n  log_dir: "
        << (root_ / "logs").string() << "\n  checkpointer: {base_path: " << (root_ / "ckpt").string()
        << ", save_interval: 1h, keep: [{every: 2}]}\noptimizer: {learning_rate: 1e-2}\n";
  }
  void TearDown() override { fs::remove_all(root_); }

  // Runs `levanter <args>` with `env` in front; returns the exit status, output in out.txt.
  int levanter(const std::string& args, const std::string& env = "") {
    const std::string cmd =
        env + " " + LEVANTER_BINARY_DIR + "/levanter " + args + " > '" + (root_ / "out.txt").string() + "' 2>&1";
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  }
  std::string config() const { return "--config '" + (root_ / "c.yaml").string() + "'"; }

  std::vector<double> losses(const std::string& id) {
    std::vector<double> out;
    std::ifstream in(root_ / "logs" / id / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto r = nlohmann::json::parse(line);
      if (r.contains("train/loss")) out.push_back(r["train/loss"].get<double>());
    }
    return out;
  }

  void expect_same_checkpoint(const std::string& a, const std::string& b, int64_t step) {
    auto ca = levanter::checkpoint::load_checkpoint((root_ / "ckpt" / a / ("step-" + std::to_string(step))).string());
    auto cb = levanter::checkpoint::load_checkpoint((root_ / "ckpt" / b / ("step-" + std::to_string(step))).string());
    ASSERT_EQ(ca.groups.size(), cb.groups.size());
    int compared = 0;
    for (size_t g = 0; g < ca.groups.size(); ++g) {
      const auto& [name, sd] = ca.groups[g];
      const auto& other = cb.group(name);
      for (const auto& [key, t] : sd) {
        bool found = false;
        for (const auto& [key2, t2] : other) {
          if (key2 != key) continue;
          found = true;
          EXPECT_TRUE(at::equal(t, t2)) << name << "/" << key << " differs";
          ++compared;
        }
        EXPECT_TRUE(found) << name << "/" << key;
      }
    }
    EXPECT_GT(compared, 20);  // parameters and both Adam moments
  }

  // Every parameter in a's checkpoint within `atol` + 1e-4 relative of b's. Tensor parallelism sums its partial
  // products in another order than one process, so its bits differ in the last places; Adam then turns gradients
  // that are rounding noise (a key bias's, zero in exact arithmetic) into steps of about the learning rate whose sign
  // is the noise's, so parameters are compared to a fraction of one step (1e-2 here), not to f32 rounding.
  void expect_close_checkpoint(const std::string& a, const std::string& b, int64_t step, double atol) {
    auto ca = levanter::checkpoint::load_checkpoint((root_ / "ckpt" / a / ("step-" + std::to_string(step))).string());
    auto cb = levanter::checkpoint::load_checkpoint((root_ / "ckpt" / b / ("step-" + std::to_string(step))).string());
    int compared = 0;
    for (const auto& [name, sd] : ca.groups) {
      if (name != "model") continue;
      const auto& other = cb.group(name);
      ASSERT_EQ(sd.size(), other.size()) << name;
      for (size_t i = 0; i < sd.size(); ++i) {
        ASSERT_EQ(sd[i].first, other[i].first);
        ASSERT_TRUE(sd[i].second.sizes().equals(other[i].second.sizes())) << name << "/" << sd[i].first;
        EXPECT_TRUE(at::allclose(sd[i].second, other[i].second, 1e-4, atol))
            << name << "/" << sd[i].first << ": max difference "
            << (sd[i].second - other[i].second).abs().max().item<double>();
        ++compared;
      }
    }
    EXPECT_GT(compared, 10);
  }
  void expect_close_losses(const std::vector<double>& a, const std::vector<double>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 2e-5 * std::abs(b[i])) << "step " << i + 1;
  }
  // Run `a` against run `b` of 6 steps: every step's loss, and every parameter at step 6 (atol 1e-3).
  void expect_close_run(const std::string& a, const std::string& b) {
    const auto want = losses(b);
    ASSERT_EQ(want.size(), 6u);
    expect_close_losses(losses(a), want);
    expect_close_checkpoint(a, b, 6, 1e-3);
  }

  fs::path root_;
};

// Tensor parallelism over 2 processes: Levanter's {mlp: model, heads: model}.
const std::string kTensorParallel = " --trainer.model_axis_size 2 --trainer.tensor_parallel_axes '[mlp, heads]'";
// The same with GPT-2's 50257-word vocabulary split in the LM head's compute: blocks of 25129 and 25128 rows.
const std::string kTensorParallelVocab =
    " --trainer.model_axis_size 2 --trainer.tensor_parallel_axes '[mlp, heads, vocab]'";

}  // namespace

TEST_F(DataParallel, TwoProcessesMatchOneProcessAccumulatingTwoMicrobatchesBitForBit) {
  ASSERT_EQ(levanter("train " + config() + " --trainer.id one --trainer.per_device_parallelism 2"), 0)
      << slurp(root_ / "out.txt");
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + " --trainer.id two"), 0) << slurp(root_ / "out.txt");
  const std::string out = slurp(root_ / "out.txt");
  EXPECT_THAT(out, HasSubstr("[rank 0] levanter: run two"));
  EXPECT_THAT(out, HasSubstr("in each of 2 data-parallel processes"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("[rank 1] levanter: run")));  // one progress output per job
  const auto one = losses("one"), two = losses("two");
  ASSERT_EQ(one.size(), 6u);
  EXPECT_EQ(two, one);
  expect_same_checkpoint("one", "two", 6);
  // Only rank 0 wrote the run's files.
  EXPECT_TRUE(fs::exists(root_ / "logs" / "two" / "run.json"));
}

// Sophia's Hessian estimate (Sophia-H's Hutchinson products, Sophia-G's gradient against sampled labels) is summed over
// replicated data-parallel processes in rank order, as the gradients are: one process's bits.
TEST_F(DataParallel, SophiaInTwoReplicatedProcessesMatchesOneProcessBitForBit) {
  for (const std::string type : {"sophia-h", "sophia-g"}) {
    SCOPED_TRACE(type);
    const std::string opt = " --optimizer.type " + type +
                            " --optimizer.learning_rate 1e-3 --optimizer.update_interval 2 --trainer.fsdp_axis null";
    ASSERT_EQ(levanter("train " + config() + opt + " --trainer.id one" + type + " --trainer.per_device_parallelism 2"),
              0)
        << slurp(root_ / "out.txt");
    ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + opt + " --trainer.id two" + type), 0)
        << slurp(root_ / "out.txt");
    const auto one = losses("one" + type), two = losses("two" + type);
    ASSERT_EQ(one.size(), 6u);
    EXPECT_EQ(two, one);
    expect_same_checkpoint("one" + type, "two" + type, 6);
  }
}

// Sophia under FSDP: its estimate differentiates the whole compute copy (Sophia-H: twice, with the whole probes one
// process draws, each piece then meeting its piece of the probe) and cuts the sums over processes into pieces as the
// step's gradients are, in rank order, so two processes give one process's bits (losses and checkpoint: parameters,
// moments and the estimate h). Gathered per step, the copy is the step's; gathered layer by layer, one is gathered
// for the estimate.
TEST_F(DataParallel, SophiaUnderFsdpMatchesOneProcessBitForBit) {
  for (const std::string type : {"sophia-h", "sophia-g"}) {
    const std::string opt =
        " --optimizer.type " + type + " --optimizer.learning_rate 1e-3 --optimizer.update_interval 2";
    // f32, and mixed precision (the estimate on the bf16 compute copy, as one process differentiates its cast).
    for (const std::string mp : {"f32", "p=f32,c=bfloat16"}) {
      const std::string id = type + (mp == "f32" ? "f32" : "mixed"), o = opt + " --trainer.mp " + mp;
      ASSERT_EQ(levanter("train " + config() + o + " --trainer.id one" + id + " --trainer.per_device_parallelism 2"), 0)
          << slurp(root_ / "out.txt");
      const auto one = losses("one" + id);
      ASSERT_EQ(one.size(), 6u);
      for (const std::string gather : {"step", "layer"}) {
        SCOPED_TRACE(type + " " + mp + " fsdp_gather " + gather);
        ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + o + " --trainer.fsdp_gather " + gather +
                           " --trainer.id " + gather + id),
                  0)
            << slurp(root_ / "out.txt");
        EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("FSDP: embed over data (2 processes)"));
        EXPECT_EQ(losses(gather + id), one);
        expect_same_checkpoint("one" + id, gather + id, 6);
      }
    }
  }
}

// Sophia under tensor parallelism: its estimate (Sophia-G: a forward and backward against sampled labels; Sophia-H:
// Hessian-vector products, which differentiate Megatron's exchanges twice) runs on the pieces with the step's
// exchanges, with the pieces of the probes one process draws, so a run agrees with one process to rounding, as tensor
// parallelism's steps do; also with FSDP over 4 processes (Sophia-H: the probes cut over both mesh axes).
TEST_F(DataParallel, SophiaUnderTensorParallelismMatchesOneProcess) {
  // The Hessian estimates (the EMA h after estimates at steps 2, 4 and 6), every piece joined: within 1% of one
  // process's largest entry (they square or multiply gradients whose last bits differ). Sophia's clipped updates hide
  // h from the losses over 6 steps; h shows an estimate taken on unsummed pieces, or with the wrong probe, at once.
  auto expect_close_h = [&](const std::string& a, const std::string& b) {
    auto ca = levanter::checkpoint::load_checkpoint((root_ / "ckpt" / a / "step-6").string());
    auto cb = levanter::checkpoint::load_checkpoint((root_ / "ckpt" / b / "step-6").string());
    int compared = 0;
    for (const auto& [key, t] : ca.group("opt_state")) {
      if (key.rfind("opt.h.", 0) != 0) continue;
      for (const auto& [key2, t2] : cb.group("opt_state")) {
        if (key2 != key) continue;
        EXPECT_TRUE(t.sizes().equals(t2.sizes())) << key;
        if (!t.sizes().equals(t2.sizes())) continue;
        const double scale = t2.abs().max().item<double>();
        EXPECT_GT(scale, 0) << key;
        EXPECT_LE((t - t2).abs().max().item<double>(), 1e-2 * scale) << key;
        ++compared;
      }
    }
    EXPECT_GT(compared, 10);
  };
  for (const std::string type : {"sophia-g", "sophia-h"}) {
    SCOPED_TRACE(type);
    const std::string opt =
        " --optimizer.type " + type + " --optimizer.learning_rate 1e-3 --optimizer.update_interval 2";
    ASSERT_EQ(levanter("train " + config() + opt + " --trainer.id one" + type), 0) << slurp(root_ / "out.txt");
    ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + opt + kTensorParallel + " --trainer.id tp" + type), 0)
        << slurp(root_ / "out.txt");
    const auto one = losses("one" + type);
    ASSERT_EQ(one.size(), 6u);
    expect_close_losses(losses("tp" + type), one);
    expect_close_h("tp" + type, "one" + type);
  }
  ASSERT_EQ(levanter("train " + config() +
                     " --optimizer.type sophia-h --optimizer.learning_rate 1e-3 --optimizer.update_interval 2"
                     " --trainer.id one4 --trainer.per_device_parallelism 2"),
            0)
      << slurp(root_ / "out.txt");
  ASSERT_EQ(levanter("launch --nproc 4 -- train " + config() +
                     " --optimizer.type sophia-h --optimizer.learning_rate 1e-3 --optimizer.update_interval 2" +
                     kTensorParallel + " --trainer.id both"),
            0)
      << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("FSDP: embed over data (2 processes)"));
  expect_close_losses(losses("both"), losses("one4"));
  expect_close_h("both", "one4");
}

// Mixed precision: each process's bf16 gradients are widened to f32 before the exchange, as one process widens and
// sums its microbatches' gradients, so the bits still match.
TEST_F(DataParallel, TwoProcessesMatchOneProcessInMixedPrecisionToo) {
  const std::string mp = " --trainer.mp p=f32,c=bfloat16";
  ASSERT_EQ(levanter("train " + config() + mp + " --trainer.id one --trainer.per_device_parallelism 2"), 0)
      << slurp(root_ / "out.txt");
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + mp + " --trainer.id two"), 0)
      << slurp(root_ / "out.txt");
  const auto one = losses("one"), two = losses("two");
  ASSERT_EQ(one.size(), 6u);
  EXPECT_EQ(two, one);
  expect_same_checkpoint("one", "two", 6);
}

TEST_F(DataParallel, ADeadRankStopsTheJobWithAMessageNamingIt) {
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = levanter("launch --nproc 2 -- train " + config() + " --trainer.id dead",
                          "LEVANTER_FAULT=train_step_end:2 LEVANTER_FAULT_RANK=1");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string out = slurp(root_ / "out.txt");
  EXPECT_NE(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("levanter launch: rank 1 (pid"));
  EXPECT_THAT(out, HasSubstr("was killed by signal 9"));
  EXPECT_LT(seconds, 60) << out;  // nothing hangs
}

// Started without `levanter launch` (torchrun's environment, set by hand): the rank that survives names the one that
// died, from the pids the ranks exchanged when they connected.
TEST_F(DataParallel, ADeadRankIsNamedWithoutTheLauncher) {
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                          std::to_string(levanter::distributed::free_loopback_port(29517)) + " ";
  const std::string bin = std::string(LEVANTER_BINARY_DIR) + "/levanter train " + config() + " --trainer.id solo";
  const std::string cmd = "(" + env + "RANK=1 LOCAL_RANK=1 LEVANTER_FAULT=train_step_end:2 " + bin + " > '" +
                          (root_ / "out1.txt").string() + "' 2>&1 &); " + env + "RANK=0 LOCAL_RANK=0 " + bin + " > '" +
                          (root_ / "out0.txt").string() + "' 2>&1";
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = std::system(cmd.c_str());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string out = slurp(root_ / "out0.txt");
  EXPECT_NE(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("; rank 1 (pid "));
  EXPECT_THAT(out, HasSubstr(" on this machine) is no longer running"));
  EXPECT_LT(seconds, 60) << out;
}

TEST_F(DataParallel, AJobKilledMidRunAndLaunchedAgainContinuesToTheSameBits) {
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + " --trainer.id whole"), 0) << slurp(root_ / "out.txt");
  // Rank 0 killed after step 3 (checkpoints at 2, 4, 6); the launcher stops rank 1; the same command resumes.
  EXPECT_NE(levanter("launch --nproc 2 -- train " + config() + " --trainer.id parts",
                     "LEVANTER_FAULT=train_step_end:3 LEVANTER_FAULT_RANK=0"),
            0);
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + " --trainer.id parts"), 0) << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("resumed from"));
  EXPECT_EQ(losses("parts"), losses("whole"));
  expect_same_checkpoint("whole", "parts", 6);
}

// Ctrl-C on the launcher: it passes SIGINT to every process once; they agree on a step, save a checkpoint and stop
// (exit status 130, none left running); the same command then resumes to the bits of an uninterrupted run.
TEST_F(DataParallel, CtrlCOnTheLauncherStopsEveryRankWithACheckpointAndTheSameCommandResumes) {
  const std::string run = "launch --nproc 2 -- train " + config() + " --trainer.num_train_steps 24";
  ASSERT_EQ(levanter(run + " --trainer.id whole"), 0) << slurp(root_ / "out.txt");
  const fs::path metrics = root_ / "logs" / "stopped" / "metrics.jsonl", rc = root_ / "rc.txt";
  // In the background; SIGINT once the run has logged 3 steps (at most 30 s later).
  std::ofstream(root_ / "stop.sh") << LEVANTER_BINARY_DIR << "/levanter " << run << " --trainer.id stopped > '"
                                   << (root_ / "out.txt").string() << "' 2>&1 &\npid=$!\n"
                                   << "for i in $(seq 600); do\n  [ -f '" << metrics.string() << "' ] && [ $(grep -c "
                                   << "train/loss '" << metrics.string() << "') -ge 3 ] && break\n  sleep 0.05\ndone\n"
                                   << "kill -INT $pid\nwait $pid\necho $? > '" << rc.string() << "'\n";
  ASSERT_EQ(std::system(("bash '" + (root_ / "stop.sh").string() + "'").c_str()), 0);
  const std::string out = slurp(root_ / "out.txt");
  EXPECT_EQ(slurp(rc), "130\n") << out;
  EXPECT_THAT(out, HasSubstr("[rank 0] levanter: SIGINT: stopping after step"));  // both ranks got it and agreed
  EXPECT_THAT(out, ::testing::Not(HasSubstr("killing them")));                    // they stopped on their own
  const size_t stopped_after = losses("stopped").size();
  EXPECT_GE(stopped_after, 3u) << out;
  EXPECT_LT(stopped_after, 24u) << out;
  ASSERT_EQ(levanter(run + " --trainer.id stopped"), 0) << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("resumed from"));
  EXPECT_EQ(losses("stopped"), losses("whole"));
}

// FSDP (Levanter's default trainer.fsdp_axis: embed): each process holds its pieces of the parameters and of the
// optimizer state and writes only those to a checkpoint; the sums it makes are data parallelism's, so it gives the
// same bits as replicated data parallelism (fsdp_axis: null), which the tests above compare with one process.
TEST_F(DataParallel, FsdpHoldsHalfTheStateInEachProcessAndGivesTheBitsOfReplicatedDataParallelism) {
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + " --trainer.id fsdp"), 0) << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("FSDP: embed over data (2 processes)"));
  // Built as each process's pieces (haliax::CreatePiecesScope): no parameter was made whole and cut.
  EXPECT_THAT(slurp(root_ / "out.txt"), ::testing::Not(HasSubstr("created whole")));
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + " --trainer.id dp --trainer.fsdp_axis null"), 0)
      << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), ::testing::Not(HasSubstr("FSDP")));
  // FSDP asked for as Levanter's parameter_axis_resources, fsdp_axis off: the same run.
  ASSERT_EQ(
      levanter("launch --nproc 2 -- train " + config() +
               " --trainer.id mapped --trainer.fsdp_axis null --trainer.parameter_axis_resources '{embed: data}'"),
      0)
      << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("FSDP: embed over data (2 processes)"));
  const auto fsdp = losses("fsdp");
  ASSERT_EQ(fsdp.size(), 6u);
  EXPECT_EQ(fsdp, losses("dp"));
  EXPECT_EQ(fsdp, losses("mapped"));
  expect_same_checkpoint("fsdp", "dp", 6);  // the pieces put back together are the replicated run's tensors
  // Bytes of tensors each process wrote: process 1 holds only pieces (half of every parameter with an embed axis and
  // of its moments); process 0 also holds the few whole ones (biases without embed).
  const fs::path dp = root_ / "ckpt" / "dp" / "step-6", sharded = root_ / "ckpt" / "fsdp" / "step-6";
  const double whole = fs::file_size(dp / "model.safetensors") + fs::file_size(dp / "opt_state.safetensors");
  double rank[2];
  for (int r = 0; r < 2; ++r) {
    const std::string tail = ".shard-" + std::to_string(r) + "-of-2.safetensors";
    rank[r] = fs::file_size(sharded / ("model" + tail)) + fs::file_size(sharded / ("opt_state" + tail));
  }
  EXPECT_GT(rank[1] / whole, 0.45);
  EXPECT_LE(rank[1] / whole, 0.5);
  EXPECT_GE(rank[0], rank[1]);
  EXPECT_NEAR((rank[0] + rank[1]) / whole, 1.0, 0.01);  // nothing held twice but the headers
  EXPECT_FALSE(fs::exists(sharded / "model.safetensors"));
}

// A checkpoint written by 2 FSDP processes resumes in 1 process, and one written by 1 process resumes in 2: the
// pieces are put back together on loading, and each of the 2 processes reads its pieces from the whole files. Both
// continue to the bits of an uninterrupted single-process run accumulating the same two microbatches.
TEST_F(DataParallel, CheckpointsReshardBetweenOneAndTwoProcesses) {
  const std::string one = "train " + config() + " --trainer.per_device_parallelism 2";
  ASSERT_EQ(levanter(one + " --trainer.id whole"), 0) << slurp(root_ / "out.txt");
  // 2 -> 1: process 0 killed after step 4 (checkpoints at 2 and 4).
  EXPECT_NE(levanter("launch --nproc 2 -- train " + config() + " --trainer.id down",
                     "LEVANTER_FAULT=train_step_end:4 LEVANTER_FAULT_RANK=0"),
            0);
  ASSERT_TRUE(fs::exists(root_ / "ckpt" / "down" / "step-4" / "model.shard-1-of-2.safetensors"));
  ASSERT_EQ(levanter(one + " --trainer.id down"), 0) << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("resumed from"));
  // 1 -> 2
  EXPECT_NE(levanter(one + " --trainer.id up", "LEVANTER_FAULT=train_step_end:4"), 0);
  ASSERT_TRUE(fs::exists(root_ / "ckpt" / "up" / "step-4" / "model.safetensors"));
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + " --trainer.id up"), 0) << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("resumed from"));
  const auto whole = losses("whole");
  ASSERT_EQ(whole.size(), 6u);
  EXPECT_EQ(losses("down"), whole);
  EXPECT_EQ(losses("up"), whole);
  expect_same_checkpoint("whole", "down", 6);
  expect_same_checkpoint("whole", "up", 6);
}

// Four processes (one row each, on two cores): the rank-order sums now have three additions, whose order shows in
// the bits, and FSDP cuts every embed axis in four; still the losses and every tensor of one process accumulating
// the four microbatches.
TEST_F(DataParallel, FourFsdpProcessesMatchOneProcessAccumulatingFourMicrobatches) {
  ASSERT_EQ(levanter("train " + config() + " --trainer.id one --trainer.per_device_parallelism 1"), 0)
      << slurp(root_ / "out.txt");
  ASSERT_EQ(levanter("launch --nproc 4 -- train " + config() + " --trainer.id four"), 0) << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("FSDP: embed over data (4 processes)"));
  const auto one = losses("one");
  ASSERT_EQ(one.size(), 6u);
  EXPECT_EQ(losses("four"), one);
  expect_same_checkpoint("one", "four", 6);
  EXPECT_TRUE(fs::exists(root_ / "ckpt" / "four" / "step-6" / "opt_state.shard-3-of-4.safetensors"));
}

// trainer.fsdp_gather: layer gathers each block's pieces as it runs (and again when gradient checkpointing recomputes
// it in backward) and sums its gradients over the processes as backward leaves it: the same sums, so the same bits as
// one process, in f32 and in mixed precision (gradients widened to f32 before the sum), with checkpointing and without.
TEST_F(DataParallel, FsdpGatheringLayerByLayerGivesTheSameBits) {
  for (const std::string& extra : {std::string(""), std::string(" --trainer.mp p=f32,c=bfloat16"),
                                   std::string(" --model.gradient_checkpointing false")}) {
    SCOPED_TRACE(extra);
    fs::remove_all(root_ / "logs");
    fs::remove_all(root_ / "ckpt");
    ASSERT_EQ(levanter("train " + config() + extra + " --trainer.id one --trainer.per_device_parallelism 2"), 0)
        << slurp(root_ / "out.txt");
    ASSERT_EQ(
        levanter("launch --nproc 2 -- train " + config() + extra + " --trainer.id layer --trainer.fsdp_gather layer"),
        0)
        << slurp(root_ / "out.txt");
    EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("gathered layer by layer"));
    const auto one = losses("one");
    ASSERT_EQ(one.size(), 6u);
    EXPECT_EQ(losses("layer"), one);
    expect_same_checkpoint("one", "layer", 6);
  }
}

// Every process evaluates its share of the validation batches (with the whole model, gathered from FSDP's pieces),
// and the batches' sums are added in batch order: the eval metrics are one process's, bit for bit, and count every
// batch once (a process that skipped its batches, or one that also did the others', would change eval/tokens).
TEST_F(DataParallel, EvaluationIsSplitOverTheProcessesWithTheBitsOfOneProcess) {
  const std::string eval =
      " --trainer.max_eval_batches 5 --trainer.steps_per_eval 3 --trainer.per_device_eval_parallelism 2";
  ASSERT_EQ(levanter("train " + config() + eval + " --trainer.id one --trainer.per_device_parallelism 2"), 0)
      << slurp(root_ / "out.txt");
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + eval + " --trainer.id two"), 0)
      << slurp(root_ / "out.txt");
  auto evals = [&](const std::string& id) {
    std::vector<std::pair<double, double>> out;
    std::ifstream in(root_ / "logs" / id / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto r = nlohmann::json::parse(line);
      if (r.contains("eval/loss")) out.emplace_back(r["eval/loss"].get<double>(), r["eval/tokens"].get<double>());
    }
    return out;
  };
  const auto one = evals("one");
  ASSERT_EQ(one.size(), 2u);         // steps 3 and 6
  EXPECT_EQ(one[0].second, 5 * 62);  // 5 batches of 2 x 32 tokens (31 predicted positions each)
  EXPECT_EQ(evals("two"), one);
}

// --- tensor parallelism (trainer.model_axis_size, tensor_parallel_axes) ------------------------------------------

// Each of 2 processes holds and computes with half of every block's heads and MLP (GPT-2's code unchanged: haliax's
// contractions sum the partial products across the processes); the partial sums add in another order than one
// process's GEMM, so the run agrees with one process to f32 rounding, not bit for bit. With `vocab` each process
// also computes half of the LM head and of the softmax (the parameters keep the vocabulary whole).
TEST_F(DataParallel, TensorParallelismOverTwoProcessesMatchesOneProcess) {
  ASSERT_EQ(levanter("train " + config() + " --trainer.id one"), 0) << slurp(root_ / "out.txt");
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + kTensorParallelVocab + " --trainer.id tp"), 0)
      << slurp(root_ / "out.txt");
  const std::string out = slurp(root_ / "out.txt");
  EXPECT_THAT(out, HasSubstr("tensor parallelism: heads, mlp over model (2 processes)"));
  EXPECT_THAT(out, HasSubstr("; vocab split in compute (LM head)"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("FSDP")));  // one replica: nothing to cut over `data`
  EXPECT_THAT(out, ::testing::Not(HasSubstr("created whole")));
  expect_close_run("tp", "one");
  // The same split written as Levanter's explicit mappings: the compute mapping sends the three axes to model (the
  // parameter mapping inherits it), so the run is the tensor_parallel_axes run, bit for bit.
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() +
                     " --trainer.model_axis_size 2 --trainer.axis_resources '{mlp: model, heads: model, vocab: model}'"
                     " --trainer.parameter_axis_resources '{heads: model}' --trainer.id mapped"),
            0)
      << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("tensor parallelism: heads, mlp over model (2 processes)"));
  EXPECT_EQ(losses("mapped"), losses("tp"));
  // Each process wrote its own pieces (the checkpoint is put back together by loading, above).
  const fs::path step = root_ / "ckpt" / "tp" / "step-6";
  EXPECT_TRUE(fs::exists(step / "model.shard-1-of-2.safetensors"));
  EXPECT_TRUE(fs::exists(step / "opt_state.shard-1-of-2.safetensors"));
  // The vocabulary alone: no parameter in pieces, the LM head's compute divided.
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() +
                     " --trainer.model_axis_size 2 --trainer.tensor_parallel_axes '[vocab]' --trainer.id vocab"),
            0)
      << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"),
              HasSubstr("tensor parallelism: no parameter in pieces over model (2 processes); vocab split in compute"));
  expect_close_losses(losses("vocab"), losses("one"));
}

// Four processes: two data-parallel replicas (FSDP over `data`) of two tensor-parallel processes each; every
// parameter of a block is cut along embed over `data` and along heads or mlp over `model`, and the checkpoint's
// pieces come from a two-axis mesh.
TEST_F(DataParallel, FsdpWithTensorParallelismInFourProcessesMatchesOneProcess) {
  ASSERT_EQ(levanter("train " + config() + " --trainer.id one --trainer.per_device_parallelism 2"), 0)
      << slurp(root_ / "out.txt");
  ASSERT_EQ(levanter("launch --nproc 4 -- train " + config() + kTensorParallelVocab + " --trainer.id both"), 0)
      << slurp(root_ / "out.txt");
  const std::string out = slurp(root_ / "out.txt");
  EXPECT_THAT(out, HasSubstr("tensor parallelism: heads, mlp over model (2 processes)"));
  EXPECT_THAT(out, HasSubstr("FSDP: embed over data (2 processes)"));
  EXPECT_THAT(out, HasSubstr("in each of 2 data-parallel replicas of 2 processes"));
  // Built as each process's pieces of both axes (haliax::CreatePiecesScope): no parameter was made whole and cut.
  EXPECT_THAT(out, ::testing::Not(HasSubstr("created whole")));
  expect_close_run("both", "one");
  EXPECT_TRUE(fs::exists(root_ / "ckpt" / "both" / "step-6" / "model.shard-3-of-4.safetensors"));
}

// Replica axes (Levanter's replica_ici_axis_size): 4 processes as 2 replicas of 2 FSDP processes each. The rows of
// each batch are split over all 4; FSDP cuts over the 2 of a replica, and each piece's gradient is then summed over
// the replicas, so the sums are grouped (g0 + g1) + (g2 + g3) and agree with one process to rounding. The second
// replica holds copies: it writes nothing to the checkpoint.
TEST_F(DataParallel, ReplicaAxesHoldCopiesOfFsdpPiecesAndMatchOneProcess) {
  ASSERT_EQ(levanter("train " + config() + " --trainer.id one --trainer.per_device_parallelism 1"), 0)
      << slurp(root_ / "out.txt");
  ASSERT_EQ(levanter("launch --nproc 4 -- train " + config() + " --trainer.id rep --trainer.replica_ici_axis_size 2"),
            0)
      << slurp(root_ / "out.txt");
  const std::string out = slurp(root_ / "out.txt");
  EXPECT_THAT(out, HasSubstr("FSDP: embed over data (2 processes)"));
  EXPECT_THAT(out, HasSubstr("in each of 4 data-parallel processes"));
  expect_close_run("rep", "one");
  const fs::path step = root_ / "ckpt" / "rep" / "step-6";
  EXPECT_TRUE(fs::exists(step / "model.shard-1-of-4.safetensors"));
  EXPECT_FALSE(fs::exists(step / "model.shard-2-of-4.safetensors"));  // replica 1's pieces are replica 0's
  EXPECT_FALSE(fs::exists(step / "model.shard-3-of-4.safetensors"));
  // Replicated data parallelism over the same 4 processes sums in rank order: one process's bits.
  ASSERT_EQ(levanter("launch --nproc 4 -- train " + config() +
                     " --trainer.id repdp --trainer.replica_ici_axis_size 2 --trainer.fsdp_axis null"),
            0)
      << slurp(root_ / "out.txt");
  EXPECT_EQ(losses("repdp"), losses("one"));
  EXPECT_NE(levanter("launch --nproc 2 -- train " + config() + " --trainer.id odd --trainer.replica_ici_axis_size 3"),
            0);
  EXPECT_THAT(slurp(root_ / "out.txt"),
              HasSubstr("num_devices (2) is not divisible by replica_dcn_axis_size * replica_ici_axis_size * "
                        "model_axis_size (1 * 3 * 1)"));
}

// Same config, process count and mesh: the same bits, also across a rank killed mid-run and the job launched again.
TEST_F(DataParallel, TensorParallelRunsRepeatAndResumeBitForBit) {
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + kTensorParallel + " --trainer.id whole"), 0)
      << slurp(root_ / "out.txt");
  EXPECT_NE(levanter("launch --nproc 2 -- train " + config() + kTensorParallel + " --trainer.id parts",
                     "LEVANTER_FAULT=train_step_end:3 LEVANTER_FAULT_RANK=1"),
            0);
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + kTensorParallel + " --trainer.id parts"), 0)
      << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("resumed from"));
  const auto whole = losses("whole");
  ASSERT_EQ(whole.size(), 6u);
  EXPECT_EQ(losses("parts"), whole);
  expect_same_checkpoint("whole", "parts", 6);
}

// A checkpoint cut by FSDP over 2 processes resumes under tensor parallelism, and one cut by tensor parallelism
// resumes in one process: each process reads its own blocks of the new mesh from the old mesh's pieces.
TEST_F(DataParallel, CheckpointsReshardFromFsdpToTensorParallelismAndToOneProcess) {
  ASSERT_EQ(levanter("train " + config() + " --trainer.id whole --trainer.per_device_parallelism 2"), 0)
      << slurp(root_ / "out.txt");
  EXPECT_NE(levanter("launch --nproc 2 -- train " + config() + " --trainer.id moved",
                     "LEVANTER_FAULT=train_step_end:2 LEVANTER_FAULT_RANK=0"),
            0);
  ASSERT_TRUE(fs::exists(root_ / "ckpt" / "moved" / "step-2" / "model.shard-1-of-2.safetensors"));  // FSDP's pieces
  EXPECT_NE(levanter("launch --nproc 2 -- train " + config() + kTensorParallel + " --trainer.id moved",
                     "LEVANTER_FAULT=train_step_end:4 LEVANTER_FAULT_RANK=0"),
            0);
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("resumed from"));
  const nlohmann::json md = nlohmann::json::parse(slurp(root_ / "ckpt" / "moved" / "step-4" / "metadata.json"));
  EXPECT_EQ(md["sharding"]["dims"]["model"]["transformer.h.0.mlp.c_fc.weight"], nlohmann::json({{"model", 1}}));
  ASSERT_EQ(levanter("train " + config() + " --trainer.id moved --trainer.per_device_parallelism 2"), 0)
      << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("resumed from"));
  expect_close_run("moved", "whole");
}

// initialize_from_hf under FSDP and tensor parallelism: the model is cut after its weights are read (the files hold it
// whole), so 2 processes start from the weights one process starts from: FSDP's losses are its bits, tensor
// parallelism's agree to rounding.
TEST_F(DataParallel, HuggingFaceInitialisationIsCutIntoEachProcesssPieces) {
  ASSERT_EQ(levanter("train " + config() + " --trainer.id src"), 0) << slurp(root_ / "out.txt");
  const std::string hf = (root_ / "hf").string();
  ASSERT_EQ(levanter("export " + config() + " --checkpoint '" + (root_ / "ckpt" / "src").string() + "' --output '" +
                     hf + "'"),
            0)
      << slurp(root_ / "out.txt");
  const std::string from = " --initialize_from_hf '" + hf + "'";
  ASSERT_EQ(levanter("train " + config() + from + " --trainer.id one --trainer.per_device_parallelism 2"), 0)
      << slurp(root_ / "out.txt");
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + from + " --trainer.id fsdp"), 0)
      << slurp(root_ / "out.txt");
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("initialised from " + hf));
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + from + kTensorParallel + " --trainer.id tp"), 0)
      << slurp(root_ / "out.txt");
  const auto one = losses("one");
  ASSERT_EQ(one.size(), 6u);
  EXPECT_LT(one[0], losses("src")[0] - 0.05);  // started from the trained weights, not from a fresh initialisation
  EXPECT_EQ(losses("fsdp"), one);
  expect_same_checkpoint("one", "fsdp", 6);
  expect_close_losses(losses("tp"), one);
  // trainer.initialize_from (a Levanter checkpoint, optimizer state included) read as pieces, gathered layer by layer
  // in mixed precision: the same bits as one process (two steps past the checkpoint's 6).
  const std::string lev = " --trainer.initialize_from '" + (root_ / "ckpt" / "src" / "step-6").string() +
                          "' --trainer.num_train_steps 8 --trainer.mp p=f32,c=bfloat16";
  ASSERT_EQ(levanter("train " + config() + lev + " --trainer.id lev1 --trainer.per_device_parallelism 2"), 0)
      << slurp(root_ / "out.txt");
  ASSERT_EQ(levanter("launch --nproc 2 -- train " + config() + lev + " --trainer.id lev2 --trainer.fsdp_gather layer"),
            0)
      << slurp(root_ / "out.txt");
  ASSERT_EQ(losses("lev1").size(), 2u);
  EXPECT_EQ(losses("lev2"), losses("lev1"));
  expect_same_checkpoint("lev1", "lev2", 8);
}

TEST_F(DataParallel, TensorParallelMeshesThatDoNotFitAreRefusedByName) {
  EXPECT_NE(levanter("launch --nproc 2 -- train " + config() +
                     " --trainer.id odd --trainer.model_axis_size 3 --trainer.tensor_parallel_axes '[mlp, heads]'"),
            0);
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("num_devices (2) is not divisible by model_axis_size (3)"));
  EXPECT_NE(levanter("launch --nproc 2 -- train " + config() + " --trainer.id odd --trainer.model_axis_size 2"), 0);
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("trainer.tensor_parallel_axes: empty, but model_axis_size is 2"));
  EXPECT_NE(
      levanter("launch --nproc 2 -- train " + config() + kTensorParallel + " --trainer.id odd --model.num_heads 1"), 0);
  EXPECT_THAT(slurp(root_ / "out.txt"),
              HasSubstr("axis 'heads' of size 1 does not divide evenly over mesh axis 'model' of size 2"));
  // Only axes the model's code handles in pieces (a LayerNorm over a piece of embed would be wrong, not an error),
  // and none that FSDP cuts too.
  EXPECT_NE(levanter("launch --nproc 2 -- train " + config() +
                     " --trainer.id odd --trainer.model_axis_size 2 --trainer.tensor_parallel_axes '[embed]'"),
            0);
  EXPECT_THAT(slurp(root_ / "out.txt"),
              HasSubstr("trainer.tensor_parallel_axes: 'embed' cannot be split in a gpt2 model (it can split: heads, "
                        "mlp, vocab)"));
  EXPECT_NE(levanter("launch --nproc 2 -- train " + config() + kTensorParallel +
                     " --trainer.id odd --trainer.fsdp_axis '[mlp]'"),
            0);
  EXPECT_THAT(slurp(root_ / "out.txt"), HasSubstr("trainer.fsdp_axis: 'mlp' is also in trainer.tensor_parallel_axes"));
}

TEST_F(DataParallel, AnAxisThatDoesNotSplitOverTheProcessesIsNamed) {
  EXPECT_NE(
      levanter("launch --nproc 4 -- train " + config() + " --trainer.id odd --model.hidden_dim 30 --model.num_heads 2"),
      0);
  EXPECT_THAT(slurp(root_ / "out.txt"),
              HasSubstr("axis 'embed' of size 30 does not divide evenly over mesh axis 'data' of size 4"));
}

TEST_F(DataParallel, BatchesThatDoNotSplitAreRefusedWithLevantersMessage) {
  // The command reaches the processes verbatim ("[]" included, which an argument parser could take for an empty list).
  EXPECT_NE(levanter("launch --nproc 2 -- train " + config() +
                     " --trainer.id odd --trainer.checkpointer.keep '[]' --trainer.train_batch_size 3"),
            0);
  EXPECT_THAT(slurp(root_ / "out.txt"),
              HasSubstr("train_batch_size (3) must be divisible by per_device_parallelism * data_axis_size"));
}

// --- where a process stands: explicit keys, torchrun's and SLURM's environments ------------------------------------

namespace {
using levanter::distributed::DistributedConfig;
using levanter::distributed::resolve_process;
std::function<std::optional<std::string>(const std::string&)> env(std::map<std::string, std::string> m) {
  return [m](const std::string& k) -> std::optional<std::string> {
    auto it = m.find(k);
    return it == m.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
}
}  // namespace

TEST(DistributedConfig, ResolvesFromKeysTorchrunAndSlurm) {
  auto single = resolve_process(DistributedConfig{}, env({}));
  EXPECT_EQ(single.world_size, 1);
  EXPECT_FALSE(single.distributed());

  auto torchrun = resolve_process(DistributedConfig{}, env({{"RANK", "3"},
                                                            {"WORLD_SIZE", "4"},
                                                            {"LOCAL_RANK", "1"},
                                                            {"MASTER_ADDR", "10.0.0.7"},
                                                            {"MASTER_PORT", "1234"}}));
  EXPECT_EQ(torchrun.rank, 3);
  EXPECT_EQ(torchrun.world_size, 4);
  EXPECT_EQ(torchrun.local_rank, 1);
  EXPECT_EQ(torchrun.master_addr, "10.0.0.7");
  EXPECT_EQ(torchrun.master_port, 1234);
  EXPECT_EQ(torchrun.source, "torchrun environment");

  auto slurm = resolve_process(DistributedConfig{}, env({{"SLURM_PROCID", "5"},
                                                         {"SLURM_NTASKS", "8"},
                                                         {"SLURM_LOCALID", "1"},
                                                         {"SLURM_JOB_ID", "123456"},
                                                         {"SLURM_STEP_NODELIST", "gpu[07-10,12],cpu1"}}));
  EXPECT_EQ(slurm.rank, 5);
  EXPECT_EQ(slurm.world_size, 8);
  EXPECT_EQ(slurm.master_addr, "gpu07");
  EXPECT_EQ(slurm.master_port, 20000 + 123456 % 20000);

  DistributedConfig explicit_;
  explicit_.coordinator_address = "host:9999";
  explicit_.num_processes = 2;
  explicit_.process_id = 1;
  auto e = resolve_process(explicit_, env({{"RANK", "0"}, {"WORLD_SIZE", "4"}}));  // the keys win
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.world_size, 2);
  EXPECT_EQ(e.master_addr, "host");
  EXPECT_EQ(e.master_port, 9999);

  EXPECT_EQ(levanter::distributed::first_slurm_host("node01"), "node01");
  EXPECT_EQ(levanter::distributed::first_slurm_host("a[3,5-7],b"), "a3");
}

TEST(DistributedConfig, MistakesAreNamed) {
  auto error = [](const DistributedConfig& c, std::map<std::string, std::string> m) -> std::string {
    try {
      resolve_process(c, env(std::move(m)));
    } catch (const levanter::config::ConfigError& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_THAT(error({}, {{"WORLD_SIZE", "2"}, {"RANK", "0"}}), HasSubstr("MASTER_ADDR or MASTER_PORT is not set"));
  EXPECT_THAT(error({}, {{"WORLD_SIZE", "2"}}), HasSubstr("RANK is not"));
  EXPECT_THAT(error({}, {{"WORLD_SIZE", "2"}, {"RANK", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}),
              HasSubstr("rank 2 (from the torchrun environment) is not in 0..1"));
  DistributedConfig partial;
  partial.num_processes = 2;
  EXPECT_THAT(error(partial, {}), HasSubstr("give coordinator_address, num_processes and process_id together"));
  DistributedConfig nccl;
  nccl.backend = "nccl";
  try {
    nccl.validate();
    FAIL();
  } catch (const levanter::config::ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("trainer.distributed.backend"));
  }
}

TEST(ProcessGroup, OneProcessIsTheIdentity) {
  auto pg = levanter::distributed::ProcessGroup::connect({}, std::chrono::seconds(5));
  std::vector<at::Tensor> t{at::arange(5, at::kFloat)};
  pg->sum_in_rank_order(t);
  EXPECT_TRUE(at::equal(t[0], at::arange(5, at::kFloat)));
  EXPECT_TRUE(pg->any(true));
  EXPECT_FALSE(pg->any(false));
}

// --- the collectives of FSDP, in two forked processes over loopback ------------------------------------------------

namespace {

// What rank r holds before a collective: distinct, deterministic values with fractions, so that the order of a sum
// shows in its bits.
at::Tensor rank_tensor(int r, std::vector<int64_t> shape, uint64_t salt) {
  at::Tensor t = at::arange(at::IntArrayRef(shape).size() ? c10::multiply_integers(shape) : 1, at::kFloat);
  return (at::sin(t * (0.37 + 0.11 * r) + static_cast<double>(salt)) * (1 + 1000 * r)).reshape(shape);
}

// Runs `body(pg)` as rank 0 here and rank 1 in a forked child; the child's failures come back as its exit status.
void in_two_processes(const std::function<bool(levanter::distributed::ProcessGroup&)>& body) {
  levanter::distributed::ProcessInfo info;
  info.world_size = 2;
  info.master_port = levanter::distributed::free_loopback_port(29611);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int code = 1;
    // One thread: OpenMP's pool, if the parent started one, does not survive the fork (a parallel region here would
    // wait for threads that do not exist).
    at::set_num_threads(1);
    try {
      info.rank = 1;
      auto pg = levanter::distributed::ProcessGroup::connect(info, std::chrono::seconds(30));
      code = body(*pg) ? 0 : 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank 1: %s\n", e.what());
      code = 3;
    }
    std::fflush(stderr);
    ::_exit(code);
  }
  info.rank = 0;
  auto pg = levanter::distributed::ProcessGroup::connect(info, std::chrono::seconds(30));
  EXPECT_TRUE(body(*pg)) << "rank 0";
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rank 1 failed (status " << status << ")";
}

}  // namespace

// Each rank receives its block of the sum over ranks: the bits of sum_in_rank_order's result, block by block (with
// two processes the order of the one addition cannot show; the code is sum_in_rank_order's); the tensors split along
// different dimensions and share buckets.
TEST(ProcessGroup, ReduceScatterGivesEachRankItsBlockOfTheRankOrderSum) {
  const std::vector<std::vector<int64_t>> shapes{{4, 6}, {6}, {2, 4, 3}, {3, 8}};
  const std::vector<int64_t> dims{1, 0, 1, 1};
  in_two_processes([&](levanter::distributed::ProcessGroup& pg) {
    std::vector<at::Tensor> full, shards, summed;
    for (size_t i = 0; i < shapes.size(); ++i) {
      full.push_back(rank_tensor(pg.rank(), shapes[i], i));
      auto s = shapes[i];
      s[dims[i]] /= 2;
      shards.push_back(at::full(s, 7.0, at::kFloat));
      summed.push_back(full.back().clone());
    }
    pg.sum_in_rank_order(summed);
    pg.reduce_scatter_in_rank_order(full, dims, shards, /*bucket_elements=*/20);  // several buckets
    bool ok = true;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const int64_t k = shapes[i][dims[i]] / 2;
      ok = ok && at::equal(shards[i], summed[i].narrow(dims[i], pg.rank() * k, k));
      // and the sum is rank 0's block plus rank 1's
      const at::Tensor expect = rank_tensor(0, shapes[i], i).narrow(dims[i], pg.rank() * k, k) +
                                rank_tensor(1, shapes[i], i).narrow(dims[i], pg.rank() * k, k);
      ok = ok && at::equal(shards[i], expect);
    }
    return ok;
  });
}

// The inverse: every rank's block put in its place, converted to the full tensor's dtype as to() rounds.
TEST(ProcessGroup, AllGatherPutsEveryRanksBlockInPlace) {
  in_two_processes([&](levanter::distributed::ProcessGroup& pg) {
    const at::Tensor whole_a = rank_tensor(5, {3, 8}, 1), whole_b = rank_tensor(6, {10}, 2);
    std::vector<at::Tensor> shards{whole_a.narrow(1, pg.rank() * 4, 4).contiguous(),
                                   whole_b.narrow(0, pg.rank() * 5, 5).contiguous()};
    std::vector<at::Tensor> full{at::zeros({3, 8}, at::kBFloat16), at::zeros({10}, at::kFloat)};
    pg.all_gather(shards, {1, 0}, full, /*bucket_elements=*/7);
    bool ok = at::equal(full[0], whole_a.to(at::kBFloat16)) && at::equal(full[1], whole_b);
    // bfloat16 pieces (which Gloo cannot carry as such) arrive bit for bit.
    std::vector<at::Tensor> bf{shards[0].to(at::kBFloat16)}, bf_full{at::zeros({3, 8}, at::kBFloat16)};
    pg.all_gather(bf, {1}, bf_full);
    ok = ok && at::equal(bf_full[0], whole_a.to(at::kBFloat16));
    // and bfloat16 sums (trainer.mp p=bf16): moved as float16 bits, added in bfloat16 here.
    const at::Tensor a0 = rank_tensor(0, {2, 6}, 3).to(at::kBFloat16), a1 = rank_tensor(1, {2, 6}, 3).to(at::kBFloat16);
    std::vector<at::Tensor> sum{(pg.rank() == 0 ? a0 : a1).clone()};
    pg.sum_in_rank_order(sum);
    std::vector<at::Tensor> piece{at::empty({2, 3}, at::kBFloat16)};
    pg.reduce_scatter_in_rank_order({(pg.rank() == 0 ? a0 : a1).clone()}, {1}, piece);
    ok = ok && at::equal(sum[0], a0 + a1) && at::equal(piece[0], (a0 + a1).narrow(1, pg.rank() * 3, 3));
    const std::string b = pg.broadcast(pg.rank() == 0 ? "from zero" : "ignored");
    const auto all = pg.all_gather(std::string("rank ") + std::to_string(pg.rank()));
    return ok && b == "from zero" && all == std::vector<std::string>{"rank 0", "rank 1"};
  });
}

// --- checkpoints written in pieces by two processes (checkpoint::Sharding), read back whole
// -----------------------------

namespace {

// Rewrites <dir>/manifest.json from the files it should list (names in order), with their sizes and CRC32s: a test's
// way to make a checkpoint whose manifest verifies but whose content is wrong.
void rewrite_manifest(const fs::path& dir, const std::vector<std::string>& names) {
  nlohmann::json m = nlohmann::json::parse(slurp(dir / "manifest.json"));
  nlohmann::json files = nlohmann::json::array();
  for (const std::string& name : names) {
    int64_t size = 0;
    uint32_t crc = 0;
    levanter::runtime::checksum_file((dir / name).string(), &size, &crc);
    files.push_back({{"name", name}, {"size", size}, {"crc32", levanter::runtime::Crc32::hex(crc)}});
  }
  m["files"] = files;
  std::ofstream(dir / "manifest.json") << m.dump(2) << "\n";
}

std::string load_error(const fs::path& dir) {
  try {
    levanter::checkpoint::load_checkpoint(dir.string());
  } catch (const levanter::checkpoint::CheckpointError& e) {
    return e.what();
  }
  return "(loaded)";
}

}  // namespace

TEST(ShardedCheckpoint, PiecesFromTwoProcessesLoadAsTheWholeAndBadPiecesAreNamed) {
  const fs::path base = levanter::testing::fresh_test_dir("levanter_sharded_ckpt");
  const at::Tensor w = at::arange(24, at::kFloat).reshape({4, 6}), b = at::arange(3, at::kFloat);
  in_two_processes([&](levanter::distributed::ProcessGroup& pg) {
    levanter::checkpoint::Sharding sh;
    sh.rank = pg.rank();
    sh.processes = 2;
    sh.dims = {{"model", {{"w", {{"data", 1}}}}}};
    sh.broadcast = [&pg](const std::string& v) { return pg.broadcast(v); };
    sh.all_gather = [&pg](const std::string& v) { return pg.all_gather(v); };
    sh.max = [&pg](int64_t v) { return pg.max(v); };
    levanter::checkpoint::TensorGroups groups{{"model", {{"w", w.narrow(1, pg.rank() * 3, 3).contiguous()}, {"b", b}}}};
    const std::string path =
        levanter::checkpoint::save_checkpoint(base.string(), 3, groups, nlohmann::json::object(), false, &sh);
    return path == (base / "step-3").string();
  });
  const fs::path dir = base / "step-3";
  ASSERT_TRUE(fs::exists(dir / "model.shard-0-of-2.safetensors"));
  ASSERT_TRUE(fs::exists(dir / "model.shard-1-of-2.safetensors"));
  auto c = levanter::checkpoint::load_checkpoint(dir.string());
  const auto& model = c.group("model");
  ASSERT_EQ(model.size(), 2u);
  EXPECT_EQ(model[0].first, "w");
  EXPECT_TRUE(at::equal(model[0].second, w));  // the pieces in process order
  EXPECT_EQ(model[1].first, "b");
  EXPECT_TRUE(at::equal(model[1].second, b));  // whole, from process 0 only

  // A manifest that leaves out process 1's file.
  rewrite_manifest(dir, {"model.shard-0-of-2.safetensors", "metadata.json"});
  EXPECT_THAT(load_error(dir), HasSubstr("model.shard-1-of-2.safetensors: missing (the manifest does not list it)"));
  // A piece numbered for another process count.
  fs::rename(dir / "model.shard-1-of-2.safetensors", dir / "model.shard-1-of-3.safetensors");
  rewrite_manifest(dir, {"model.shard-0-of-2.safetensors", "model.shard-1-of-3.safetensors", "metadata.json"});
  EXPECT_THAT(load_error(dir), HasSubstr("model.shard-1-of-3.safetensors: piece 1 of 3, but metadata.json says 2"));
  fs::rename(dir / "model.shard-1-of-3.safetensors", dir / "model.shard-1-of-2.safetensors");
  // A split dimension the tensor does not have.
  nlohmann::json md = nlohmann::json::parse(slurp(dir / "metadata.json"));
  md["sharding"]["dims"]["model"]["w"] = 7;
  std::ofstream(dir / "metadata.json") << md.dump(2) << "\n";
  rewrite_manifest(dir, {"model.shard-0-of-2.safetensors", "model.shard-1-of-2.safetensors", "metadata.json"});
  EXPECT_THAT(load_error(dir),
              HasSubstr("metadata.json: sharding.dims.model.w is 7, not a dimension of the 2-d tensor"));
  fs::remove_all(base);
}

// A checkpoint written in pieces by two processes (and one written whole) read block by block, as a process of another
// mesh reads its own pieces on resume: every block equals the same block of the whole tensor, for cuts along any
// dimension, two mesh axes on one dimension, a block crossing the pieces' boundaries, a column block read through the
// bounce buffer in two chunks, bf16 and bool. A corrupt file is found even when no block comes from it, and a layout
// that does not divide the tensor is an error, not a corrupt checkpoint to skip.
TEST(ShardedCheckpoint, BlocksOfAnyMeshEqualTheWholeTensorsBlocks) {
  namespace ck = levanter::checkpoint;
  const fs::path base = levanter::testing::fresh_test_dir("levanter_ckpt_blocks");
  ck::StateDict whole{{"w", rank_tensor(0, {4, 8}, 1)},
                      {"v", rank_tensor(0, {8, 4}, 2)},
                      {"s", rank_tensor(0, {3, 4, 8}, 3)},
                      {"big", rank_tensor(0, {24000, 200}, 4)},  // pieces of 9.6 MB: two chunks of the bounce buffer
                      {"h", rank_tensor(0, {4, 2}, 5).to(at::kBFloat16)},
                      {"b", rank_tensor(0, {3}, 6)},
                      {"flag", at::tensor(std::vector<int64_t>{1, 0, 1, 1, 0}).to(at::kBool)}};
  const std::map<std::string, int64_t> cut_dim{{"w", 1}, {"v", 0}, {"s", 2}, {"big", 1}, {"h", 0}};
  std::map<std::string, std::map<std::string, int64_t>> saved_dims;
  for (const auto& [key, d] : cut_dim) saved_dims[key] = {{"data", d}};
  in_two_processes([&](levanter::distributed::ProcessGroup& pg) {
    ck::Sharding sh;
    sh.rank = pg.rank();
    sh.processes = 2;
    sh.dims = {{"model", saved_dims}};
    sh.broadcast = [&pg](const std::string& v) { return pg.broadcast(v); };
    sh.all_gather = [&pg](const std::string& v) { return pg.all_gather(v); };
    sh.max = [&pg](int64_t v) { return pg.max(v); };
    ck::StateDict mine;
    for (const auto& [key, t] : whole) {
      auto c = cut_dim.find(key);
      mine.emplace_back(key, c == cut_dim.end() ? t : t.chunk(2, c->second)[pg.rank()].contiguous());
    }
    ck::save_checkpoint(base.string(), 1, {{"model", mine}}, nlohmann::json::object(), false, &sh);
    return true;
  });
  ck::save_checkpoint((base / "whole").string(), 1, {{"model", whole}});
  auto block_of_whole = [&](const std::string& key, const ck::Block& b) {
    at::Tensor t;
    for (const auto& [k, v] : whole)
      if (k == key) t = v;
    for (size_t d = 0; d < b.size(); ++d) t = t.narrow(static_cast<int64_t>(d), b[d].first, b[d].second - b[d].first);
    return t;
  };
  // Loads `dir` with `block_of` and checks every tensor against the whole's block; returns how many were cut.
  auto check = [&](const fs::path& dir, const ck::BlockOf& block_of, const std::string& what) {
    ck::Checkpoint c = ck::load_checkpoint(dir.string(), {"model"}, block_of);
    const ck::StateDict& got = c.group("model");
    EXPECT_EQ(got.size(), whole.size()) << what;
    int cut = 0;
    for (const auto& [key, t] : got) {
      const at::Tensor& w = block_of_whole(key, {});
      const ck::Block b = block_of("model", key, w.sizes().vec());
      const at::Tensor want = block_of_whole(key, b);
      cut += want.numel() < w.numel();
      EXPECT_EQ(t.scalar_type(), w.scalar_type()) << what << " " << key;
      EXPECT_TRUE(t.sizes() == want.sizes() && at::equal(t, want)) << what << " " << key;
    }
    return cut;
  };
  for (const fs::path& dir : {base / "step-1", base / "whole" / "step-1"}) {
    // Four processes cutting the same dimensions.
    for (int r = 0; r < 4; ++r) {
      ck::Sharding sh;
      sh.rank = r;
      sh.processes = 4;
      sh.mesh = {{"data", 4}};
      sh.dims = {{"model", saved_dims}};
      EXPECT_EQ(check(dir, ck::blocks_of_process(sh), dir.string() + " data:4 rank " + std::to_string(r)), 5);
    }
    // FSDP and tensor parallelism: w cut on both dimensions, big cut twice on one (data outside, model inside).
    for (int r = 0; r < 4; ++r) {
      ck::Sharding sh;
      sh.rank = r;
      sh.processes = 4;
      sh.mesh = {{"data", 2}, {"model", 2}};
      sh.dims = {{"model", {{"w", {{"data", 1}, {"model", 0}}}, {"big", {{"data", 1}, {"model", 1}}}}}};
      EXPECT_EQ(check(dir, ck::blocks_of_process(sh), dir.string() + " data:2 model:2 rank " + std::to_string(r)), 2);
      const ck::Block b = ck::blocks_of_process(sh)("model", "big", {24000, 200});
      EXPECT_EQ(b[1].first, r * 50) << "rank " << r;  // block (data d, model m) is d * 2 + m
    }
    // Any rectangle: across the pieces' boundary in every cut tensor.
    const ck::BlockOf across = [](const std::string&, const std::string& key, const std::vector<int64_t>& shape) {
      ck::Block b;
      for (int64_t n : shape) b.emplace_back(n / 4, n - n / 4 - (key == "b" ? 0 : 1));
      return b;
    };
    check(dir, across, dir.string() + " across");
  }
  // Every file is verified, even one no block comes from: a flipped byte in process 1's piece.
  {
    const fs::path f = base / "step-1" / "model.shard-1-of-2.safetensors";
    std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(fs::file_size(f) - 5);
    io.seekg(at);
    const char c = static_cast<char>(io.get());
    io.seekp(at);
    io.put(static_cast<char>(~c));
  }
  ck::Sharding first;
  first.rank = 0;
  first.processes = 2;
  first.dims = {{"model", saved_dims}};
  try {
    ck::load_checkpoint((base / "step-1").string(), {"model"}, ck::blocks_of_process(first));
    ADD_FAILURE() << "a corrupt piece loaded";
  } catch (const ck::CheckpointError& e) {
    EXPECT_THAT(e.what(), HasSubstr("model.shard-1-of-2.safetensors: CRC32 is"));
  }
  // Three processes cannot cut w's 8 columns: DoesNotFit naming the tensor and the checkpoint (load_latest_checkpoint
  // skips only CheckpointErrors, as corrupt checkpoints).
  ck::Sharding three;
  three.rank = 1;
  three.processes = 3;
  three.mesh = {{"data", 3}};
  three.dims = {{"model", {{"w", {{"data", 1}}}}}};
  try {
    ck::load_checkpoint((base / "whole" / "step-1").string(), {"model"}, ck::blocks_of_process(three));
    ADD_FAILURE() << "8 columns cut in 3";
  } catch (const ck::DoesNotFit& e) {
    EXPECT_THAT(e.what(), HasSubstr("model.w: dimension 1 (8) does not split into 3 equal blocks over mesh axis data"));
    EXPECT_EQ(e.path(), (base / "whole" / "step-1").string());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not DoesNotFit: " << e.what();
  }
  fs::remove_all(base);
}

// --- the token cache built by the processes of a job together ----------------------------------------------------

// Two processes build a 5-shard cache together: process r writes shards r, r+2, ... (each under its own lock). Process
// 1 is killed (simulated) after two commits and its process ends; process 0 then says which process's shard is
// missing instead of waiting for ever. Launched again, the processes resume, and the cache is byte for byte the one a
// single process builds.
TEST(JointCacheBuild, TwoProcessesBuildTheirOwnShardsResumeAfterAKillAndMatchOneProcessByteForByte) {
  namespace dt = levanter::data::testing;
  using levanter::data::CacheBuildOptions;
  const fs::path root = levanter::testing::fresh_test_dir("levanter_joint_cache");
  fs::create_directories(root / "in");
  std::vector<std::string> files;
  for (int f = 0; f < 5; ++f) {
    files.push_back((root / "in" / ("part" + std::to_string(f) + ".jsonl")).string());
    dt::write_text(files.back(), dt::jsonl(dt::make_docs(f, 40)));
  }
  CacheBuildOptions base;
  base.num_threads = 1;
  base.chunk_documents = 8;
  base.log_warnings = false;
  levanter::data::build_or_load_cache((root / "one").string(), files, dt::byte_encoder(), base)->wait_finished();

  const std::string joint = (root / "joint").string();
  auto options_for = [&](levanter::distributed::ProcessGroup& pg) {
    CacheBuildOptions o = base;
    o.rank = pg.rank();
    o.processes = pg.size();
    o.all_gather = [&pg](const std::string& v) { return pg.all_gather(v); };
    return o;
  };
  in_two_processes([&](levanter::distributed::ProcessGroup& pg) {
    CacheBuildOptions o = options_for(pg);
    if (pg.rank() == 1) {
      o.simulate_kill_after_chunks = 2;  // then this process ends, and its lock with it
      auto cache = levanter::data::build_or_load_cache(joint, files, dt::byte_encoder(), o);
      cache->builder()->wait();
      return true;
    }
    auto cache = levanter::data::build_or_load_cache(joint, files, dt::byte_encoder(), o);
    try {
      cache->wait_finished();
    } catch (const levanter::data::DataError& e) {
      const std::string m = e.what();
      EXPECT_THAT(m, HasSubstr("built by process 1 of this job"));
      EXPECT_THAT(m, HasSubstr("which is gone"));
      return m.find("which is gone") != std::string::npos;
    }
    return false;
  });
  EXPECT_TRUE(fs::exists(fs::path(joint) / ".lock-1"));
  int64_t documents[2] = {0, 0};
  in_two_processes([&](levanter::distributed::ProcessGroup& pg) {
    auto cache = levanter::data::build_or_load_cache(joint, files, dt::byte_encoder(), options_for(pg));
    cache->wait_finished();
    if (pg.rank() == 0) documents[0] = cache->builder()->progress().documents;
    return cache->total_rows() == 200 && cache->builder() != nullptr &&
           cache->builder()->progress().documents == (pg.rank() == 0 ? 120 : 80);  // its own shards' documents
  });
  EXPECT_EQ(documents[0], 120);  // shards 0, 2 and 4
  auto without_locks = [](std::map<std::string, std::string> files) {
    for (auto it = files.begin(); it != files.end();) it = it->first.rfind(".lock", 0) == 0 ? files.erase(it) : ++it;
    return files;
  };
  const auto one = without_locks(dt::snapshot((root / "one").string()));
  const auto together = without_locks(dt::snapshot(joint));
  EXPECT_EQ(one.size(), together.size());
  for (const auto& [name, bytes] : one) {
    auto it = together.find(name);
    ASSERT_NE(it, together.end()) << name;
    EXPECT_TRUE(it->second == bytes) << name << " differs";
  }
  EXPECT_TRUE(levanter::data::TokenCache::open(joint)->finished());
  fs::remove_all(root);
}
