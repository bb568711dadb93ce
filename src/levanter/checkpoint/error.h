// The error types of the checkpoint layer. Messages name the file (and the tensor, where there is one), so that a
// person can tell which checkpoint is bad and why.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace levanter::checkpoint {

// A checkpoint that is incomplete or corrupt (load_latest_checkpoint skips it for an older one).
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A sound checkpoint that cannot be read as asked: the caller's blocks do not fit one of its tensors (a checkpoint of
// another model). Not skipped: the caller says what differs. what(): the tensor at fault; path(): the checkpoint.
class DoesNotFit : public std::runtime_error {
 public:
  DoesNotFit(std::string path, const std::string& what) : std::runtime_error(what), path_(std::move(path)) {}
  const std::string& path() const { return path_; }  // the checkpoint

 private:
  std::string path_;
};

}  // namespace levanter::checkpoint
