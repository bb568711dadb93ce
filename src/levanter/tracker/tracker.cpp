#include "levanter/tracker/tracker.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "levanter/config/config.h"
#include "levanter/runtime/file_io.h"
#include "levanter/tracker/tensorboard.h"

namespace levanter::tracker {

namespace fs = std::filesystem;

void TrackerConfig::validate(const std::string& where) const {
  const std::string key = where + ".type";
  if (type == "wandb") {
    throw config::ConfigError(key +
                              ": wandb needs an account and network access, which this machine does not have; use "
                              "type: json (metrics.jsonl in the run directory; the default), tensorboard (event files "
                              "that TensorBoard reads offline) or noop");
  }
  if (type != "json" && type != "json_logger" && type != "tensorboard" && type != "noop") {
    throw config::ConfigError(key + ": unknown tracker '" + type + "'; valid: json (json_logger), tensorboard, noop");
  }
  // A key of another tracker type would silently do nothing: refused, naming it.
  auto only_for = [&](const char* name, bool set, const char* owner) {
    const bool mine = type == owner || (std::string(owner) == "json" && type == "json_logger");
    if (set && !mine) {
      throw config::ConfigError(where + "." + name + ": a key of the " + owner + " tracker, but this tracker is " +
                                type);
    }
  };
  only_for("logdir", logdir.has_value(), "tensorboard");
  only_for("comment", comment.has_value(), "tensorboard");
  only_for("filename_suffix", filename_suffix.has_value(), "tensorboard");
  only_for("purge_step", purge_step.has_value(), "tensorboard");
  only_for("max_queue", max_queue.has_value(), "tensorboard");
  only_for("flush_secs", flush_secs.has_value(), "tensorboard");
  only_for("write_to_disk", write_to_disk.has_value(), "tensorboard");
  only_for("logger_name", logger_name.has_value(), "json");
  only_for("level", level.has_value(), "json");
  if (logdir && logdir->empty()) throw config::ConfigError(where + ".logdir: must not be empty");
  if (filename_suffix && filename_suffix->find('/') != std::string::npos) {
    throw config::ConfigError(where + ".filename_suffix: must not contain '/'");
  }
}

void TrackerConfigs::parse_yaml(const YAML::Node& node, const config::Context& ctx) {
  items.clear();
  as_list = node.IsSequence();
  if (node.IsNull()) {
    items.emplace_back();
  } else if (node.IsSequence()) {
    if (node.size() == 0) config::fail(ctx, node, "an empty list of trackers; use type: noop to log nothing");
    for (size_t i = 0; i < node.size(); ++i) {
      TrackerConfig t;
      config::parse_value(node[i], ctx.child(std::to_string(i)), t);
      items.push_back(std::move(t));
    }
  } else {
    TrackerConfig t;
    config::parse_value(node, ctx, t);
    items.push_back(std::move(t));
  }
}

YAML::Node TrackerConfigs::to_yaml() const {
  if (!as_list && items.size() == 1) return config::to_yaml_value(items.front());
  return config::to_yaml_value(items);
}

void TrackerConfigs::validate() const {
  if (items.empty()) throw config::ConfigError("trainer.tracker: no tracker; use type: noop to log nothing");
  for (size_t i = 0; i < items.size(); ++i) {
    items[i].validate(as_list ? "trainer.tracker." + std::to_string(i) : "trainer.tracker");
  }
}

namespace {
// train/ and throughput/ metrics describe a step (their `step` is its 0-based index); the others (evaluations)
// describe the state after `step` steps.
bool is_step_metric(const std::string& name) {
  return name.rfind("train/", 0) == 0 || name.rfind("throughput/", 0) == 0;
}
}  // namespace

bool logged_again(const std::string& name, int64_t step, int64_t completed_steps, bool final_eval_again) {
  if (is_step_metric(name)) return step >= completed_steps;
  return step > completed_steps || (final_eval_again && step == completed_steps);
}

struct JsonLogger::File {
  runtime::File out;
  dev_t dev = 0;
  ino_t ino = 0;

  void open(const std::string& path) {
    out = runtime::File::open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    struct stat st;
    if (::fstat(out.fd(), &st) != 0) throw runtime::IoError(path + ": cannot stat: " + std::strerror(errno));
    dev = st.st_dev;
    ino = st.st_ino;
  }
  // The path still names the file being written: a deleted run directory, or a metrics.jsonl moved away, would
  // otherwise swallow every later row without an error.
  void check_still_there(const std::string& path) const {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      throw runtime::IoError(path + ": the metrics file is gone (" + std::strerror(errno) +
                             "): its directory was removed or it was moved while the run was writing it");
    }
    if (st.st_dev != dev || st.st_ino != ino) {
      throw runtime::IoError(path + ": the metrics file was replaced by another file while the run was writing it");
    }
  }
};

