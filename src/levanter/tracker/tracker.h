// Trackers: where a run's metrics go (Levanter's levanter.tracker). The trainer logs through one Tracker; which
// ones a run has comes from `trainer.tracker` (make_tracker). Implementations: JsonLogger (metrics.jsonl in the
// run directory, one JSON object per logged step), NoopTracker, and CompositeTracker, which fans out to several
// (a TensorBoard writer or a live dashboard plug in beside the JSON log).
//
// Values keep their type: a float loss is logged as a float, so readers recover its exact bits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "levanter/tracker/config.h"

namespace levanter::tracker {

using MetricValue = std::variant<int64_t, float, double, std::string>;
// Named values in the order they were added ("train/loss", "throughput/mfu", ...).
using Metrics = std::vector<std::pair<std::string, MetricValue>>;

class Tracker {
 public:
  virtual ~Tracker() = default;
  // The resolved config and run facts, once at the start of a run.
  virtual void log_hyperparameters(const Metrics& hparams) {}
  // Metrics of `step` (0-based index of the step they describe).
  virtual void log(const Metrics& metrics, int64_t step) = 0;
  // Final values of the run (e.g. the last evaluation).
  virtual void log_summary(const Metrics& metrics) {}
  // A run that continues after `completed_steps` steps (a resume, or 0 for a fresh start) is about to log again
  // the rows of the steps it redoes: the tracker forgets those it holds. Rows of a step (train/ and throughput/
  // metrics, whose `step` is the 0-based index of the step) from `completed_steps` on; rows of the state after
  // some steps (evaluations, whose `step` counts completed steps) beyond `completed_steps`, and at it too when
  // `final_eval_again` (a finished run started again evaluates again).
  virtual void resume_at(int64_t completed_steps, bool final_eval_again) {}
  // Flush, make durable and close; nothing is logged after this. Throws runtime::IoError if that fails.
  virtual void finish() {}
};

class NoopTracker : public Tracker {
 public:
  void log(const Metrics&, int64_t) override {}
};

// Appends {"step": step, <metrics>...} per log call to a JSONL file, one write(2) per line (a crash loses at most
// the line being written). Every write is checked: a failed write (a full disk), or the file removed or replaced
// behind the run's back (its directory deleted), throws runtime::IoError naming the file, and the trainer stops.
// resume_at rewrites the file without the rows the resumed run redoes (atomically: a temporary beside it, then
// a rename), and drops a last line a crash left half-written.
class JsonLogger : public Tracker {
 public:
  explicit JsonLogger(std::string path);  // runtime::IoError if it cannot be opened for appending
  ~JsonLogger() override;
  void log(const Metrics& metrics, int64_t step) override;
  void resume_at(int64_t completed_steps, bool final_eval_again) override;
  void finish() override;
  const std::string& path() const { return path_; }

 private:
  template <typename Keep>
  bool filter_rows(int64_t completed_steps, bool final_eval_again, Keep&& keep) const;
  std::string path_;
  struct File;
  std::unique_ptr<File> file_;
};

class CompositeTracker : public Tracker {
 public:
  explicit CompositeTracker(std::vector<std::unique_ptr<Tracker>> trackers) : trackers_(std::move(trackers)) {}
  void log_hyperparameters(const Metrics& hparams) override;
  void log(const Metrics& metrics, int64_t step) override;
  void log_summary(const Metrics& metrics) override;
  void resume_at(int64_t completed_steps, bool final_eval_again) override;
  void finish() override;

 private:
  std::vector<std::unique_ptr<Tracker>> trackers_;
};

// The tracker `config` asks for, writing into `run_dir` (json: <run_dir>/metrics.jsonl).
std::unique_ptr<Tracker> make_tracker(const TrackerConfig& config, const std::string& run_dir);

}  // namespace levanter::tracker
