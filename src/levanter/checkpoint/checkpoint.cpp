#include "levanter/checkpoint/checkpoint.h"

#include "haliax/partitioning.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <regex>

#include "levanter/checkpoint/safetensors_impl.h"
#include "levanter/runtime/fault.h"
#include "levanter/runtime/file_io.h"
#include "levanter/runtime/format.h"
#include "levanter/runtime/process.h"

namespace levanter::checkpoint {
namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

namespace {

constexpr const char* kManifest = "manifest.json";
constexpr const char* kMetadata = "metadata.json";
constexpr const char* kFormat = "levanter-cpp checkpoint";
constexpr int kFormatVersion = 1;
// A temporary directory untouched this long, with its lock free, is a leftover even if its pid was reused.
constexpr auto kStaleAge = std::chrono::seconds(60);

struct FileEntry {
  std::string name;
  int64_t size = 0;
  uint32_t crc = 0;
};

struct Manifest {
  int64_t step = 0;
  std::vector<FileEntry> files;
};

std::string join(const std::string& a, const std::string& b) { return (fs::path(a) / b).string(); }

void check_group_name(const std::string& name) {
  bool ok = !name.empty() && name[0] != '.';
  for (char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.');
  if (!ok) {
    throw CheckpointError("tensor group name '" + name +
                          "' is not a plain file name (letters, digits, '_', '-', '.'; not starting with '.')");
  }
}

std::string manifest_text(int64_t step, const std::vector<FileEntry>& files) {
  ordered_json m = ordered_json::object();
  m["format"] = kFormat;
  m["format_version"] = kFormatVersion;
  m["step"] = step;
  m["checksum"] = "crc32";
  ordered_json list = ordered_json::array();
  for (const FileEntry& f : files) {
    list.push_back(ordered_json{{"name", f.name}, {"size", f.size}, {"crc32", runtime::Crc32::hex(f.crc)}});
  }
  m["files"] = std::move(list);
  return m.dump(2) + "\n";
}

// Parses and checks manifest.json (not the files it lists). Throws CheckpointError.
Manifest read_manifest(const std::string& dir) {
  const std::string path = join(dir, kManifest);
  if (!fs::exists(path)) {
    throw CheckpointError(path + ": missing (incomplete checkpoint: its writer stopped before committing)");
  }
  ordered_json m;
  try {
    m = ordered_json::parse(runtime::read_small_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(path + ": not valid JSON (" + e.what() + ")");
  }
  auto bad = [&](const std::string& why) { return CheckpointError(path + ": " + why); };
  if (!m.is_object() || !m["format"].is_string() || m["format"].get<std::string>() != kFormat) {
    throw bad("not a levanter-cpp checkpoint manifest");
  }
  if (!m["format_version"].is_number_integer() || m["format_version"].get<int>() != kFormatVersion) {
    throw bad("format_version " + m["format_version"].dump() + " is not supported (this build reads " +
              std::to_string(kFormatVersion) + ")");
  }
  if (!m["step"].is_number_integer()) throw bad("step is missing or not an integer");
  if (!m["files"].is_array()) throw bad("files is missing or not a list");
  Manifest out;
  out.step = m["step"].get<int64_t>();
  bool has_metadata = false;
  for (ordered_json f : m["files"]) {  // a copy: operator[] on a const json must not meet a missing key
    if (!f.is_object() || !f["name"].is_string() || !f["size"].is_number_unsigned() || !f["crc32"].is_string()) {
      throw bad("malformed entry " + f.dump());
    }
    FileEntry e;
    e.name = f["name"].get<std::string>();
    if (e.name.empty() || e.name.find('/') != std::string::npos || e.name[0] == '.')
      throw bad("bad file name '" + e.name + "'");
    if (f["size"].get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) throw bad("bad size for " + e.name);
    e.size = f["size"].get<int64_t>();
    const std::string hex = f["crc32"].get<std::string>();
    char* end = nullptr;
    unsigned long v = std::strtoul(hex.c_str(), &end, 16);
    if (hex.size() != 8 || *end != '\0') throw bad("bad crc32 '" + hex + "' for " + e.name);
    e.crc = static_cast<uint32_t>(v);
    has_metadata = has_metadata || e.name == kMetadata;
    out.files.push_back(std::move(e));
  }
  if (!has_metadata) throw bad(std::string("does not list ") + kMetadata);
  // The directory's name is part of what is verified: a renamed or copied-over step-<N> must agree with it.
  const std::string base = fs::path(dir).filename().string();
  if (base.rfind("step-", 0) == 0 && base != checkpoint_dir_name(out.step)) {
    throw bad("records step " + std::to_string(out.step) + " but the directory is " + base);
  }
  return out;
}

// Reads one listed file, checking size and CRC32. Returns its bytes.
std::shared_ptr<runtime::Buffer> read_verified(const std::string& dir, const FileEntry& e) {
  const std::string path = join(dir, e.name);
  uint32_t crc = 0;
  auto buf = runtime::read_file(path, e.size, &crc);
  if (crc != e.crc) {
    throw CheckpointError(path + ": CRC32 is " + runtime::Crc32::hex(crc) + " but the manifest says " +
                          runtime::Crc32::hex(e.crc) + " (corrupt file)");
  }
  return buf;
}

json parse_metadata(const std::string& path, const runtime::Buffer& buf) {
  json m;
  try {
    m = json::parse(buf.data(), buf.data() + buf.size());
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(path + ": not valid JSON (" + e.what() + ")");
  }
  if (!m.is_object() || !m["step"].is_number_integer()) throw CheckpointError(path + ": no integer 'step'");
  return m;
}

bool parse_step_dir(const std::string& name, int64_t* step) {
  if (name.size() <= 5 || name.compare(0, 5, "step-") != 0) return false;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    char c = name[i];
    if (c < '0' || c > '9') return false;
    if (__builtin_mul_overflow(v, int64_t{10}, &v) || __builtin_add_overflow(v, int64_t{c - '0'}, &v)) return false;
  }
  *step = v;
  return true;
}

void remove_tree_quietly(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    std::cerr << "levanter: warning: could not remove " << path << ": " << ec.message() << "\n";
  }
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return;
  fs::create_directories(path, ec);
  if (ec) throw CheckpointError(path + ": cannot create directory: " + ec.message());
  fs::path abs = fs::absolute(path).lexically_normal();
  if (abs.filename().empty()) abs = abs.parent_path();  // "checkpoints/" -> "checkpoints"
  runtime::fsync_parent(abs.string());
}

// Atomically swaps two directory entries (Linux renameat2 RENAME_EXCHANGE). False if the file system lacks it.
bool exchange(const std::string& a, const std::string& b) {
#ifdef RENAME_EXCHANGE
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0) return true;
  if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) return false;
  throw CheckpointError(b + ": cannot exchange with " + a + ": " + std::strerror(errno));
#else
  return false;
#endif
}

}  // namespace

