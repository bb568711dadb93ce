// Checkpoint directories: everything a run needs to continue bit for bit, written so that a crash at any
// moment never leaves something that loads.
//
//   <base_path>/step-<N>/
//     <group>.safetensors   one file per tensor group, e.g. model.safetensors, opt_state.safetensors
//     metadata.json         {"step", "is_temporary", "timestamp", "num_threads", "versions", ...caller's keys}
//     manifest.json         written last: {"step": N, "files": [{"name", "size", "crc32"}, ...]}
//
// Commit protocol (save_checkpoint): write every file into <base_path>/.tmp-step-<N>-<pid>/ (O_CREAT|O_EXCL,
// every write and fsync checked), fsync the directory, rename it to step-<N>, fsync <base_path>, then write
// manifest.json inside step-<N> (via a temporary name, fsync, rename, fsync). A checkpoint is complete iff its
// manifest exists and every file it lists has the listed size and CRC32. Readers trust nothing else:
// a step-<N> without a verifying manifest is incomplete and is never loaded.
//
// Re-saving a step that already has a complete checkpoint (e.g. a temporary one promoted at the end of a run)
// swaps the finished new directory in with one atomic rename (RENAME_EXCHANGE), so a complete step-<N> exists
// at every instant.
//
// Writers hold an flock on their temporary directory; leftovers from killed writers (lock free, pid dead)
// are removed by cleanup_stale_temporaries, which the Checkpointer runs at start-up and after every save.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "levanter/checkpoint/error.h"
#include "levanter/checkpoint/safetensors.h"

namespace levanter::checkpoint {

// Tensor groups, each stored as <name>.safetensors, in this order. Names: letters, digits, '_', '-', '.'
// (not starting with '.'). Tensor names within a group are the module's dotted parameter paths.
using TensorGroups = std::vector<std::pair<std::string, StateDict>>;

struct Checkpoint {
  std::string path;  // the step-<N> directory
  int64_t step = 0;
  nlohmann::json metadata;  // metadata.json
  TensorGroups groups;      // in the order saved

