#include "levanter/trainer/peak_flops.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "haliax/nn/gemm_bf16.h"
#include "levanter/runtime/file_io.h"
#include "levanter/runtime/format.h"

namespace levanter::trainer {

namespace fs = std::filesystem;
namespace hax = haliax;
using Clock = std::chrono::steady_clock;

namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown cpu";
}

std::string cache_key(at::ScalarType dtype) {
  // bf16: the kernels this machine's bf16 GEMMs take (haliax/nn/gemm_bf16.h), the ones the probe times.
  const std::string route =
      dtype == at::kBFloat16 ? std::string(" | bf16 GEMMs ") + hax::nn::bf16_gemm_route_name(hax::nn::bf16_gemm_route())
                             : "";
  return cpu_model() + " | " + std::to_string(at::get_num_threads()) + " threads | " + c10::toString(dtype) + route +
         " | libtorch " + TORCH_VERSION;
}

nlohmann::json read_cache() {
  std::ifstream in(peak_flops_cache_file());
  if (!in) return nlohmann::json::object();
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();
}

// Best-effort: a cache that cannot be written only means the next run probes again.
void write_cache(const std::string& key, double flops) {
  try {
    nlohmann::json j = read_cache();
    j[key] = {{"flops", flops}, {"measured", runtime::utc_timestamp()}};
    fs::create_directories(fs::path(peak_flops_cache_file()).parent_path());
    runtime::write_file_atomic(peak_flops_cache_file(), j.dump(2) + "\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: could not cache the GEMM peak in %s: %s\n", peak_flops_cache_file().c_str(),
                 e.what());
  }
}

// The best rate of repeated n x k @ k x m GEMMs within about `budget_s` seconds, bf16 by this machine's route
// (gemm_bf16.h; widened, the blocked product: its widening and rounding of 3 x 2048^2 elements take a few ms against
// the GEMM's 60 or so).
double best_rate(int64_t n, int64_t k, int64_t m, at::ScalarType dtype, double budget_s) {
  at::Tensor a = at::ones({n, k}, dtype), b = at::ones({k, m}, dtype);
  auto mm_out = [dtype](at::Tensor& c, const at::Tensor& a, const at::Tensor& b) {
    if (dtype == at::kBFloat16) {
      hax::nn::mm_bf16_out(c, a, b);
    } else {
      at::mm_out(c, a, b);
    }
  };
  at::Tensor c = at::empty({n, m}, a.options());
  mm_out(c, a, b);  // warm-up: oneDNN/OpenBLAS setup, first-touch of the output
  double best = 0;
  const auto start = Clock::now();
  for (int rep = 0; rep < 3 || std::chrono::duration<double>(Clock::now() - start).count() < budget_s; ++rep) {
    auto t0 = Clock::now();
    mm_out(c, a, b);
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(n) * static_cast<double>(k) * static_cast<double>(m) / s);
    if (rep >= 50) break;
  }
  return best;
}

}  // namespace

std::string peak_flops_cache_file() {
  if (const char* d = std::getenv("LEVANTER_CACHE_DIR"); d && *d) return (fs::path(d) / "peak_flops.json").string();
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return (fs::path(x) / "levanter" / "peak_flops.json").string();
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : "/tmp") / ".cache" / "levanter" / "peak_flops.json").string();
}

double probe_peak_flops(at::ScalarType dtype) {
  at::NoGradGuard no_grad;
  // Square GEMMs and the shape of a transformer's MLP at 768 wide (the best of them is the peak).
  double best = 0;
  best = std::max(best, best_rate(1024, 1024, 1024, dtype, 0.3));
  best = std::max(best, best_rate(2048, 2048, 2048, dtype, 0.4));
  best = std::max(best, best_rate(2048, 768, 3072, dtype, 0.3));
  return best;
}

PeakFlops PeakFlops::resolve(at::ScalarType dtype, std::optional<double> configured) {
  if (configured) return PeakFlops(*configured, "trainer.peak_flops", true);
  const std::string key = cache_key(dtype);
  nlohmann::json cache = read_cache();
  if (cache.contains(key) && cache[key].is_object() && cache[key].value("flops", 0.0) > 0) {
    return PeakFlops(cache[key]["flops"].get<double>(),
                     "probe (cached in " + peak_flops_cache_file() + ", " + cache[key].value("measured", "?") + ")",
                     false, key);
  }
  double probed = probe_peak_flops(dtype);
  write_cache(key, probed);
  return PeakFlops(probed, "probe (now; cached in " + peak_flops_cache_file() + ")", false, key);
}

double PeakFlops::mfu(double achieved) {
  if (achieved <= value_) return achieved / value_;
  if (!noted_) {
    noted_ = true;
    if (configured_) {
      std::fprintf(stderr,
                   "note: this run achieves %s FLOP/s, more than trainer.peak_flops (%s): MFU shows above 100%%\n",
                   runtime::format_si(achieved).c_str(), runtime::format_si(value_).c_str());
    } else {
      std::fprintf(
          stderr,
          "note: this run achieves %s FLOP/s, more than the probed GEMM peak (%s; the machine was busy when it "
          "was probed): MFU now uses the higher figure, cached in %s\n",
          runtime::format_si(achieved).c_str(), runtime::format_si(value_).c_str(), peak_flops_cache_file().c_str());
    }
  }
  if (configured_) return achieved / value_;
  value_ = achieved;
  source_ = "raised to what this run achieved";
  if (!cache_key_.empty()) write_cache(cache_key_, achieved);
  return 1.0;
}

}  // namespace levanter::trainer
