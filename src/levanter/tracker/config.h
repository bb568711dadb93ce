// `trainer.tracker`: where metrics go (Levanter's TrackerConfig keys). `json` (the default here) writes
// <log_dir>/<run id>/metrics.jsonl; `noop` writes nothing. Levanter's default, wandb, needs the network: it is an
// error that says so.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace levanter::tracker {

struct TrackerConfig {
  std::string type = "json";
  std::optional<std::string> project, name, entity, group, notes, mode;
  std::vector<std::string> tags;
  template <typename V>
  void fields(V& v) {
    v("type", type, "json (metrics.jsonl in the run directory) or noop; wandb and tensorboard are not available");
    v("project", project, "Project name, recorded in the run record");
    v("name", name, "Run display name, recorded in the run record");
    v("entity", entity, "Recorded in the run record");
    v("group", group, "Recorded in the run record");
    v("tags", tags, "Tags, recorded in the run record");
    v("notes", notes, "Recorded in the run record");
    v("mode", mode, "Levanter's wandb mode; recorded only");
  }
  // Throws config::ConfigError naming trainer.tracker.type for trackers that do not exist here.
  void validate() const;
};

}  // namespace levanter::tracker
