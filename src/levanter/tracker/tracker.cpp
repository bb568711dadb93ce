#include "levanter/tracker/tracker.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <stdexcept>

#include "levanter/config/config.h"

namespace levanter::tracker {

void TrackerConfig::validate() const {
  if (type == "json" || type == "noop") return;
  if (type == "wandb") {
    throw config::ConfigError(
        "trainer.tracker.type: wandb needs network access, which this machine does not have; use "
        "type: json (metrics.jsonl in the run directory; the default) or noop");
  }
  throw config::ConfigError("trainer.tracker.type: unknown tracker '" + type + "'; valid: json, noop");
}

struct JsonLogger::File {
  std::ofstream out;
};

JsonLogger::JsonLogger(std::string path) : path_(std::move(path)), file_(std::make_unique<File>()) {
  file_->out.open(path_, std::ios::app);
  if (!file_->out) throw std::runtime_error("cannot write metrics file " + path_);
}

JsonLogger::~JsonLogger() = default;

void JsonLogger::log(const Metrics& metrics, int64_t step) {
  if (!file_->out.is_open()) return;
  nlohmann::ordered_json row;
  row["step"] = step;
  for (const auto& [name, value] : metrics) {
    std::visit([&row, &name = name](const auto& v) { row[name] = v; }, value);
  }
  file_->out << row.dump() << "\n";
  file_->out.flush();
}

void JsonLogger::finish() {
  if (file_->out.is_open()) file_->out.close();
}

void CompositeTracker::log_hyperparameters(const Metrics& hparams) {
  for (auto& t : trackers_) t->log_hyperparameters(hparams);
}
void CompositeTracker::log(const Metrics& metrics, int64_t step) {
  for (auto& t : trackers_) t->log(metrics, step);
}
void CompositeTracker::log_summary(const Metrics& metrics) {
  for (auto& t : trackers_) t->log_summary(metrics);
}
void CompositeTracker::finish() {
  for (auto& t : trackers_) t->finish();
}

std::unique_ptr<Tracker> make_tracker(const TrackerConfig& config, const std::string& run_dir) {
  config.validate();
  std::vector<std::unique_ptr<Tracker>> trackers;
  if (config.type == "json") trackers.push_back(std::make_unique<JsonLogger>(run_dir + "/metrics.jsonl"));
  if (trackers.empty()) return std::make_unique<NoopTracker>();
  if (trackers.size() == 1) return std::move(trackers.front());
  return std::make_unique<CompositeTracker>(std::move(trackers));
}

}  // namespace levanter::tracker
