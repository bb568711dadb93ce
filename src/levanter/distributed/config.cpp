#include "levanter/distributed/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "levanter/config/config.h"

namespace levanter::distributed {
namespace {

using config::ConfigError;

int64_t parse_int(const std::string& text, const std::string& what) {
  try {
    size_t used = 0;
    const long long v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw ConfigError(what + ": expected an integer, got '" + text + "'");
}

void split_address(const std::string& address, const std::string& what, std::string& host, int& port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    throw ConfigError(what + ": expected host:port, got '" + address + "'");
  }
  host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const int64_t p = parse_int(address.substr(colon + 1), what + " (port)");
  if (p < 1 || p > 65535) throw ConfigError(what + ": port must be in 1..65535, got " + std::to_string(p));
  port = static_cast<int>(p);
}

}  // namespace

void DistributedConfig::validate(const std::string& where) const {
  if (backend != "gloo") {
    throw ConfigError(where + ".backend: '" + backend +
                      "' is not available in this CPU build of libtorch; use gloo (nccl needs a CUDA build)");
  }
  if (timeout < 1) throw ConfigError(where + ".timeout: must be at least 1 second, got " + std::to_string(timeout));
  if (num_processes && *num_processes < 1) {
    throw ConfigError(where + ".num_processes: must be >= 1, got " + std::to_string(*num_processes));
  }
  if (process_id && num_processes && (*process_id < 0 || *process_id >= *num_processes)) {
    throw ConfigError(where + ".process_id: must be in 0.." + std::to_string(*num_processes - 1) + ", got " +
                      std::to_string(*process_id));
  }
}

std::string first_slurm_host(const std::string& nodelist) {
  // The first entry (commas inside brackets belong to it), then the first number of its first range.
  int depth = 0;
  size_t end = nodelist.size();
  for (size_t i = 0; i < nodelist.size(); ++i) {
    if (nodelist[i] == '[') ++depth;
    if (nodelist[i] == ']') --depth;
    if (nodelist[i] == ',' && depth == 0) {
      end = i;
      break;
    }
  }
  const std::string first = nodelist.substr(0, end);
  const size_t open = first.find('[');
  if (open == std::string::npos) return first;
  const std::string prefix = first.substr(0, open);
  std::string inside = first.substr(open + 1, first.find(']', open) - open - 1);
  const size_t cut = inside.find_first_of(",-");
  return prefix + (cut == std::string::npos ? inside : inside.substr(0, cut));
}

ProcessInfo resolve_process(const DistributedConfig& c,
                            const std::function<std::optional<std::string>(const std::string&)>& getenv_fn) {
  auto env = [&](const std::string& name) -> std::optional<std::string> {
    if (getenv_fn) return getenv_fn(name);
    const char* v = std::getenv(name.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  ProcessInfo p;
  const std::string k = "trainer.distributed";
  if (c.num_processes || c.process_id || c.coordinator_address) {
    if (!c.num_processes || !c.process_id || (*c.num_processes > 1 && !c.coordinator_address)) {
      throw ConfigError(k +
                        ": give coordinator_address, num_processes and process_id together (or none of them, "
                        "to take them from torchrun's or SLURM's environment)");
    }
    p.world_size = static_cast<int>(*c.num_processes);
    p.rank = static_cast<int>(*c.process_id);
    p.local_rank = p.rank;
    if (c.coordinator_address)
      split_address(*c.coordinator_address, k + ".coordinator_address", p.master_addr, p.master_port);
    p.source = "trainer.distributed";
  } else if (auto ws = env("WORLD_SIZE")) {
    p.world_size = static_cast<int>(parse_int(*ws, "WORLD_SIZE"));
    const auto rank = env("RANK");
    if (!rank) throw ConfigError("WORLD_SIZE is set (torchrun's environment) but RANK is not");
    p.rank = static_cast<int>(parse_int(*rank, "RANK"));
    p.local_rank = static_cast<int>(parse_int(env("LOCAL_RANK").value_or(*rank), "LOCAL_RANK"));
    if (p.world_size > 1) {
      const auto addr = env("MASTER_ADDR"), port = env("MASTER_PORT");
      if (!addr || !port) throw ConfigError("WORLD_SIZE is " + *ws + " but MASTER_ADDR or MASTER_PORT is not set");
      split_address(*addr + ":" + *port, "MASTER_ADDR:MASTER_PORT", p.master_addr, p.master_port);
    }
    p.source = "torchrun environment";
  } else if (auto nt = env("SLURM_NTASKS")) {
    p.world_size = static_cast<int>(parse_int(*nt, "SLURM_NTASKS"));
    p.rank = static_cast<int>(parse_int(env("SLURM_PROCID").value_or("0"), "SLURM_PROCID"));
    p.local_rank = static_cast<int>(parse_int(env("SLURM_LOCALID").value_or("0"), "SLURM_LOCALID"));
    if (p.world_size > 1) {
      auto nodes = env("SLURM_STEP_NODELIST");
      if (!nodes) nodes = env("SLURM_JOB_NODELIST");
      if (!nodes)
        throw ConfigError("SLURM_NTASKS is " + *nt + " but neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST is set");
      p.master_addr = first_slurm_host(*nodes);
      // The same port in every task of the job: MASTER_PORT, else one derived from the job id.
      if (auto port = env("MASTER_PORT")) {
        p.master_port = static_cast<int>(parse_int(*port, "MASTER_PORT"));
      } else if (auto job = env("SLURM_JOB_ID")) {
        p.master_port = 20000 + static_cast<int>(parse_int(*job, "SLURM_JOB_ID") % 20000);
      }
    }
    p.source = "SLURM environment";
  }
  if (p.world_size < 1) throw ConfigError("the job has " + std::to_string(p.world_size) + " processes; need >= 1");
  if (p.rank < 0 || p.rank >= p.world_size) {
    throw ConfigError("rank " + std::to_string(p.rank) + " (from the " + p.source + ") is not in 0.." +
                      std::to_string(p.world_size - 1));
  }
  return p;
}

int free_loopback_port(int fallback) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return fallback;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  int port = fallback;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

}  // namespace levanter::distributed
