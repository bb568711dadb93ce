#include "levanter/trainer/run_dashboard.h"

#include <cstdio>
#include <filesystem>

#include "levanter/runtime/file_io.h"

namespace levanter::trainer {

namespace fs = std::filesystem;

RunDashboard::RunDashboard(const std::string& run_dir, const viz::DashboardConfig& config)
    : dashboard_(run_dir, config.host, static_cast<int>(*config.port)),
      url_file_((fs::path(run_dir) / "dashboard.url").string()) {}

std::unique_ptr<RunDashboard> RunDashboard::start_if_configured(const TrainerConfig& config,
                                                                const std::string& run_dir) {
  if (!config.dashboard.port) return nullptr;
  std::unique_ptr<RunDashboard> d(new RunDashboard(run_dir, config.dashboard));
  d->dashboard_.start();
  const std::string url = d->dashboard_.url();
  std::fprintf(stderr, "levanter: dashboard at %s\n", url.c_str());
  bool json = false;
  for (const tracker::TrackerConfig& t : config.tracker) json = json || t.type == "json" || t.type == "json_logger";
  if (!json) {
    std::fprintf(stderr,
                 "levanter: warning: trainer.tracker has no json tracker, so this run writes no metrics.jsonl and "
                 "the dashboard has no metrics to plot; add `- type: json` to trainer.tracker\n");
  }
  runtime::write_file_atomic(d->url_file_, url + "\n");
  return d;
}

RunDashboard::~RunDashboard() {
  dashboard_.stop();
  std::error_code ec;
  fs::remove(url_file_, ec);  // a URL that no longer answers
}

}  // namespace levanter::trainer