const StateDict& Checkpoint::group(const std::string& name) const {
  std::string have;
  for (const auto& [g, tensors] : groups) {
    if (g == name) return tensors;
    have += (have.empty() ? "" : ", ") + g;
  }
  throw CheckpointError(path + ": no tensor group '" + name + "' (it has: " + (have.empty() ? "none" : have) + ")");
}

std::string checkpoint_dir_name(int64_t step) { return "step-" + std::to_string(step); }

namespace {

// Writes `entries` as <dir>/<file> (checked, fsynced); the fault point checkpoint_write fires halfway through the
// first file when `fault` is set.
FileEntry write_group_file(const std::string& dir, const std::string& file, const StateDict& entries, int64_t step,
                           bool fault) {
  runtime::ExclusiveFile out(join(dir, file), /*checksum=*/false);
  detail::WriteProgress progress;
  if (fault) {
    progress = [&](uint64_t done, uint64_t total) {
      if (2 * done >= total)
        runtime::maybe_inject_fault("checkpoint_write", step, ("while writing " + out.path()).c_str());
    };
  }
  uint32_t crc = 0;
  try {
    crc = detail::write_safetensors(out, entries, {{"format", "pt"}}, progress);
  } catch (const CheckpointError& e) {
    std::string msg = e.what();
    if (msg.rfind(out.path(), 0) == 0) throw;
    throw CheckpointError(out.path() + ": " + msg);
  }
  if (fault) runtime::maybe_inject_fault("checkpoint_write", step, ("after writing " + out.path()).c_str());
  out.fsync_and_close();
  return {file, static_cast<int64_t>(out.bytes_written()), crc};
}

// "<group>.shard-<r>-of-<N>.safetensors": process r's pieces of a group written by N processes.
std::string shard_file_name(const std::string& group, int rank, int processes) {
  return group + ".shard-" + std::to_string(rank) + "-of-" + std::to_string(processes) + ".safetensors";
}

haliax::Mesh mesh_of(const Sharding& sh) {
  return haliax::Mesh(sh.mesh.empty() ? std::vector<std::pair<std::string, int64_t>>{{"data", sh.processes}} : sh.mesh);
}

using Cuts = std::map<std::string, int64_t>;  // mesh axis -> the dimension it cuts

// The cuts of `key` in `group` under `dims` (Sharding::dims); nullptr: whole.
const Cuts* cuts_of(const decltype(Sharding::dims)& dims, const std::string& group, const std::string& key) {
  auto g = dims.find(group);
  if (g == dims.end()) return nullptr;
  auto k = g->second.find(key);
  return k == g->second.end() ? nullptr : &k->second;
}

// Whether process `rank` writes a key cut on `cuts`: its coordinate is 0 on every mesh axis that does not cut it.
bool writes_entry(const haliax::Mesh& mesh, int64_t rank, const Cuts* cuts) {
  for (const auto& [axis, size] : mesh.axes()) {
    if (!(cuts && cuts->count(axis)) && mesh.coordinate(rank, axis) != 0) return false;
  }
  return true;
}

// This process's entries of `group` in a sharded save (writes_entry; process 0: every entry, its block of the cut
// ones and the whole of the others).
StateDict entries_of_process(const std::string& group, const StateDict& entries, const Sharding& sh) {
  if (sh.rank == 0) return entries;
  const haliax::Mesh mesh = mesh_of(sh);
  StateDict out;
  for (const auto& [key, t] : entries) {
    if (writes_entry(mesh, sh.rank, cuts_of(sh.dims, group, key))) out.emplace_back(key, t);
  }
  return out;
}

json file_entries_json(const std::vector<FileEntry>& files) {
  json a = json::array();
  for (const FileEntry& f : files) a.push_back({{"name", f.name}, {"size", f.size}, {"crc32", f.crc}});
  return a;
}

// Moves the finished temporary directory to step-<N> and writes the manifest last (see the protocol in checkpoint.h).
void commit_checkpoint(const std::string& base_path, const std::string& tmp_dir, const std::string& final_dir,
                       int64_t step, const std::vector<FileEntry>& files, bool& renamed) {
  runtime::fsync_path(tmp_dir);
  std::error_code ec;
  const bool existing = fs::exists(final_dir, ec);
  if (existing && verify_checkpoint(final_dir, Verify::kSizes).empty()) {
    // Replace a complete checkpoint without ever lacking one: finish the new directory (manifest included),
    // then swap the two names in one atomic rename.
    runtime::write_file_atomic(join(tmp_dir, kManifest), manifest_text(step, files));
    if (exchange(tmp_dir, final_dir)) {
      renamed = true;
      runtime::fsync_path(base_path);
      remove_tree_quietly(tmp_dir);  // now the old checkpoint
    } else {
      const std::string aside =
          join(base_path, ".tmp-old-" + checkpoint_dir_name(step) + "-" + std::to_string(::getpid()));
      runtime::rename_path(final_dir, aside);
      try {
        runtime::rename_path(tmp_dir, final_dir);
      } catch (...) {
        ::rename(aside.c_str(), final_dir.c_str());  // put the old one back
        throw;
      }
      renamed = true;
      runtime::fsync_path(base_path);
      remove_tree_quietly(aside);
    }
    return;
  }
  if (existing) {
    // An incomplete step-<N> (a writer killed after its rename): nothing in it can be trusted.
    const std::string aside =
        join(base_path, ".tmp-partial-" + checkpoint_dir_name(step) + "-" + std::to_string(::getpid()));
    std::cerr << "levanter: replacing incomplete checkpoint " << final_dir << "\n";
    runtime::rename_path(final_dir, aside);
    remove_tree_quietly(aside);
  }
  runtime::rename_path(tmp_dir, final_dir);
  renamed = true;
  runtime::fsync_path(base_path);
  runtime::maybe_inject_fault("checkpoint_commit", step, ("before writing " + join(final_dir, kManifest)).c_str());
  runtime::write_file_atomic(join(final_dir, kManifest), manifest_text(step, files));  // the commit
}

std::string metadata_text(const json& metadata, int64_t step, bool is_temporary, const std::vector<std::string>& names,
                          const Sharding* sh) {
  json meta = metadata.is_object() ? metadata : json::object();
  const auto now = std::chrono::system_clock::now();
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  meta["step"] = step;
  meta["is_temporary"] = is_temporary;
  meta["timestamp"] = runtime::utc_timestamp(now, runtime::TimestampPrecision::kMicroseconds);
  meta["unix_time"] = static_cast<double>(us) / 1e6;
  meta["format_version"] = kFormatVersion;
  meta["groups"] = names;
  if (sh && sh->processes > 1) {
    json mesh = json::array();
    const haliax::Mesh m = mesh_of(*sh);
    for (const auto& [axis, size] : m.axes()) mesh.push_back({axis, size});
    meta["sharding"] = {{"processes", sh->processes}, {"mesh", std::move(mesh)}, {"dims", sh->dims}};
  }
  if (!meta.contains("num_threads")) meta["num_threads"] = at::get_num_threads();
  if (!meta["versions"].is_object()) meta["versions"] = json::object();
  if (!meta["versions"].contains("libtorch")) meta["versions"]["libtorch"] = TORCH_VERSION;
  try {
    return meta.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(std::string("checkpoint metadata cannot be encoded as JSON: ") + e.what());
  }
}

std::vector<std::string> checked_group_names(const TensorGroups& groups) {
  std::vector<std::string> names;
  for (const auto& [g, _] : groups) {
    check_group_name(g);
    if (std::find(names.begin(), names.end(), g) != names.end())
      throw CheckpointError("tensor group '" + g + "' appears twice");
    names.push_back(g);
  }
  return names;
}

// A save's temporary directory, locked while the save lasts, and the names of its groups.
struct Staging {
  std::string dir;
  runtime::FileLock lock;
  std::vector<std::string> names;
};

// Checks a save's arguments, then makes and locks <base_path>/.tmp-step-<N>-<pid>.
Staging start_save(const std::string& base_path, int64_t step, const TensorGroups& groups, const json& metadata) {
  if (step < 0) throw CheckpointError("cannot save a checkpoint for negative step " + std::to_string(step));
  if (!metadata.is_object() && !metadata.is_null()) throw CheckpointError("checkpoint metadata must be a JSON object");
  std::vector<std::string> names = checked_group_names(groups);
  make_dirs(base_path);
  const std::string dir = join(base_path, ".tmp-" + checkpoint_dir_name(step) + "-" + std::to_string(::getpid()));
  remove_tree_quietly(dir);  // only this process uses this name: a leftover of an earlier failed attempt
  if (::mkdir(dir.c_str(), 0755) != 0)
    throw CheckpointError(dir + ": cannot create directory: " + std::strerror(errno));
  runtime::FileLock lock = runtime::FileLock::lock(dir);
  return Staging{dir, std::move(lock), std::move(names)};
}

FileEntry write_metadata_file(const std::string& dir, const std::string& text) {
  runtime::ExclusiveFile out(join(dir, kMetadata));
  out.write(text.data(), text.size());
  out.fsync_and_close();
  return {kMetadata, static_cast<int64_t>(out.bytes_written()), out.crc()};
}

std::string save_checkpoint_unchecked(const std::string& base_path, int64_t step, const TensorGroups& groups,
                                      const json& metadata, bool is_temporary) {
  const Staging staging = start_save(base_path, step, groups, metadata);
  const std::string& tmp_dir = staging.dir;
  const std::string final_dir = join(base_path, checkpoint_dir_name(step));
  bool renamed = false;
  try {
    std::vector<FileEntry> files;
    const bool fault_mid_write = runtime::fault_armed("checkpoint_write", step);
    for (size_t i = 0; i < groups.size(); ++i) {
      files.push_back(write_group_file(tmp_dir, groups[i].first + ".safetensors", groups[i].second, step,
                                       fault_mid_write && i == 0));
    }
    files.push_back(write_metadata_file(tmp_dir, metadata_text(metadata, step, is_temporary, staging.names, nullptr)));
    commit_checkpoint(base_path, tmp_dir, final_dir, step, files, renamed);
  } catch (...) {
    // Before the rename nothing is visible; after it, step-<N> lacks a manifest and stays incomplete.
    if (!renamed) remove_tree_quietly(tmp_dir);
    throw;
  }
  return final_dir;
}

// Several processes: process 0 makes the temporary directory and tells the others; each writes its own files into
// it and reports them; process 0 writes the metadata, renames and writes the manifest listing every process's files,
// then tells the others how it went. A failure anywhere reaches every process as a CheckpointError.
std::string save_sharded_unchecked(const std::string& base_path, int64_t step, const TensorGroups& groups,
                                   const json& metadata, bool is_temporary, const Sharding& sh) {
  const std::string kFailed = "!";  // prefix of a message that reports a failure instead of a value
  auto failed = [&](const std::string& v) { return v.rfind(kFailed, 0) == 0; };
  const std::string final_dir = join(base_path, checkpoint_dir_name(step));
  std::string tmp_dir;
  std::optional<Staging> staging;  // process 0's
  if (sh.rank == 0) {
    try {
      staging.emplace(start_save(base_path, step, groups, metadata));
    } catch (const std::exception& e) {
      sh.broadcast(kFailed + e.what());
      throw;
    }
    tmp_dir = staging->dir;
    sh.broadcast(tmp_dir);
  } else {
    tmp_dir = sh.broadcast("");
    if (failed(tmp_dir))
      throw CheckpointError("process 0 could not start checkpoint " + final_dir + ": " + tmp_dir.substr(1));
  }

  // Every process: its own files.
  std::string report;
  std::vector<FileEntry> mine;
  try {
    const bool fault_mid_write = runtime::fault_armed("checkpoint_write", step);
    for (size_t i = 0; i < groups.size(); ++i) {
      StateDict entries = entries_of_process(groups[i].first, groups[i].second, sh);
      if (entries.empty()) continue;
      mine.push_back(write_group_file(tmp_dir, shard_file_name(groups[i].first, sh.rank, sh.processes), entries, step,
                                      fault_mid_write && i == 0));
    }
    report = file_entries_json(mine).dump();
  } catch (const std::exception& e) {
    report = kFailed + "process " + std::to_string(sh.rank) + ": " + e.what();
  }
  const std::vector<std::string> reports = sh.all_gather(report);
  std::string first_failure;
  for (const std::string& r : reports) {
    if (failed(r) && first_failure.empty()) first_failure = r.substr(1);
  }

  if (sh.rank != 0) {
    if (!first_failure.empty()) throw CheckpointError("checkpoint " + final_dir + " failed: " + first_failure);
    const std::string outcome = sh.broadcast("");
    if (failed(outcome)) throw CheckpointError("checkpoint " + final_dir + " failed: " + outcome.substr(1));
    return outcome;
  }
  if (!first_failure.empty()) {
    // Every process saw the reports and stops here: no outcome to tell.
    remove_tree_quietly(tmp_dir);
    throw CheckpointError("checkpoint " + final_dir + " failed: " + first_failure);
  }
  bool renamed = false;
  try {
    std::vector<FileEntry> files;
    for (const std::string& r : reports) {
      for (const json& f : json::parse(r)) {
        files.push_back({f.at("name").get<std::string>(), f.at("size").get<int64_t>(), f.at("crc32").get<uint32_t>()});
      }
    }
    files.push_back(write_metadata_file(tmp_dir, metadata_text(metadata, step, is_temporary, staging->names, &sh)));
    commit_checkpoint(base_path, tmp_dir, final_dir, step, files, renamed);
  } catch (const std::exception& e) {
    if (!renamed) remove_tree_quietly(tmp_dir);
    sh.broadcast(kFailed + e.what());
    throw;
  }
  sh.broadcast(final_dir);
  return final_dir;
}

}  // namespace

