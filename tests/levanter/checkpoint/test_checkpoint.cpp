// Checkpoint directories: round trip, manifest verification, crash safety (a child killed mid-write through the
// LEVANTER_FAULT hook), corrupt and partial checkpoints never loaded, stale temporaries cleaned up safely.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <zlib.h>

#include <nlohmann/json.hpp>

#include "levanter/checkpoint/checkpoint.h"
#include "levanter/checkpoint/checkpoint_testing.h"
#include "levanter/runtime/file_io.h"

using namespace levanter::checkpoint;
using namespace levanter::checkpoint::testing;
using ::testing::HasSubstr;
using json = nlohmann::json;

namespace {

TensorGroups state_at(int64_t step) {
  StateDict model, opt;
  model.emplace_back("transformer.wte.weight", at::full({64, 16}, static_cast<double>(step)));
  model.emplace_back("transformer.h.0.attn.c_attn.weight", at::arange(48, at::kFloat).reshape({16, 3}) + step);
  model.emplace_back("lm_head.bias", at::full({64}, step, at::kBFloat16));
  model.emplace_back("unused", at::zeros({0, 16}));  // empty: data_ptr() may be null
  opt.emplace_back("mu.transformer.wte.weight", at::full({64, 16}, step * 0.5));
  opt.emplace_back("count", at::scalar_tensor(step, at::kLong));
  return {{"model", model}, {"opt_state", opt}};
}

void flip_byte(const std::string& path, size_t offset) {
  std::string bytes = read_bytes(path);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] ^= 0x10;
  write_bytes(path, bytes);
}

// Runs `body` in a forked child with LEVANTER_FAULT=`fault`; returns the child's pid after checking that it
// died of SIGKILL. The child runs only file I/O (no ATen parallel regions), which is fork-safe.
pid_t run_killed_child(const std::string& fault, const std::function<void()>& body) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("LEVANTER_FAULT", fault.c_str(), 1);
    try {
      body();
    } catch (...) {
      std::_Exit(3);
    }
    std::_Exit(0);  // the fault point was not reached
  }
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "child should have died of SIGKILL; status " << status;
  return pid;
}

std::vector<std::string> hidden_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string()[0] == '.') out.push_back(e.path().filename().string());
  }
  return out;
}

}  // namespace

TEST(Checkpoint, SaveLoadRoundTripWithMetadataAndManifest) {
  TempDir dir;
  json meta = {{"key", {0, 42}}, {"config", "trainer:\n  num_train_steps: 10\n"}, {"run_id", "abc"}};
  std::string path = save_checkpoint(dir.str(), 7, state_at(7), meta, /*is_temporary=*/true);
  EXPECT_EQ(path, dir / "step-7");
  EXPECT_TRUE(hidden_entries(dir.str()).empty());
  for (const char* f : {"model.safetensors", "opt_state.safetensors", "metadata.json", "manifest.json"}) {
    EXPECT_TRUE(fs::exists(fs::path(path) / f)) << f;
  }

  Checkpoint c = load_checkpoint(path);
  EXPECT_EQ(c.step, 7);
  EXPECT_TRUE(c.is_temporary());
  ASSERT_EQ(c.groups.size(), 2u);
  EXPECT_EQ(c.groups[0].first, "model");
  EXPECT_EQ(c.groups[1].first, "opt_state");
  TensorGroups expected = state_at(7);
  expect_same_tensors(c.group("model"), expected[0].second);
  expect_same_tensors(c.group("opt_state"), expected[1].second);
  EXPECT_EQ(c.metadata["step"], 7);
  EXPECT_EQ(c.metadata["key"], json({0, 42}));
  EXPECT_EQ(c.metadata["config"], "trainer:\n  num_train_steps: 10\n");
  EXPECT_EQ(c.metadata["run_id"], "abc");
  EXPECT_EQ(c.metadata["num_threads"], at::get_num_threads());
  EXPECT_TRUE(c.metadata["versions"]["libtorch"].is_string());
  EXPECT_THAT(c.metadata["timestamp"].get<std::string>(), ::testing::MatchesRegex("20[0-9-]+T[0-9:.]+Z"));
  EXPECT_EQ(c.metadata["groups"], json({"model", "opt_state"}));
  EXPECT_THAT([&] { c.group("ema"); }, ::testing::ThrowsMessage<CheckpointError>(HasSubstr("has: model, opt_state")));

  // The manifest lists every file with its size and CRC32, metadata included.
  json manifest = json::parse(read_bytes(path + "/manifest.json"));
  EXPECT_EQ(manifest["step"], 7);
  ASSERT_EQ(manifest["files"].size(), 3u);
  for (const auto& f : manifest["files"]) {
    EXPECT_EQ(f["size"].get<uintmax_t>(), fs::file_size(path + "/" + f["name"].get<std::string>()));
    EXPECT_EQ(f["crc32"].get<std::string>().size(), 8u);
  }
  // Each tensor file is plain safetensors, readable on its own.
  expect_same_tensors(load_safetensors(path + "/model.safetensors").tensors, expected[0].second);

  EXPECT_TRUE(resume_warnings(c.metadata).empty());
  json other = c.metadata;
  other["num_threads"] = at::get_num_threads() + 3;
  other["versions"]["libtorch"] = "0.1";
  auto warnings = resume_warnings(other);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_THAT(warnings[0], HasSubstr("not be bit-identical"));
  EXPECT_THAT(warnings[1], HasSubstr("libtorch 0.1"));

  Checkpoint only = load_checkpoint(path, {"model"});
  ASSERT_EQ(only.groups.size(), 1u);
  EXPECT_THROW(load_checkpoint(path, {"nope"}), CheckpointError);
}

