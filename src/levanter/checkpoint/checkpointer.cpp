#include "levanter/checkpoint/checkpointer.h"

#include <cstdlib>
#include <filesystem>
#include <iostream>

namespace levanter::checkpoint {
namespace fs = std::filesystem;

namespace {

// The first problem with a list of keep policies, as (index, key, message), or index -1 if none.
struct KeepProblem {
  int index = -1;
  const char* key = "";
  std::string message;
};

KeepProblem check_keep(const std::vector<CheckpointInterval>& intervals) {
  for (size_t i = 0; i < intervals.size(); ++i) {
    const CheckpointInterval& p = intervals[i];
    if (p.every <= 0) return {int(i), "every", "must be a positive number of steps, got " + std::to_string(p.every)};
    if (i + 1 < intervals.size() && !p.until) {
      return {int(i), "until",
              "only the last keep policy may omit 'until' (it applies forever, so later ones never would)"};
    }
    if (i > 0 && p.until && *p.until <= *intervals[i - 1].until) {
      return {int(i), "until",
              "keep policies must be sorted by increasing 'until' (" + std::to_string(*p.until) + " follows " +
                  std::to_string(*intervals[i - 1].until) + ")"};
    }
  }
  return {};
}

}  // namespace

void KeepPolicies::parse_yaml(const YAML::Node& node, const config::Context& ctx) {
  config::parse_value(node, ctx, intervals);
  KeepProblem p = check_keep(intervals);
  if (p.index < 0) return;
  YAML::Node at = node.IsSequence() ? node[p.index] : node;
  if (at.IsMap() && at[p.key].IsDefined()) at = at[p.key];
  config::fail(ctx.child(std::to_string(p.index)).child(p.key), at, p.message);
}

YAML::Node KeepPolicies::to_yaml() const {
  YAML::Node list(YAML::NodeType::Sequence);
  for (const CheckpointInterval& p : intervals) {
    YAML::Node item(YAML::NodeType::Map);
    item["every"] = config::to_yaml_value(p.every);
    if (p.until) item["until"] = config::to_yaml_value(*p.until);
    item.SetStyle(YAML::EmitterStyle::Flow);
    list.push_back(item);
  }
  list.SetStyle(YAML::EmitterStyle::Flow);
  return list;
}

void KeepPolicies::validate(const std::string& where) const {
  KeepProblem p = check_keep(intervals);
  if (p.index >= 0) {
    throw config::ConfigError(where + "." + std::to_string(p.index) + "." + p.key + ": " + p.message);
  }
}

std::optional<int64_t> KeepPolicies::every_at(int64_t step) const {
  for (const CheckpointInterval& p : intervals) {
    if (!p.until || *p.until >= step) return p.every;
  }
  return std::nullopt;
}

std::string CheckpointerConfig::expanded_path(const std::string& run_id) const {
  std::string base = base_path;
  if (base.rfind("file://", 0) == 0) base = base.substr(7);
  if (!base.empty() && base[0] == '~' && (base.size() == 1 || base[1] == '/')) {
    const char* home = std::getenv("HOME");
    if (home) base = std::string(home) + base.substr(1);
  }
  if (append_run_id_to_base_path && !run_id.empty()) return (fs::path(base) / run_id).string();
  return base;
}

void CheckpointerConfig::validate() const {
  const size_t scheme = base_path.find("://");
  if (scheme != std::string::npos && base_path.rfind("file://", 0) != 0) {
    throw config::ConfigError("trainer.checkpointer.base_path: '" + base_path + "': only local paths are supported (" +
                              base_path.substr(0, scheme) + ":// is not)");
  }
  if (base_path.empty()) throw config::ConfigError("trainer.checkpointer.base_path: must not be empty");
  if (save_interval.seconds() < 0)
    throw config::ConfigError("trainer.checkpointer.save_interval: must not be negative");
  keep.validate("trainer.checkpointer.keep");
}

const char* to_string(SaveKind kind) {
  switch (kind) {
    case SaveKind::kNone:
      return "none";
    case SaveKind::kTemporary:
      return "temporary";
    case SaveKind::kPermanent:
      return "permanent";
  }
  return "?";
}

Checkpointer::Checkpointer(std::string base_path, const CheckpointerConfig& config, Clock clock)
    : base_path_(std::move(base_path)),
      save_interval_(config.save_interval.value),
      keep_(config.keep),
      clock_(clock ? std::move(clock) : Clock([] { return std::chrono::steady_clock::now(); })) {
  config.validate();
  last_save_time_ = clock_();
  cleanup_stale_temporaries(base_path_);
  if (config.delete_old_temp_checkpoints) {
    if (auto latest = latest_checkpoint(base_path_, Verify::kSizes)) {
      try {
        if (read_checkpoint_metadata(*latest).value("is_temporary", false)) {
          std::cerr << "levanter: found temporary checkpoint " << *latest
                    << " from an earlier attempt; it will be deleted after the next checkpoint is saved\n";
          last_temporary_ = *latest;
        }
      } catch (const std::exception& e) {
        std::cerr << "levanter: warning: cannot read the metadata of " << *latest << ": " << e.what() << "\n";
      }
    }
  }
}

SaveKind Checkpointer::decide(int64_t step, TimePoint now) const {
  if (step <= 0 || step == last_save_step_) return SaveKind::kNone;
  if (auto every = keep_.every_at(step); every && step % *every == 0) return SaveKind::kPermanent;
  if (save_interval_.count() > 0 && now - last_save_time_ >= save_interval_) return SaveKind::kTemporary;
  return SaveKind::kNone;
}

bool Checkpointer::should_save(int64_t step, TimePoint now) {
  if (step == 0) {
    last_save_time_ = now;
    return false;
  }
  SaveKind kind = decide(step, now);
  if (sharded()) {
    // Process 0's decision for every process (their clocks differ); the others offer kNone (0).
    kind = static_cast<SaveKind>(sharding_->max(sharding_->rank == 0 ? static_cast<int64_t>(kind) : 0));
    agreed_kind_ = kind;
    agreed_step_ = step;
  }
  return kind != SaveKind::kNone;
}

std::string Checkpointer::save(int64_t step, const TensorGroups& groups, const nlohmann::json& metadata) {
  SaveKind kind = sharded() && agreed_step_ == step ? agreed_kind_ : decide(step, clock_());
  return save(step, groups, metadata, kind == SaveKind::kNone ? SaveKind::kPermanent : kind);
}

std::string Checkpointer::save(int64_t step, const TensorGroups& groups, const nlohmann::json& metadata,
                               SaveKind kind) {
  if (kind == SaveKind::kNone) kind = SaveKind::kPermanent;
  std::string path = save_checkpoint(base_path_, step, groups, metadata, kind == SaveKind::kTemporary,
                                     sharding_ ? &*sharding_ : nullptr);
  after_save(path, step, kind);
  return path;
}

std::optional<std::string> Checkpointer::on_run_end(int64_t step, const TensorGroups& groups,
                                                    const nlohmann::json& metadata) {
  if (last_save_step_ == step && last_save_kind_ == SaveKind::kPermanent) return std::nullopt;
  if (last_save_step_ != step) {
    // A permanent checkpoint of this step from an earlier attempt (a run resumed at its very end).
    const std::string existing = (fs::path(base_path_) / checkpoint_dir_name(step)).string();
    if (fs::exists(existing) && verify_checkpoint(existing, Verify::kSizes).empty()) {
      try {
        if (!read_checkpoint_metadata(existing).value("is_temporary", true)) return std::nullopt;
      } catch (const CheckpointError&) {
        // unreadable metadata: save a fresh one
      }
    }
  }
  return save(step, groups, metadata, SaveKind::kPermanent);
}

void Checkpointer::after_save(const std::string& path, int64_t step, SaveKind kind) {
  last_save_step_ = step;
  last_save_time_ = clock_();
  last_save_kind_ = kind;
  std::optional<std::string> previous = std::move(last_temporary_);
  last_temporary_.reset();
  if (kind == SaveKind::kTemporary) last_temporary_ = path;
  if (sharded() && sharding_->rank != 0) return;  // process 0 deletes
  if (previous && fs::path(*previous).lexically_normal() != fs::path(path).lexically_normal()) {
    // The new checkpoint is complete (save_checkpoint returned after its manifest); only now may the previous
    // temporary one go, and only if it is still temporary.
    try {
      if (read_checkpoint_metadata(*previous).value("is_temporary", false)) {
        delete_checkpoint(*previous);
      } else {
        std::cerr << "levanter: keeping " << *previous << ": it is no longer temporary\n";
      }
    } catch (const std::exception& e) {
      std::cerr << "levanter: warning: not deleting old temporary checkpoint " << *previous << ": " << e.what() << "\n";
    }
  }
  cleanup_stale_temporaries(base_path_);
}

}  // namespace levanter::checkpoint