std::string save_checkpoint(const std::string& base_path, int64_t step, const TensorGroups& groups,
                            const json& metadata, bool is_temporary, const Sharding* sharding) {
  return runtime::rethrow_io_errors_as<CheckpointError>([&] {
    if (sharding && sharding->processes > 1)
      return save_sharded_unchecked(base_path, step, groups, metadata, is_temporary, *sharding);
    return save_checkpoint_unchecked(base_path, step, groups, metadata, is_temporary);
  });
}

std::string verify_checkpoint(const std::string& path, Verify level) {
  try {
    Manifest m = read_manifest(path);
    for (const FileEntry& e : m.files) {
      const std::string file = join(path, e.name);
      if (level == Verify::kChecksums) {
        read_verified(path, e);  // size and CRC
        continue;
      }
      std::error_code ec;
      auto size = fs::file_size(file, ec);
      if (ec) return file + ": " + ec.message();
      if (static_cast<int64_t>(size) != e.size) {
        return file + ": size is " + std::to_string(size) + " bytes, the manifest says " + std::to_string(e.size);
      }
    }
    return "";
  } catch (const CheckpointError& e) {
    return e.what();
  } catch (const runtime::IoError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return path + ": " + e.what();
  }
}

namespace {

// The block process `rank` of `mesh` holds of a tensor of shape `whole` cut on `cuts`.
Block block_of_rank(const haliax::Mesh& mesh, int64_t rank, const Cuts* cuts, const std::vector<int64_t>& whole,
                    const std::string& where) {
  Block b;
  for (int64_t n : whole) b.emplace_back(0, n);
  if (!cuts) return b;
  for (const auto& [axis, size] : mesh.axes()) {
    auto c = cuts->find(axis);
    if (c == cuts->end()) continue;
    const int64_t d = c->second;
    if (d < 0 || d >= static_cast<int64_t>(whole.size())) {
      throw CheckpointError(where + ": dimension " + std::to_string(d) + " cut over mesh axis " + axis + " of a " +
                            std::to_string(whole.size()) + "-d tensor");
    }
    auto& [begin, end] = b[d];
    if ((end - begin) % size != 0) {
      throw CheckpointError(where + ": dimension " + std::to_string(d) + " (" + std::to_string(end - begin) +
                            ") does not split into " + std::to_string(size) + " equal blocks over mesh axis " + axis);
    }
    const int64_t len = (end - begin) / size;
    begin += mesh.coordinate(rank, axis) * len;
    end = begin + len;
  }
  return b;
}

}  // namespace