  // The group named `name`; CheckpointError naming the checkpoint and the groups it has if absent.
  const StateDict& group(const std::string& name) const;
  bool is_temporary() const { return metadata.value("is_temporary", false); }
};

// "step-<N>".
std::string checkpoint_dir_name(int64_t step);

// A checkpoint written by several processes that each hold pieces of the state (FSDP, tensor parallelism). The
// processes form a `mesh` (rank r at its row-major coordinates; empty: one axis "data" of `processes`). Every process
// calls save_checkpoint with its own groups (the same groups and keys everywhere) and the same `dims`: per group, per
// key, per mesh axis, the dimension cut into as many equal blocks as that axis has processes, of which a process
// holds the block of its coordinate; keys not listed are whole and the same on every process. A process writes an
// entry only if its coordinates are 0 on every mesh axis that does not cut it (so nothing is written twice), into
// <group>.shard-<r>-of-<N>.safetensors in one temporary directory; process 0 commits as above, with every process's
// files in the manifest and `sharding` ({"processes", "mesh", "dims"}) in metadata.json. load_checkpoint puts the
// pieces back together, so such a checkpoint loads like any other, into any number of processes and any mesh.
struct Sharding {
  int rank = 0;
  int processes = 1;
  std::vector<std::pair<std::string, int64_t>> mesh;
  std::map<std::string, std::map<std::string, std::map<std::string, int64_t>>> dims;  // group -> key -> axis -> dim
  std::function<std::string(const std::string&)> broadcast;                // process 0's value on every process
  std::function<std::vector<std::string>(const std::string&)> all_gather;  // every process's value, in rank order
  std::function<int64_t(int64_t)> max;  // the largest of every process's value (Checkpointer's agreement per step)
};

// A block of a tensor: per dimension, the range [begin, end) of the whole tensor.
using Block = std::vector<std::pair<int64_t, int64_t>>;
// Which block of each tensor to load: (group, key, the whole tensor's shape) -> its block.
using BlockOf =
    std::function<Block(const std::string& group, const std::string& key, const std::vector<int64_t>& whole)>;

// The blocks that process `sh.rank` holds under sh's mesh and dims: per cutting mesh axis (in mesh order, an outer
// axis before an inner one on the same dimension), the block of its coordinate. What save_checkpoint writes of that
// process's entries, and what it loads back (load_checkpoint with these blocks). The function throws naming the key
// when a cut dimension does not split evenly; load_checkpoint reports that as DoesNotFit (a checkpoint of another
// model: an error, not a corrupt checkpoint to skip).
BlockOf blocks_of_process(const Sharding& sh);

// Writes <base_path>/step-<step>/ (see the protocol above) and returns its path. `metadata` must be a JSON
// object (or null); the keys step, is_temporary, timestamp, unix_time and format_version are set here, and
// num_threads (at::get_num_threads()) and versions.libtorch are filled in unless the caller set them.
// Fault points (fault.h): checkpoint_write:<step>, checkpoint_commit:<step>.
std::string save_checkpoint(const std::string& base_path, int64_t step, const TensorGroups& groups,
                            const nlohmann::json& metadata = nlohmann::json::object(), bool is_temporary = false,
                            const Sharding* sharding = nullptr);

// Verifies the manifest (sizes and CRC32 of every file read) and returns the tensors and metadata. A file written
// whole is read once; its checksum is computed during that read, before any tensor is made from it. Pieces written
// by several processes are read as load_checkpoint with blocks reads them (each file verified in a pass of its own,
// then its tensors read). With `groups` non-empty, only those groups are read. Throws CheckpointError naming the
// file at fault.
Checkpoint load_checkpoint(const std::string& path, const std::vector<std::string>& groups = {});
// The same, each tensor holding only block_of(group, key, its whole shape), whatever processes and mesh wrote the
// checkpoint: every file of the groups read is verified first (size and CRC32, a streaming pass that keeps nothing),
// then only the rows that hold the block are read, straight from the pieces that hold them. A process loading its
// pieces thus never holds the whole state, nor the whole of any file. With an empty block_of, the whole tensors.
// DoesNotFit (error.h) when block_of throws (its tensors cannot be cut so).
Checkpoint load_checkpoint(const std::string& path, const std::vector<std::string>& groups, const BlockOf& block_of);

enum class Verify {
  kSizes,      // manifest present and valid, every file present with its listed size
  kChecksums,  // and every file's CRC32 matches (reads every byte)
};

// "" if the checkpoint at `path` is complete, else the reason (naming the file at fault).
std::string verify_checkpoint(const std::string& path, Verify level = Verify::kChecksums);

// The step-<N> directories under base_path (complete or not), by increasing step.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& base_path);

// The newest complete checkpoint under base_path, or nullopt. Incomplete or corrupt ones are skipped, with a
// line on stderr giving the reason.
std::optional<std::string> latest_checkpoint(const std::string& base_path, Verify level = Verify::kChecksums);

// load_checkpoint of the newest checkpoint that loads (verification and loading in the same pass for a file read
// whole), skipping incomplete or corrupt ones (CheckpointError) as latest_checkpoint does. nullopt if none.
std::optional<Checkpoint> load_latest_checkpoint(const std::string& base_path,
                                                 const std::vector<std::string>& groups = {},
                                                 const BlockOf& block_of = {});

// metadata.json of a checkpoint (checked against the manifest's size and CRC32; tensors are not read).
nlohmann::json read_checkpoint_metadata(const std::string& path);

// What differs between this process and the one that wrote a checkpoint's metadata in ways that break
// bit-for-bit continuation: the thread count (ATen's CPU reductions split work by it) and the libtorch
// version. One sentence each; empty if nothing differs. The trainer prints them on resume.
std::vector<std::string> resume_warnings(const nlohmann::json& metadata);

// Removes a checkpoint directory: first renamed to a hidden temporary name (so it disappears atomically),
// then deleted.
void delete_checkpoint(const std::string& path);

// Removes <base_path>/.tmp-* directories left by writers that died: those whose flock is free and whose pid
// (the name's last field) is not a live process, or that have been untouched for over a minute. Returns how
// many it removed (each is reported on stderr).
int cleanup_stale_temporaries(const std::string& base_path);

}  // namespace levanter::checkpoint
