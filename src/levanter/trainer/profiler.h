// trainer.profiler (Levanter's keys: profiler, profiler_start_step, profiler_num_steps): libtorch's own operator
// profiler over a window of training steps, written to <run dir>/profiler/:
//   trace.json   Chrome trace events (open in https://ui.perfetto.dev or chrome://tracing): every ATen operator,
//                autograd node and the trainer's own ranges (step N, forward, backward, optimizer) on a timeline
//   ops.txt      a table of operators by self time (as PyTorch's key_averages().table(sort_by="self_cpu_time_total"))
// The profiler records on the trainer's thread (ATen's intra-op threads run inside the operators it times). It
// costs time while it records, so the steps it covers are slower than the others; it changes no numerics.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace levanter::trainer {

struct TrainerConfig;

class StepProfiler {
 public:
  // Profiles steps [profiler_start_step, profiler_start_step + profiler_num_steps) of the run when
  // trainer.profiler is set and `enabled` (rank 0 of a job); otherwise does nothing.
  StepProfiler(const TrainerConfig& config, std::string run_dir, bool progress, bool enabled = true);
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  void before_step(int64_t step);
  void after_step(int64_t step);
  // The run ended (done, stopped by a signal): writes what was recorded, if the window was still open.
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace levanter::trainer