BlockOf blocks_of_process(const Sharding& sh) {
  const haliax::Mesh mesh = mesh_of(sh);
  const int64_t rank = sh.rank;
  auto dims = sh.dims;
  return [mesh, rank, dims](const std::string& group, const std::string& key, const std::vector<int64_t>& whole) {
    try {
      return block_of_rank(mesh, rank, cuts_of(dims, group, key), whole, group + "." + key);
    } catch (const CheckpointError& e) {
      // Not a fault of the checkpoint (which load_latest_checkpoint would skip): it does not fit this process's plan.
      throw std::runtime_error(std::string("this process's piece of ") + e.what());
    }
  };
}

namespace {

// Copies the part `src` (in the piece's coordinates) of tensor `e` of file `f` into `out` at `at` (in out's
// coordinates). Reads whole rows of the first dimension (a chunk of them at a time, or straight into `out` when the
// part covers the other dimensions whole in both); a column block goes through a bounce buffer of at most 8 MiB or
// one row.
void read_part(const runtime::File& f, const detail::SafetensorsLayout& layout, const detail::TensorEntry& e,
               const Block& src, at::Tensor& out, const std::vector<int64_t>& at) {
  const size_t elem = c10::elementSize(e.dtype);
  const uint64_t base = layout.data_start + e.begin;
  const int64_t nd = static_cast<int64_t>(e.shape.size());
  if (nd == 0) {
    f.read_exact_at(out.data_ptr(), elem, base);
    return;
  }
  bool rows_whole = true;  // the part covers every dimension after the first whole, in the piece and in `out`
  int64_t row = 1;         // elements per row of the first dimension
  for (int64_t d = 1; d < nd; ++d) {
    row *= e.shape[d];
    rows_whole = rows_whole && src[d].first == 0 && src[d].second == e.shape[d] && out.size(d) == e.shape[d];
  }
  const size_t row_bytes = static_cast<size_t>(row) * elem;
  const auto [first, last] = src[0];
  char* dst = static_cast<char*>(out.data_ptr());
  if (rows_whole) {
    if (row_bytes == 0 || last == first) return;
    f.read_exact_at(dst + static_cast<size_t>(at[0]) * row_bytes, static_cast<size_t>(last - first) * row_bytes,
                    base + static_cast<uint64_t>(first) * row_bytes);
    return;
  }
  const int64_t chunk_rows =
      std::max<int64_t>(1, static_cast<int64_t>((size_t(8) << 20) / std::max<size_t>(row_bytes, 1)));
  std::vector<int64_t> piece_rows(e.shape.begin(), e.shape.end());
  for (int64_t r = first; r < last; r += chunk_rows) {
    const int64_t n = std::min(chunk_rows, last - r);
    piece_rows[0] = n;
    at::Tensor bounce = at::empty(piece_rows, at::TensorOptions().dtype(e.dtype));
    if (row_bytes) f.read_exact_at(bounce.data_ptr(), static_cast<size_t>(n) * row_bytes, base + r * row_bytes);
    at::Tensor from = bounce, to = out.narrow(0, at[0] + (r - first), n);
    for (int64_t d = 1; d < nd; ++d) {
      from = from.narrow(d, src[d].first, src[d].second - src[d].first);
      to = to.narrow(d, at[d], src[d].second - src[d].first);
    }
    to.copy_(from);
  }
}

// How a sharded checkpoint was written (metadata.json's `sharding`; none: one process).
struct SavedLayout {
  std::vector<std::pair<std::string, int64_t>> mesh_axes{{"data", 1}};  // the writers, rank r at its coordinates
  json dims = json::object();
};

// Group `group` from `files` (per writing process; unlisted: nullptr), each tensor holding block_of's block (none:
// the whole). Every file is verified before any is read; then only the rows holding each block are.
StateDict load_group_blocks(const std::string& path, const std::string& group,
                            const std::vector<const FileEntry*>& files, const SavedLayout& saved,
                            const BlockOf& block_of) {
  const haliax::Mesh mesh(saved.mesh_axes);
  const int processes = static_cast<int>(mesh.size());
  auto file_name = [&](int r) {
    return files[r] ? join(path, files[r]->name)
                    : join(path, processes > 1 ? shard_file_name(group, r, processes) : group + ".safetensors");
  };
  if (!files[0]) throw CheckpointError(file_name(0) + ": missing (the manifest does not list it)");
  std::vector<std::optional<runtime::File>> open(processes);
  std::vector<std::optional<detail::SafetensorsLayout>> layouts(processes);
  for (int r = 0; r < processes; ++r) {
    if (!files[r]) continue;
    const std::string file = file_name(r);
    uint32_t crc = 0;
    open[r] = runtime::open_checksummed(file, files[r]->size, &crc);
    if (crc != files[r]->crc) {
      throw CheckpointError(file + ": CRC32 is " + runtime::Crc32::hex(crc) + " but the manifest says " +
                            runtime::Crc32::hex(files[r]->crc) + " (corrupt file)");
    }
    layouts[r] = detail::read_layout(*open[r], static_cast<uint64_t>(files[r]->size));
    // BOOL data is checked in every file, not only in the blocks read, so that every process agrees on whether the
    // checkpoint loads.
    for (const detail::TensorEntry& e : layouts[r]->entries) {
      if (e.dtype != at::kBool || e.end == e.begin) continue;
      std::string bytes(e.end - e.begin, '\0');
      open[r]->read_exact_at(bytes.data(), bytes.size(), layouts[r]->data_start + e.begin);
      detail::check_bool_bytes(bytes.data(), bytes.size(), file, e.name);
    }
  }
  const json& dims = saved.dims.contains(group) ? saved.dims[group] : json::object();
  StateDict out;
  for (const detail::TensorEntry& e0 : layouts[0]->entries) {
    const std::string& key = e0.name;
    const int64_t nd = static_cast<int64_t>(e0.shape.size());
    // The mesh axes that cut this key, and its whole shape.
    Cuts cuts;
    std::vector<int64_t> whole = e0.shape;
    if (dims.contains(key)) {
      const json& d = dims[key];
      for (const auto& [axis, size] : mesh.axes()) {
        const json* dim = d.is_number_integer() ? (axis == mesh.axes()[0].first ? &d : nullptr)
                                                : (d.is_object() && d.contains(axis) ? &d[axis] : nullptr);
        if (!dim) continue;
        const int64_t v = dim->is_number_integer() ? dim->get<int64_t>() : -1;
        if (v < 0 || v >= nd) {
          throw CheckpointError(join(path, kMetadata) + ": sharding.dims." + group + "." + key + " is " + d.dump() +
                                ", not a dimension of the " + std::to_string(nd) + "-d tensor");
        }
        cuts[axis] = v;
        whole[v] *= size;
      }
    }
    const Cuts* key_cuts = cuts.empty() ? nullptr : &cuts;
    Block want;
    if (block_of) {
      try {
        want = block_of(group, key, whole);
      } catch (const std::exception& e) {
        throw DoesNotFit(path, e.what());
      }
      bool fits = want.size() == whole.size();
      for (size_t d = 0; fits && d < whole.size(); ++d)
        fits = 0 <= want[d].first && want[d].first <= want[d].second && want[d].second <= whole[d];
      if (!fits) throw std::logic_error("load_checkpoint: a block outside " + group + "." + key);
    } else {
      for (int64_t n : whole) want.emplace_back(0, n);
    }
    std::vector<int64_t> sizes;
    for (const auto& [begin, end] : want) sizes.push_back(end - begin);
    at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(e0.dtype));
    int64_t covered = 0;
    for (int r = 0; r < processes; ++r) {
      if (!writes_entry(mesh, r, key_cuts)) continue;
      const std::string file = file_name(r);
      if (!layouts[r]) throw CheckpointError(file + ": missing (the manifest does not list it)");
      const auto& entries = layouts[r]->entries;
      auto it = std::find_if(entries.begin(), entries.end(), [&](const auto& x) { return x.name == key; });
      if (it == entries.end()) throw CheckpointError(file + ": has no piece of '" + key + "' (group " + group + ")");
      if (it->shape != e0.shape || it->dtype != e0.dtype) {
        throw CheckpointError(file + ": its piece of '" + key + "' does not match process 0's in shape or dtype");
      }
      const Block held = block_of_rank(mesh, r, key_cuts, whole, file + ": '" + key + "'");
      Block src;
      std::vector<int64_t> at_out;
      int64_t count = 1;
      for (int64_t d = 0; d < nd; ++d) {
        const int64_t begin = std::max(held[d].first, want[d].first), end = std::min(held[d].second, want[d].second);
        count *= std::max<int64_t>(0, end - begin);
        src.emplace_back(begin - held[d].first, std::max(begin, end) - held[d].first);
        at_out.push_back(begin - want[d].first);
      }
      if (count == 0 && nd > 0) continue;
      read_part(*open[r], *layouts[r], *it, src, t, at_out);
      covered += count;
    }
    if (covered != t.numel()) {
      throw CheckpointError(join(path, kMetadata) + ": the pieces of " + group + "." + key + " cover " +
                            std::to_string(covered) + " of its " + std::to_string(t.numel()) + " elements");
    }
    out.emplace_back(key, std::move(t));
  }
  return out;
}