TEST(Checkpoint, LargeFilesAreChecksummedOnASecondThreadWithTheSameResult) {
  // Over 16 MiB, the CRC32 runs on another thread, alongside the writes and behind the reads.
  TempDir dir;
  StateDict big = {{"a", at::randn({5 << 20})}, {"empty", at::zeros({0})}, {"b", at::ones({3}, at::kDouble)}};
  std::string path = save_checkpoint(dir.str(), 1, {{"model", big}});
  const std::string file = path + "/model.safetensors";
  const std::string bytes = read_bytes(file);
  ASSERT_GT(bytes.size(), 20u << 20);
  char hex[9];
  std::snprintf(hex, sizeof(hex), "%08lx",
                crc32_z(0, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()));
  json manifest = json::parse(read_bytes(path + "/manifest.json"));
  EXPECT_EQ(manifest["files"][0]["name"], "model.safetensors");
  EXPECT_EQ(manifest["files"][0]["crc32"], std::string(hex));
  expect_same_tensors(load_checkpoint(path).group("model"), big);
  flip_byte(file, bytes.size() / 2);
  EXPECT_THAT([&] { load_checkpoint(path); },
              ::testing::ThrowsMessage<CheckpointError>(HasSubstr(file + ": CRC32 is")));
}

TEST(Checkpoint, MissingManifestMeansIncomplete) {
  TempDir dir;
  save_checkpoint(dir.str(), 10, state_at(10));
  save_checkpoint(dir.str(), 20, state_at(20));
  fs::remove(dir / "step-20/manifest.json");
  EXPECT_THAT(verify_checkpoint(dir / "step-20"), HasSubstr("step-20/manifest.json: missing (incomplete"));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(latest_checkpoint(dir.str()), dir / "step-10");
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("skipping checkpoint " + dir / "step-20"));
  EXPECT_THROW(load_checkpoint(dir / "step-20"), CheckpointError);
  ::testing::internal::CaptureStderr();
  auto c = load_latest_checkpoint(dir.str());
  ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->step, 10);
}

TEST(Checkpoint, FlippedByteFailsVerificationNamingTheFile) {
  TempDir dir;
  save_checkpoint(dir.str(), 10, state_at(10));
  save_checkpoint(dir.str(), 20, state_at(20));
  const std::string model = dir / "step-20/model.safetensors";
  flip_byte(model, fs::file_size(model) - 100);  // inside tensor data: the format alone cannot tell
  EXPECT_EQ(verify_checkpoint(dir / "step-20", Verify::kSizes), "");
  EXPECT_THAT(verify_checkpoint(dir / "step-20"), HasSubstr(model + ": CRC32 is"));
  EXPECT_THAT([&] { load_checkpoint(dir / "step-20"); },
              ::testing::ThrowsMessage<CheckpointError>(HasSubstr(model + ": CRC32 is")));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(latest_checkpoint(dir.str()), dir / "step-10");
  auto c = load_latest_checkpoint(dir.str());
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr("corrupt file"));
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->step, 10);

  // metadata.json and the manifest itself are covered too; so is a truncated file.
  flip_byte(dir / "step-10/metadata.json", 5);
  EXPECT_THAT(verify_checkpoint(dir / "step-10"), HasSubstr("step-10/metadata.json: CRC32"));
  EXPECT_THROW(read_checkpoint_metadata(dir / "step-10"), CheckpointError);
  save_checkpoint(dir.str(), 30, state_at(30));
  fs::resize_file(dir / "step-30/opt_state.safetensors", 100);
  EXPECT_THAT(verify_checkpoint(dir / "step-30", Verify::kSizes),
              HasSubstr("opt_state.safetensors: size is 100 bytes"));
  save_checkpoint(dir.str(), 40, state_at(40));
  write_bytes(dir / "step-40/manifest.json", "{\"format\": ");
  EXPECT_THAT(verify_checkpoint(dir / "step-40"), HasSubstr("manifest.json: not valid JSON"));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(latest_checkpoint(dir.str()), std::nullopt);
  ::testing::internal::GetCapturedStderr();
}

