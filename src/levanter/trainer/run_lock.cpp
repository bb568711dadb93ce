#include "levanter/trainer/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "levanter/runtime/format.h"

namespace levanter::trainer {

namespace fs = std::filesystem;

namespace {

std::string host_name() {
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0) return "?";
  return host;
}

// "pid 1234 on host-a, started 2025-01-01T00:00:00Z", from the holder's lock file (best effort: the holder may
// have taken the lock a moment ago and not written it yet).
std::string describe_holder(const std::string& lock_path) {
  try {
    auto j = nlohmann::json::parse(runtime::read_small_file(lock_path));
    std::string s = "pid " + std::to_string(j.at("pid").get<long long>()) + " on " + j.at("host").get<std::string>();
    if (j.contains("started")) s += ", started " + j["started"].get<std::string>();
    return s;
  } catch (const std::exception&) {
    return "a process that has not yet recorded its pid";
  }
}

}  // namespace

RunLock RunLock::acquire(const std::string& dir, const std::string& what, const std::string& run_id) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw runtime::IoError(dir + ": cannot create the " + what + ": " + ec.message());
  const std::string path = (fs::path(dir) / kFileName).string();
  runtime::File f = runtime::File::open(path, O_RDWR | O_CREAT, 0644);
  int r;
  do {
    r = ::flock(f.fd(), LOCK_EX | LOCK_NB);
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    if (errno != EWOULDBLOCK) throw runtime::IoError(path + ": cannot lock: " + std::strerror(errno));
    throw RunLockedError("the " + what + " " + dir + " is in use by another run of '" + run_id + "' (" +
                         describe_holder(path) + "; lock file " + path +
                         "). Two processes with one run id would interleave checkpoints and metrics: wait for "
                         "it to finish or stop it, or give this run another --trainer.id");
  }
  nlohmann::ordered_json holder;
  holder["pid"] = static_cast<long long>(::getpid());
  holder["host"] = host_name();
  holder["run_id"] = run_id;
  holder["started"] = runtime::utc_timestamp();
  const std::string text = holder.dump() + "\n";
  if (::ftruncate(f.fd(), 0) != 0) throw runtime::IoError(path + ": cannot truncate: " + std::strerror(errno));
  f.write_all_at(text.data(), text.size(), 0);
  RunLock lock;
  lock.file_ = std::move(f);
  return lock;
}

}  // namespace levanter::trainer
