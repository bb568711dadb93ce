// The MFU denominator: the peak FLOP/s of this machine's GEMMs in the compute dtype.
//
// A short probe at start read low on a busy machine and the progress line showed "mfu 100.6%". So the default
// peak is probed once per machine, carefully (several GEMM shapes, the best rate of repeated runs, about a
// second), and cached in <cache dir>/peak_flops.json keyed by CPU model, thread count, dtype and libtorch
// version; later runs on the same machine reuse it, so their MFUs are comparable. trainer.peak_flops overrides
// it. The run record says which was used.
//
// MFU above 100% is never shown without a reason: when a run achieves more than a probed peak, the probe read
// low; the peak is raised to what the run achieved (and the cache updated) with a one-line note. A configured
// peak is never changed: the note then says that trainer.peak_flops is below what this run achieves.
#pragma once

#include <c10/core/ScalarType.h>

#include <optional>
#include <string>

namespace levanter::trainer {

class PeakFlops {
 public:
  // trainer.peak_flops if set; else the cached probe for this machine, or a new probe (then cached).
  static PeakFlops resolve(at::ScalarType dtype, std::optional<double> configured);
  PeakFlops(double value, std::string source, bool configured, std::string cache_key = {})
      : value_(value), source_(std::move(source)), configured_(configured), cache_key_(std::move(cache_key)) {}

  double value() const { return value_; }
  // "trainer.peak_flops", "probe", "probe (cached in <file> on <date>)", "raised to what this run achieved".
  const std::string& source() const { return source_; }
  // achieved / peak; see the file comment for what happens above 1.
  double mfu(double achieved_flops_per_second);

 private:
  double value_;
  std::string source_;
  bool configured_;
  std::string cache_key_;
  bool noted_ = false;
};

// The best FLOP/s of GEMMs in `dtype` on this machine (about a second; several shapes, repeated).
double probe_peak_flops(at::ScalarType dtype);

// Where the probe cache lives: $LEVANTER_CACHE_DIR, else $XDG_CACHE_HOME/levanter, else ~/.cache/levanter.
std::string peak_flops_cache_file();

}  // namespace levanter::trainer
