// When to checkpoint, and which checkpoints to keep: Levanter's Checkpointer, with its config keys
// (trainer.checkpointer.*) and its semantics:
//
// - Permanent checkpoints every `every` steps of the first keep policy whose `until` has not passed
//   (keep: [{every: 2, until: 10}, {every: 5, until: 20}, {every: 10}] saves 2,4,6,8,10,15,20,30,40,...).
//   They are never deleted.
// - Temporary checkpoints whenever `save_interval` has elapsed since the last save (0 disables). The previous
//   temporary checkpoint is deleted once a newer checkpoint (of either kind) is complete, and only if its
//   metadata still says it is temporary.
// - Step 0 never saves (it restarts the timer); a step already saved is not saved again; a save that the
//   policy did not ask for (forced) is permanent; the end of a run saves a permanent checkpoint.
//
// Saving is synchronous (the caller's thread writes and fsyncs). Time comes from an injectable clock.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "levanter/checkpoint/checkpoint.h"
#include "levanter/config/config.h"

namespace levanter::checkpoint {

// One keep policy: a permanent checkpoint every `every` steps, up to and including step `until` (forever if
// absent).
struct CheckpointInterval {
  int64_t every = 10000;
  std::optional<int64_t> until;
  template <typename V>
  void fields(V& v) {
    v("every", every, "Save a permanent checkpoint every this many steps");
    v("until", until, "...up to this step (absent: forever)");
  }
};

// trainer.checkpointer.keep: a list of CheckpointInterval, checked when parsed as Levanter checks it: every
// `every` is positive, only the last policy may omit `until`, and the `until`s increase.
struct KeepPolicies {
  std::vector<CheckpointInterval> intervals{CheckpointInterval{}};  // [{every: 10000}]

  void parse_yaml(const YAML::Node& node, const config::Context& ctx);
  YAML::Node to_yaml() const;
  // Throws config::ConfigError naming trainer.checkpointer.keep.<i> (for configs built in code).
  void validate(const std::string& where = "checkpointer.keep") const;
  // The `every` in force at `step`, or nullopt past the last `until`.
  std::optional<int64_t> every_at(int64_t step) const;
};
inline std::string type_name(const KeepPolicies&) { return "list of {every, until}"; }

struct CheckpointerConfig {
  std::string base_path = "checkpoints/";
  config::Duration save_interval{std::chrono::minutes(15)};
  KeepPolicies keep;
  bool append_run_id_to_base_path = true;
  bool delete_old_temp_checkpoints = true;

  template <typename V>
  void fields(V& v) {
    v("base_path", base_path, "Directory for checkpoints (local paths only), relative to the working directory");
    v("save_interval", save_interval,
      "Save a temporary checkpoint when this much time has passed since the last save (e.g. 10m; 0 disables). "
      "The previous temporary checkpoint is deleted once a newer one is complete");
    v("keep", keep, "Permanent checkpoints: a list of {every: N, until: M}; only the last may omit until");
    v("append_run_id_to_base_path", append_run_id_to_base_path, "Save under <base_path>/<run id>/");
    v("delete_old_temp_checkpoints", delete_old_temp_checkpoints,
      "Delete a temporary checkpoint left by an earlier attempt of this run once a newer checkpoint is saved");
  }

  // <base_path>/<run_id> (or base_path alone), with a leading ~ expanded.
  std::string expanded_path(const std::string& run_id) const;
  // Throws config::ConfigError for what cannot work here (remote URLs, bad keep policies).
  void validate() const;
};

enum class SaveKind { kNone, kTemporary, kPermanent };
const char* to_string(SaveKind kind);

class Checkpointer {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Clock = std::function<TimePoint()>;

  // Checkpoints live in `base_path` (usually config.expanded_path(run_id)); config.base_path is not used.
  // Removes leftovers of killed writers. If the newest complete checkpoint is temporary (an earlier attempt
  // of this run) and config.delete_old_temp_checkpoints, it is deleted after the next successful save.
  // `clock` defaults to steady_clock::now; the save_interval timer starts now.
  Checkpointer(std::string base_path, const CheckpointerConfig& config, Clock clock = {});

  const std::string& base_path() const { return base_path_; }

  // What the policy asks for after `step` at time `now` (pure).
  SaveKind decide(int64_t step, TimePoint now) const;
  // decide(step, now) != kNone; at step 0 it also restarts the save_interval timer (as Levanter does).
  bool should_save(int64_t step, TimePoint now);
  bool should_save(int64_t step) { return should_save(step, clock_()); }

  // Writes step-<step> as decide(step, clock()) says; a save the policy did not ask for is permanent.
  // Then deletes the previous temporary checkpoint. Returns the checkpoint's path.
  std::string save(int64_t step, const TensorGroups& groups, const nlohmann::json& metadata = nlohmann::json::object());
  std::string save(int64_t step, const TensorGroups& groups, const nlohmann::json& metadata, SaveKind kind);

  // The end of training: saves a permanent checkpoint of `step` unless one was just saved at this step.
  // Returns its path, or nullopt if nothing needed saving.
  std::optional<std::string> on_run_end(int64_t step, const TensorGroups& groups,
                                        const nlohmann::json& metadata = nlohmann::json::object());

  // Resuming: the newest complete checkpoint under base_path (see checkpoint.h). A process that saves pieces
  // (set_sharding) loads its own pieces, whatever processes wrote the checkpoint (blocks()).
  std::optional<std::string> latest() const { return latest_checkpoint(base_path_); }
  std::optional<Checkpoint> load_latest(const std::vector<std::string>& groups = {}) const {
    return load_latest_checkpoint(base_path_, groups, blocks());
  }
  // This process's blocks under set_sharding's plan (blocks_of_process); empty (whole tensors) without one.
  BlockOf blocks() const { return sharded() ? blocks_of_process(*sharding_) : BlockOf(); }

  // Several processes saving each its own pieces (FSDP; see Sharding in checkpoint.h): every save writes them
  // together, process 0's clock decides the temporary saves for all (should_save agrees on it), and only process 0
  // deletes old checkpoints and leftovers.
  void set_sharding(Sharding sharding) { sharding_ = std::move(sharding); }

  int64_t last_save_step() const { return last_save_step_; }
  // The temporary checkpoint that the next save will delete, if any.
  const std::optional<std::string>& pending_temporary() const { return last_temporary_; }

 private:
  void after_save(const std::string& path, int64_t step, SaveKind kind);

  std::string base_path_;
  std::chrono::duration<double> save_interval_;
  KeepPolicies keep_;
  Clock clock_;
  TimePoint last_save_time_;
  int64_t last_save_step_ = 0;
  SaveKind last_save_kind_ = SaveKind::kNone;
  std::optional<std::string> last_temporary_;
  std::optional<Sharding> sharding_;
  bool sharded() const { return sharding_ && sharding_->processes > 1; }
  SaveKind agreed_kind_ = SaveKind::kNone;  // sharded: the kind should_save agreed on for agreed_step_
  int64_t agreed_step_ = -1;
};

}  // namespace levanter::checkpoint