TEST(Checkpoint, KilledMidWriteLeavesNothingLoadable) {
  TempDir dir;
  save_checkpoint(dir.str(), 10, state_at(10), {{"num_threads", 1}});
  // Four 1 MiB tensors: the fault fires once half of model.safetensors' data is on disk.
  StateDict big;
  for (int i = 0; i < 4; ++i) big.emplace_back("w" + std::to_string(i), at::full({256, 1024}, float(i)));
  pid_t child = run_killed_child("checkpoint_write:20", [&] {
    save_checkpoint(dir.str(), 20, {{"model", big}}, {{"num_threads", 1}});
  });

  // Nothing named step-20 is visible; the partial data sit in the killed writer's temporary directory.
  EXPECT_FALSE(fs::exists(dir / "step-20"));
  const std::string tmp = dir / (".tmp-step-20-" + std::to_string(child));
  ASSERT_TRUE(fs::exists(tmp));
  const auto partial = fs::file_size(tmp + "/model.safetensors");
  EXPECT_GT(partial, 2u << 20);
  EXPECT_LT(partial, 4u << 20);
  EXPECT_FALSE(fs::exists(tmp + "/manifest.json"));

  EXPECT_EQ(latest_checkpoint(dir.str()), dir / "step-10");
  auto c = load_latest_checkpoint(dir.str());
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->step, 10);

  // The dead writer's directory is removed; then step 20 saves normally.
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(cleanup_stale_temporaries(dir.str()), 1);
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr(tmp));
  EXPECT_FALSE(fs::exists(tmp));
  save_checkpoint(dir.str(), 20, {{"model", big}});
  EXPECT_EQ(latest_checkpoint(dir.str()), dir / "step-20");
}

TEST(Checkpoint, KilledBeforeManifestIsIncompleteAndReplacedByTheNextSave) {
  TempDir dir;
  save_checkpoint(dir.str(), 10, state_at(10), {{"num_threads", 1}});
  run_killed_child("checkpoint_commit:20", [&] { save_checkpoint(dir.str(), 20, state_at(20), {{"num_threads", 1}}); });
  ASSERT_TRUE(fs::exists(dir / "step-20/model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "step-20/manifest.json"));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(latest_checkpoint(dir.str()), dir / "step-10");
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("manifest.json: missing"));

  ::testing::internal::CaptureStderr();
  save_checkpoint(dir.str(), 20, state_at(20));
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("replacing incomplete checkpoint"));
  EXPECT_EQ(latest_checkpoint(dir.str()), dir / "step-20");
  EXPECT_TRUE(hidden_entries(dir.str()).empty());
}

TEST(Checkpoint, ResavingACompleteStepReplacesItAtomically) {
  TempDir dir;
  save_checkpoint(dir.str(), 5, state_at(5), {}, /*is_temporary=*/true);
  save_checkpoint(dir.str(), 5, state_at(6), {}, /*is_temporary=*/false);
  Checkpoint c = load_checkpoint(dir / "step-5");
  EXPECT_FALSE(c.is_temporary());
  expect_same_tensors(c.group("model"), state_at(6)[0].second);
  EXPECT_TRUE(hidden_entries(dir.str()).empty());
}

TEST(Checkpoint, StaleTemporariesAreRemovedOnlyWhenTheirWriterIsGone) {
  TempDir dir;
  pid_t dead = ::fork();
  if (dead == 0) std::_Exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string stale = dir / (".tmp-step-7-" + std::to_string(dead));
  const std::string mine = dir / (".tmp-step-8-" + std::to_string(::getpid()));
  const std::string locked = dir / (".tmp-step-9-" + std::to_string(dead));
  const std::string foreign = dir / ".tmp-something-else";
  for (const auto& d : {stale, mine, locked, foreign}) fs::create_directories(d + "/sub");
  auto lock = levanter::runtime::FileLock::lock(locked);  // a writer (whatever its pid says) still holds it
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(cleanup_stale_temporaries(dir.str()), 1);
  ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(mine));     // a live pid, recently touched
  EXPECT_TRUE(fs::exists(locked));   // locked
  EXPECT_TRUE(fs::exists(foreign));  // not a name we make
  lock = levanter::runtime::FileLock();
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(cleanup_stale_temporaries(dir.str()), 1);
  ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(fs::exists(locked));
}