Checkpoint load_checkpoint_unchecked(const std::string& path, const std::vector<std::string>& groups,
                                     const BlockOf& block_of) {
  Manifest m = read_manifest(path);
  Checkpoint out;
  out.path = path;
  out.step = m.step;
  for (const FileEntry& e : m.files) {
    if (e.name == kMetadata) {
      const std::string file = join(path, e.name);
      out.metadata = parse_metadata(file, *read_verified(path, e));
      if (out.metadata["step"].get<int64_t>() != m.step) {
        throw CheckpointError(file + ": step " + out.metadata["step"].dump() + " disagrees with the manifest's " +
                              std::to_string(m.step));
      }
    }
  }
  // Written by several processes: "<group>.shard-<r>-of-<N>.safetensors" files, put back together below.
  const json* sharding = out.metadata.contains("sharding") ? &out.metadata["sharding"] : nullptr;
  SavedLayout saved;
  const int processes = sharding ? sharding->value("processes", 1) : 1;
  if (sharding) {
    // The mesh the pieces were written on (format 1's first sharded checkpoints: one axis, dims as plain integers).
    saved.mesh_axes.clear();
    if (sharding->contains("mesh")) {
      for (const json& a : (*sharding)["mesh"])
        saved.mesh_axes.emplace_back(a.at(0).get<std::string>(), a.at(1).get<int64_t>());
    } else {
      saved.mesh_axes = {{"data", processes}};
    }
    const int64_t mesh_size = haliax::Mesh(saved.mesh_axes).size();
    if (mesh_size != processes) {
      throw CheckpointError(join(path, kMetadata) + ": sharding.mesh has " + std::to_string(mesh_size) +
                            " processes, sharding.processes " + std::to_string(processes));
    }
    if (sharding->contains("dims")) saved.dims = (*sharding)["dims"];
  }
  // Files read by blocks, per group (in manifest order): one whole file, or one per writing process.
  struct GroupFiles {
    bool whole = false;
    std::vector<const FileEntry*> files;
  };
  std::map<std::string, GroupFiles> pieces;
  std::vector<std::string> order;
  for (const FileEntry& e : m.files) {
    const std::string suffix = ".safetensors";
    if (e.name.size() <= suffix.size() || e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    std::string group = e.name.substr(0, e.name.size() - suffix.size());
    int shard = -1;
    if (sharding) {
      static const std::regex kShard(R"(^(.+)\.shard-(\d{1,6})-of-(\d{1,6})$)");
      std::smatch m;
      if (std::regex_match(group, m, kShard)) {
        const int of = std::stoi(m[3].str());
        shard = std::stoi(m[2].str());
        if (of != processes || shard >= processes) {
          throw CheckpointError(join(path, e.name) + ": piece " + m[2].str() + " of " + m[3].str() +
                                ", but metadata.json says " + std::to_string(processes) + " processes wrote it");
        }
        group = m[1].str();
      }
    }
    if (!groups.empty() && std::find(groups.begin(), groups.end(), group) == groups.end()) continue;
    if (shard < 0 && !block_of) {
      // A whole group read whole: one pass, its tensors alias the file's buffer.
      out.groups.emplace_back(group, detail::parse_safetensors(read_verified(path, e), join(path, e.name)).tensors);
      continue;
    }
    GroupFiles& g = pieces[group];
    if (g.files.empty()) {
      g.whole = shard < 0;
      g.files.resize(g.whole ? 1 : processes);
      order.push_back(group);
    }
    if (g.whole != (shard < 0)) {
      throw CheckpointError(join(path, e.name) + ": group " + group + " is listed both whole and in pieces");
    }
    const FileEntry*& slot = g.files[g.whole ? 0 : static_cast<size_t>(shard)];
    if (slot) throw CheckpointError(join(path, e.name) + ": listed twice in the manifest");
    slot = &e;
  }
  const SavedLayout whole_file;  // one file, nothing cut
  for (const std::string& group : order) {
    const GroupFiles& g = pieces[group];
    out.groups.emplace_back(group, load_group_blocks(path, group, g.files, g.whole ? whole_file : saved, block_of));
  }
  for (const std::string& g : groups) out.group(g);  // throws naming the groups present
  return out;
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path, const std::vector<std::string>& groups) {
  return runtime::rethrow_io_errors_as<CheckpointError>(
      [&] { return load_checkpoint_unchecked(path, groups, BlockOf()); });
}

Checkpoint load_checkpoint(const std::string& path, const std::vector<std::string>& groups, const BlockOf& block_of) {
  return runtime::rethrow_io_errors_as<CheckpointError>(
      [&] { return load_checkpoint_unchecked(path, groups, block_of); });
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& base_path) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(base_path, ec)) return out;
  for (const auto& entry : fs::directory_iterator(base_path, ec)) {
    int64_t step;
    if (parse_step_dir(entry.path().filename().string(), &step) && entry.is_directory(ec)) {
      out.emplace_back(step, entry.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> latest_checkpoint(const std::string& base_path, Verify level) {
  auto all = list_checkpoints(base_path);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    std::string why = verify_checkpoint(it->second, level);
    if (why.empty()) return it->second;
    std::cerr << "levanter: skipping checkpoint " << it->second << ": " << why << "\n";
  }
  return std::nullopt;
}

std::optional<Checkpoint> load_latest_checkpoint(const std::string& base_path, const std::vector<std::string>& groups,
                                                 const BlockOf& block_of) {
  auto all = list_checkpoints(base_path);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      return load_checkpoint(it->second, groups, block_of);
    } catch (const CheckpointError& e) {
      std::cerr << "levanter: skipping checkpoint " << it->second << ": " << e.what() << "\n";
    }
  }
  return std::nullopt;
}

