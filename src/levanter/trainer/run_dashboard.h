// The live dashboard of a training run (trainer.dashboard; docs/visualization.md): started when the Trainer is
// built, for its run directory, and stopped when it is destroyed. It serves from its own threads and reads the
// run's files; the training loop never waits on it.
#pragma once

#include <memory>
#include <string>

#include "levanter/trainer/config.h"
#include "levanter/viz/dashboard.h"

namespace levanter::trainer {

class RunDashboard {
 public:
  // Nothing when trainer.dashboard.port is unset. Otherwise starts the dashboard (std::runtime_error naming the
  // port when it cannot bind), prints "levanter: dashboard at <url>" on stderr and writes the URL to
  // <run dir>/dashboard.url. A run without a json tracker writes no metrics.jsonl: a warning says so (the page
  // says it too).
  static std::unique_ptr<RunDashboard> start_if_configured(const TrainerConfig& config, const std::string& run_dir);
  ~RunDashboard();  // stops serving and removes dashboard.url
  const viz::Dashboard& dashboard() const { return dashboard_; }

 private:
  RunDashboard(const std::string& run_dir, const viz::DashboardConfig& config);
  viz::Dashboard dashboard_;
  std::string url_file_;
};

}  // namespace levanter::trainer
