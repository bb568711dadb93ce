// The run record: <log_dir>/<run id>/run.json, what it takes to reproduce a run (config file and command line,
// git commit, versions, threads, seeds, speed-relevant environment, the MFU denominator), written once when a
// run (or resume) starts, next to the resolved config.yaml.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "levanter/trainer/config.h"

namespace levanter::trainer {

struct RunRecord {
  std::string run_id;
  std::string config_file;
  std::vector<std::string> command_line;
  int num_threads = 0;
  uint64_t data_seed = 0;
  std::string resumed_from;  // empty: a fresh start
  std::string checkpoint_base;
  int64_t parameter_count = 0;
  double peak_flops = 0;
  std::string peak_flops_source;
};

// Writes run.json and config.yaml (the resolved config) into run_dir.
void write_run_record(const std::string& run_dir, const TrainLmConfig& config, const RunRecord& record);

}  // namespace levanter::trainer