json read_checkpoint_metadata(const std::string& path) {
  return runtime::rethrow_io_errors_as<CheckpointError>([&] {
    Manifest m = read_manifest(path);
    for (const FileEntry& e : m.files) {
      if (e.name == kMetadata) return parse_metadata(join(path, e.name), *read_verified(path, e));
    }
    throw CheckpointError(join(path, kManifest) + std::string(": does not list ") + kMetadata);
  });
}

std::vector<std::string> resume_warnings(const json& metadata) {
  std::vector<std::string> out;
  if (!metadata.is_object()) return out;
  auto it = metadata.find("num_threads");
  if (it != metadata.end() && it->is_number_integer() && it->get<int64_t>() != at::get_num_threads()) {
    out.push_back("the checkpoint was written with " + std::to_string(it->get<int64_t>()) +
                  " threads, this process uses " + std::to_string(at::get_num_threads()) +
                  ": results will not be bit-identical to an uninterrupted run");
  }
  auto v = metadata.find("versions");
  if (v != metadata.end() && v->is_object()) {
    auto lt = v->find("libtorch");
    if (lt != v->end() && lt->is_string() && lt->get<std::string>() != TORCH_VERSION) {
      out.push_back("the checkpoint was written with libtorch " + lt->get<std::string>() + ", this process uses " +
                    TORCH_VERSION + ": kernels may differ");
    }
  }
  return out;
}

