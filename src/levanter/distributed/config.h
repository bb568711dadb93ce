// `trainer.distributed`: how the processes of one training job find each other (Levanter's DistributedConfig),
// and which process this is. Resolved, in order, from explicit keys, torchrun's environment (RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR, MASTER_PORT; what `levanter launch` sets), SLURM's (SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID, the first node of SLURM_STEP_NODELIST / SLURM_JOB_NODELIST), else one process.
// libtorch-free: the process group itself is process_group.h.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace levanter::distributed {

struct DistributedConfig {
  std::optional<std::string> coordinator_address;  // host:port of process 0
  std::optional<int64_t> num_processes;
  std::optional<int64_t> process_id;
  std::optional<std::vector<int64_t>> local_device_ids;  // Levanter's key: accepted, no effect on CPU
  std::string backend = "gloo";
  int64_t timeout = 600;  // seconds a collective may wait for the other processes

  template <typename V>
  void fields(V& v) {
    v("coordinator_address", coordinator_address,
      "host:port of process 0 (default: MASTER_ADDR:MASTER_PORT from torchrun/levanter launch, or SLURM's first "
      "node)");
    v("num_processes", num_processes, "Processes in the job (default: WORLD_SIZE or SLURM_NTASKS, else 1)");
    v("process_id", process_id, "This process's rank (default: RANK or SLURM_PROCID, else 0)");
    v("local_device_ids", local_device_ids, "Levanter's key; accepted, no effect on CPU");
    v("backend", backend, "c10d backend: gloo (CPU; the only one in a CPU build of libtorch)");
    v("timeout", timeout,
      "Seconds a collective waits for the other processes before the run stops with an error (a dead or stuck "
      "process)");
  }
  void validate(const std::string& where = "trainer.distributed") const;
};

// Where this process stands in the job.
struct ProcessInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single process";  // "trainer.distributed", "torchrun environment", "SLURM environment"
  bool distributed() const { return world_size > 1; }
};

// Resolves the ProcessInfo from `config` and the environment (`getenv`; injectable for tests). Throws
// config::ConfigError naming the key or variable that is missing or inconsistent.
ProcessInfo resolve_process(const DistributedConfig& config,
                            const std::function<std::optional<std::string>(const std::string&)>& getenv = {});

// The first host of a SLURM node list ("node[01-04,07],gpu2" -> "node01").
std::string first_slurm_host(const std::string& nodelist);

// A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice), for a coordinator on this machine;
// `fallback` if none could be had.
int free_loopback_port(int fallback = 29500);

}  // namespace levanter::distributed