JsonLogger::JsonLogger(std::string path) : path_(std::move(path)), file_(std::make_unique<File>()) {
  file_->open(path_);
}

JsonLogger::~JsonLogger() = default;

void JsonLogger::log(const Metrics& metrics, int64_t step) {
  if (!file_->out.is_open()) throw runtime::IoError(path_ + ": the metrics file is closed (finish() was called)");
  nlohmann::ordered_json row;
  row["step"] = step;
  for (const auto& [name, value] : metrics) {
    std::visit([&row, &name = name](const auto& v) { row[name] = v; }, value);
  }
  const std::string line = row.dump() + "\n";
  file_->out.write_all(line.data(), line.size());
  file_->check_still_there(path_);
}

namespace {

// Whether a metrics.jsonl row is one that a run resumed after `completed` steps writes again.
bool redone(const nlohmann::json& row, int64_t completed, bool final_eval_again) {
  if (!row.is_object() || !row.contains("step") || !row["step"].is_number_integer()) return false;
  const int64_t step = row["step"].get<int64_t>();
  std::string name;  // a step's metric if the row has one, else any other
  for (auto it = row.begin(); it != row.end(); ++it) {
    if (it.key() == "step") continue;
    name = it.key();
    if (is_step_metric(name)) break;
  }
  return logged_again(name, step, completed, final_eval_again);
}

}  // namespace

// Calls keep(line) for every line of `path` that a resumed run keeps, in order; returns whether any was dropped.
// A last line without its newline that does not parse is the tail of a write a crash interrupted: dropped.
template <typename Keep>
bool JsonLogger::filter_rows(int64_t completed_steps, bool final_eval_again, Keep&& keep) const {
  std::ifstream in(path_, std::ios::binary);
  if (!in) throw runtime::IoError(path_ + ": cannot open: " + std::strerror(errno));
  bool dropped = false;
  for (std::string line; std::getline(in, line);) {
    const bool complete = !in.eof();
    nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if ((!complete && row.is_discarded()) || (!row.is_discarded() && redone(row, completed_steps, final_eval_again))) {
      dropped = true;
      continue;
    }
    keep(line);
  }
  if (in.bad()) throw runtime::IoError(path_ + ": read failed");
  return dropped;
}

void JsonLogger::resume_at(int64_t completed_steps, bool final_eval_again) {
  std::error_code ec;
  // Only a regular file is rewritten (metrics.jsonl may be a link to a device or a pipe: nothing to read then).
  if (!fs::is_regular_file(path_, ec)) return;
  // Two passes: most starts (a fresh run, a resume right after its checkpoint's rows) drop nothing.
  if (!filter_rows(completed_steps, final_eval_again, [](const std::string&) {})) return;
  // A link to a file: rewrite the file it points to, and keep the link.
  runtime::AtomicFile out(fs::canonical(path_).string());
  std::string buf;
  filter_rows(completed_steps, final_eval_again, [&](const std::string& line) {
    buf.append(line);
    buf.push_back('\n');
    if (buf.size() >= (1u << 20)) {
      out.write(buf.data(), buf.size());
      buf.clear();
    }
  });
  out.write(buf.data(), buf.size());
  file_->out.close();
  out.commit();
  file_->open(path_);
}

void JsonLogger::finish() {
  if (!file_->out.is_open()) return;
  file_->out.sync_data();
  file_->out.close();
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
void CompositeTracker::resume_at(int64_t completed_steps, bool final_eval_again) {
  for (auto& t : trackers_) t->resume_at(completed_steps, final_eval_again);
}
void CompositeTracker::finish() {
  for (auto& t : trackers_) t->finish();
}

std::unique_ptr<Tracker> make_tracker(const TrackerConfigs& configs, const std::string& run_dir,
                                      const std::string& run_id) {
  configs.validate();
  std::vector<std::unique_ptr<Tracker>> trackers;
  for (const TrackerConfig& c : configs) {
    if (c.type == "json" || c.type == "json_logger") {
      trackers.push_back(std::make_unique<JsonLogger>(run_dir + "/metrics.jsonl"));
    } else if (c.type == "tensorboard" && c.write_to_disk.value_or(true)) {
      const std::string dir = (fs::path(c.logdir.value_or("tblogs")) / run_id).string();
      trackers.push_back(std::make_unique<TensorboardTracker>(dir, c.filename_suffix.value_or("")));
    }
  }
  if (trackers.empty()) return std::make_unique<NoopTracker>();
  if (trackers.size() == 1) return std::move(trackers.front());
  return std::make_unique<CompositeTracker>(std::move(trackers));
}

}  // namespace levanter::tracker