TEST(Checkpoint, OnlyStepDirectoriesCountAndTheirStepMustMatch) {
  TempDir dir;
  save_checkpoint(dir.str(), 10, state_at(10));
  fs::create_directories(dir / "step-abc");
  fs::create_directories(dir / "step-99.old");
  write_bytes(dir / "step-98", "not a directory");
  fs::create_directories(dir / ".tmp-step-50-1");
  auto all = list_checkpoints(dir.str());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].first, 10);
  // A checkpoint renamed to another step no longer verifies.
  fs::rename(dir / "step-10", dir / "step-11");
  EXPECT_THAT(verify_checkpoint(dir / "step-11"), HasSubstr("records step 10 but the directory is step-11"));
}

TEST(Checkpoint, RefusesBadArguments) {
  TempDir dir;
  EXPECT_THROW(save_checkpoint(dir.str(), -1, state_at(1)), CheckpointError);
  EXPECT_THROW(save_checkpoint(dir.str(), 1, {{"../x", {}}}), CheckpointError);
  EXPECT_THROW(save_checkpoint(dir.str(), 1, {{"a", {}}, {"a", {}}}), CheckpointError);
  EXPECT_THROW(save_checkpoint(dir.str(), 1, {}, json::array()), CheckpointError);
  // A tensor that cannot be written aborts the save before anything is visible.
  EXPECT_THROW(save_checkpoint(dir.str(), 1, {{"model", {{"c", at::zeros({2}, at::kComplexFloat)}}}}), CheckpointError);
  EXPECT_FALSE(fs::exists(dir / "step-1"));
  EXPECT_TRUE(hidden_entries(dir.str()).empty());
  // (Exclusive creation never clobbering a file is tested with runtime/file_io: test_file_io.cpp.)
}

// Throughput on a ~500 MB checkpoint (parameters + two Adam moments of a ~44M-parameter model).
// Run with: build-ckpt/tests/levanter_tests --gtest_also_run_disabled_tests --gtest_filter='*CheckpointBench*'
// (LEVANTER_CKPT_BENCH_MB sets the size; LEVANTER_CKPT_BENCH_DIR the directory, default the build directory.)
TEST(CheckpointBench, DISABLED_WriteAndLoad500MB) {
  const char* mb_env = std::getenv("LEVANTER_CKPT_BENCH_MB");
  const int64_t mb = mb_env ? std::atoll(mb_env) : 500;
  const char* dir_env = std::getenv("LEVANTER_CKPT_BENCH_DIR");
  const std::string base = (fs::path(dir_env ? dir_env : LEVANTER_BINARY_DIR) / "ckpt-bench").string();
  fs::remove_all(base);
  const int64_t per_group = mb * (1 << 20) / 3 / 4;  // f32 elements per group
  TensorGroups groups;
  for (const char* g : {"model", "opt_state_mu", "opt_state_nu"}) {
    StateDict t;
    const int64_t n = 16;
    for (int64_t i = 0; i < n; ++i) t.emplace_back("p" + std::to_string(i), at::randn({per_group / n}));
    groups.emplace_back(g, t);
  }
  double bytes = 0;
  for (auto& [_, t] : groups)
    for (auto& [__, x] : t) bytes += x.numel() * 4.0;
  auto now = [] { return std::chrono::steady_clock::now(); };
  auto t0 = now();
  std::string path = save_checkpoint(base, 1, groups);
  double save_s = std::chrono::duration<double>(now() - t0).count();
  t0 = now();
  Checkpoint c = load_checkpoint(path);  // verifies every CRC32 while reading (from the page cache here)
  double load_s = std::chrono::duration<double>(now() - t0).count();
  t0 = now();
  std::string why = verify_checkpoint(path);
  double verify_s = std::chrono::duration<double>(now() - t0).count();
  EXPECT_EQ(why, "");
  std::printf(
      "RESULT checkpoint_bench bytes=%.0f save_s=%.3f save_MBps=%.0f load_s=%.3f load_MBps=%.0f "
      "verify_MBps=%.0f\n",
      bytes, save_s, bytes / 1e6 / save_s, load_s, bytes / 1e6 / load_s, bytes / 1e6 / verify_s);
  fs::remove_all(base);
}
