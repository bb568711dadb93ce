// Trackers: where a run's metrics go (Levanter's levanter.tracker). The trainer logs through one Tracker; which
// ones a run has comes from `trainer.tracker` (make_tracker). Implementations: JsonLogger (metrics.jsonl in the
// run directory, one JSON object per logged step), TensorboardTracker (tensorboard.h), NoopTracker, and
// CompositeTracker, which fans out to several.
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

// Whether a logged value is one that a run resumed after `completed_steps` steps logs again: values of a step
// (train/ and throughput/ names, whose step is the step's 0-based index) from completed_steps on; values of the
// state after some steps (evaluations) beyond it, and at it when `final_eval_again`.
bool logged_again(const std::string& name, int64_t step, int64_t completed_steps, bool final_eval_again);

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

// The trackers `configs` asks for (several: a CompositeTracker). json writes <run_dir>/metrics.jsonl; tensorboard
// writes event files into <logdir>/<run_id> (tensorboard.h).
std::unique_ptr<Tracker> make_tracker(const TrackerConfigs& configs, const std::string& run_dir,
                                      const std::string& run_id);

}  // namespace levanter::tracker
