// A run's exclusive hold on its directories: the run directory (<log_dir>/<run id>) and the checkpoint base path
// are each locked for as long as the Trainer lives, so that two processes started with the same run id cannot
// interleave checkpoints and metrics rows. The second one is refused at once, with a message naming the holder.
//
// The lock is an flock(2) on "<dir>/run.lock": the kernel releases it when its holder exits, however it exits
// (SIGKILL included), so a lock file left by a dead process is no lock and is simply taken over. The file's
// contents (JSON: pid, host, run id, start time) only serve the message; they are rewritten by each holder and
// never decide anything. flock is local to one machine on some network file systems (older NFS): runs on two
// hosts sharing a directory over such a file system are not kept apart.
#pragma once

#include <string>

#include "levanter/runtime/file_io.h"

namespace levanter::trainer {

// Another live process holds the lock.
class RunLockedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class RunLock {
 public:
  static constexpr const char* kFileName = "run.lock";

  RunLock() = default;
  // Creates `dir` if needed and locks <dir>/run.lock without waiting. `what` names the directory in messages
  // ("run directory", "checkpoint directory"). Throws RunLockedError naming the holder (pid, host, start time)
  // and the directory when another process holds it, runtime::IoError when the lock file cannot be written.
  static RunLock acquire(const std::string& dir, const std::string& what, const std::string& run_id);

  bool locked() const { return file_.is_open(); }
  const std::string& path() const { return file_.path(); }

 private:
  runtime::File file_;  // closing it (destruction) releases the flock
};

}  // namespace levanter::trainer
