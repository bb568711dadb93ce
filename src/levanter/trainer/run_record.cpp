#include "levanter/trainer/run_record.h"

#include <torch/version.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "haliax/nn/gemm_bf16.h"
#include "levanter/runtime/file_io.h"
#include "levanter/runtime/format.h"
#include "levanter/runtime/openblas_core.h"
#include "levanter/runtime/signals.h"
#include "levanter/version.h"

namespace levanter::trainer {

namespace fs = std::filesystem;

namespace {

std::string run_command(const std::string& cmd) {
  std::string out;
  FILE* p = nullptr;
  {
    const runtime::StopSignalsUnblocked unblocked;  // the child takes the thread's signal mask
    p = popen(cmd.c_str(), "r");
  }
  if (!p) return out;
  char buf[256];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

nlohmann::ordered_json git_info() {
  nlohmann::ordered_json g;
  const std::string dir = LEVANTER_SOURCE_DIR;
  std::string commit = run_command("git -C '" + dir + "' rev-parse HEAD 2>/dev/null");
  g["commit"] = commit.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(commit);
  if (!commit.empty()) {
    g["dirty"] = !run_command("git -C '" + dir + "' status --porcelain --untracked-files=no 2>/dev/null").empty();
  }
  return g;
}

// Settings that change the speed (never the results) of a run.
nlohmann::ordered_json speed_environment() {
  nlohmann::ordered_json env = nlohmann::ordered_json::object();
  for (const char* k : {"OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "LEVANTER_CPU_ALLOCATOR",
                        "LEVANTER_CPU_CACHE_LIMIT_MB", "LEVANTER_CPU_ARENA_MB"}) {
    if (const char* v = std::getenv(k)) env[k] = v;
  }
  return env;
}

}  // namespace

void write_run_record(const std::string& run_dir, const TrainLmConfig& config, const RunRecord& r) {
  const TrainerConfig& tc = config.trainer;
  nlohmann::ordered_json rec;
  rec["run_id"] = r.run_id;
  rec["started"] = runtime::utc_timestamp();
  rec["config_file"] = r.config_file;
  rec["command_line"] = r.command_line;
  rec["git"] = git_info();
  rec["versions"] = {{"levanter-cpp", LEVANTER_VERSION}, {"libtorch", TORCH_VERSION}, {"compiler", __VERSION__}};
  rec["num_threads"] = r.num_threads;
  rec["environment"] = speed_environment();
  // Which kernels compute bf16 GEMMs on this machine (their bits differ): haliax/nn/gemm_bf16.h.
  rec["bf16_gemm"] = haliax::nn::bf16_gemm_route_name(haliax::nn::bf16_gemm_route());
  // The OpenBLAS core f32 at::mm runs on (its kernels round differently; runtime/openblas_core.h).
  rec["openblas_core"] = runtime::openblas_core();
  rec["seed"] = tc.seed;
  rec["data_seed"] = r.data_seed;
  rec["resumed_from"] = r.resumed_from.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(r.resumed_from);
  rec["checkpoint_base"] = r.checkpoint_base;
  rec["model_type"] = config.model.type();
  rec["parameter_count"] = r.parameter_count;
  rec["peak_flops"] = {{"value", r.peak_flops}, {"source", r.peak_flops_source}};
  nlohmann::ordered_json trackers = nlohmann::ordered_json::array();
  for (const tracker::TrackerConfig& t : tc.tracker) {
    trackers.push_back({{"type", t.type}, {"project", t.project.value_or("")}, {"tags", t.tags}});
  }
  rec["tracker"] = trackers.size() == 1 ? trackers[0] : trackers;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  rec["hostname"] = host;
  runtime::write_file_atomic((fs::path(run_dir) / "run.json").string(), rec.dump(2) + "\n");
  runtime::write_file_atomic((fs::path(run_dir) / "config.yaml").string(), config::dump(config::to_yaml_value(config)));
}

}  // namespace levanter::trainer
