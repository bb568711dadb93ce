// `trainer.tracker`: where metrics go (Levanter's TrackerConfig choices and keys). One tracker as a mapping, or
// several as a list (Levanter's `tracker: [{type: json_logger}, {type: tensorboard, logdir: tb}]`):
//   json (the default; also Levanter's name json_logger)   <log_dir>/<run id>/metrics.jsonl
//   tensorboard                                              TensorBoard event files in <logdir>/<run id>
//   noop                                                     nothing
// Levanter's default, wandb, needs the network and an account: an error that says what to use instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace YAML {
class Node;
}

namespace levanter::config {
struct Context;
}

namespace levanter::tracker {

struct TrackerConfig {
  std::string type = "json";
  // wandb's descriptive keys: recorded in the run record.
  std::optional<std::string> project, name, entity, group, notes, mode;
  std::vector<std::string> tags;
  // tensorboard (Levanter's TensorboardConfig); optional so that setting one for another type is an error.
  std::optional<std::string> logdir, comment, filename_suffix;
  std::optional<int64_t> purge_step, max_queue, flush_secs;
  std::optional<bool> write_to_disk;
  // json_logger (Levanter's JsonLoggerConfig): accepted; metrics go to metrics.jsonl whatever they say.
  std::optional<std::string> logger_name;
  std::optional<int64_t> level;

  template <typename V>
  void fields(V& v) {
    v("type", type,
      "json (metrics.jsonl in the run directory; Levanter's json_logger is the same), tensorboard (event files "
      "under logdir/<run id>) or noop; a list of trackers writes to each");
    v("project", project, "Project name, recorded in the run record");
    v("name", name, "Run display name, recorded in the run record");
    v("entity", entity, "Recorded in the run record");
    v("group", group, "Recorded in the run record");
    v("tags", tags, "Tags, recorded in the run record");
    v("notes", notes, "Recorded in the run record");
    v("mode", mode, "Levanter's wandb mode; recorded only");
    v("logdir", logdir,
      "tensorboard: the directory whose <run id>/ subdirectory gets the event files (default tblogs)");
    v("filename_suffix", filename_suffix, "tensorboard: appended to each event file's name");
    v("comment", comment, "tensorboard: accepted for Levanter configs; no effect (the directory is logdir/<run id>)");
    v("purge_step", purge_step,
      "tensorboard: accepted for Levanter configs; no effect (a resumed run removes the rows it logs again itself)");
    v("max_queue", max_queue, "tensorboard: accepted; no effect (each log call is written at once)");
    v("flush_secs", flush_secs, "tensorboard: accepted; no effect (each log call is written at once)");
    v("write_to_disk", write_to_disk, "tensorboard: false writes nothing (as Levanter's)");
    v("logger_name", logger_name, "json_logger: accepted; no effect (rows go to metrics.jsonl)");
    v("level", level, "json_logger: accepted; no effect");
  }
  // Throws config::ConfigError naming trainer.tracker(.N).type for trackers that do not exist here and for keys
  // of another tracker type. `where` is the key path for messages.
  void validate(const std::string& where = "trainer.tracker") const;
};

// The `trainer.tracker` value: one tracker (a mapping) or several (a list). Never empty.
struct TrackerConfigs {
  std::vector<TrackerConfig> items{TrackerConfig{}};
  bool as_list = false;  // written as a list (kept for dumping)

  size_t size() const { return items.size(); }
  const TrackerConfig& operator[](size_t i) const { return items.at(i); }
  TrackerConfig& operator[](size_t i) { return items.at(i); }
  std::vector<TrackerConfig>::const_iterator begin() const { return items.begin(); }
  std::vector<TrackerConfig>::const_iterator end() const { return items.end(); }

  // The keys of one tracker, for the configuration reference.
  template <typename V>
  void fields(V& v) {
    items.front().fields(v);
  }
  void parse_yaml(const YAML::Node& node, const config::Context& ctx);
  YAML::Node to_yaml() const;
  void validate() const;
};

}  // namespace levanter::tracker