void delete_checkpoint(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  const std::string aside =
      (p.parent_path() / (".tmp-del-" + p.filename().string() + "-" + std::to_string(::getpid()))).string();
  remove_tree_quietly(aside);
  runtime::rethrow_io_errors_as<CheckpointError>([&] {
    runtime::rename_path(p.string(), aside);
    runtime::fsync_path(p.parent_path().empty() ? "." : p.parent_path().string());
  });
  remove_tree_quietly(aside);
}

int cleanup_stale_temporaries(const std::string& base_path) {
  int removed = 0;
  std::error_code ec;
  if (!fs::is_directory(base_path, ec)) return 0;
  std::vector<fs::path> candidates;
  for (const auto& entry : fs::directory_iterator(base_path, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0 && entry.is_directory(ec)) candidates.push_back(entry.path());
  }
  for (const fs::path& dir : candidates) {
    const std::string name = dir.filename().string();
    const size_t dash = name.find_last_of('-');
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + dash + 1, &end, 10);
    if (dash == std::string::npos || end == name.c_str() + dash + 1 || *end != '\0') continue;  // not ours
    runtime::FileLock lock;
    try {
      lock = runtime::FileLock::try_lock(dir.string());
    } catch (const runtime::IoError&) {
      continue;  // gone meanwhile, or not ours to lock
    }
    if (!lock.locked()) continue;  // a live writer holds it
    struct stat st;
    const bool old = ::stat(dir.c_str(), &st) == 0 &&
                     std::chrono::system_clock::now() - std::chrono::system_clock::from_time_t(st.st_mtime) > kStaleAge;
    if (runtime::process_exists(pid) && !old) continue;
    std::cerr << "levanter: removing " << dir.string() << " (left by a checkpoint writer that stopped)\n";
    remove_tree_quietly(dir.string());
    ++removed;
  }
  return removed;
}

}  // namespace levanter::checkpoint
