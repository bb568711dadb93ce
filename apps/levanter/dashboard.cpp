// `levanter dashboard RUN_DIR [--port P] [--host H]`: serve the live dashboard of a run directory
// (<log_dir>/<run id>) until Ctrl-C or SIGTERM: a finished run, or one that another process is training (the
// dashboard reads the run's files fresh on each request). docs/visualization.md, "The live dashboard".
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "command.h"
#include "levanter/runtime/signals.h"
#include "levanter/viz/dashboard.h"

namespace fs = std::filesystem;

namespace {

// The run directories directly below `dir` (a log_dir given instead of a run directory), for the message.
std::string runs_below(const fs::path& dir) {
  std::string out;
  std::error_code ec;
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory(ec) && (fs::exists(e.path() / "run.json", ec) || fs::exists(e.path() / "metrics.jsonl", ec))) {
      if (++n <= 5) out += (out.empty() ? "" : ", ") + e.path().string();
    }
  }
  if (n > 5) out += ", ...";
  return out;
}

void check_run_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw std::runtime_error(dir + ": no such directory (give a run directory, <log_dir>/<run id>)");
  if (fs::exists(fs::path(dir) / "run.json", ec) || fs::exists(fs::path(dir) / "metrics.jsonl", ec)) return;
  std::string m = dir +
                  " is not a run directory: it holds neither run.json nor metrics.jsonl (a run directory is "
                  "<trainer.log_dir>/<run id>, e.g. logs/run-0123456789ab)";
  const std::string runs = runs_below(dir);
  if (!runs.empty()) m += "; the runs in it: " + runs;
  throw std::runtime_error(m);
}

std::function<int()> setup(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  auto port = std::make_shared<int>(0);
  auto host = std::make_shared<std::string>("127.0.0.1");
  app.add_option("run_dir", *dir, "The run directory: <trainer.log_dir>/<run id> (holds run.json, metrics.jsonl)")
      ->required();
  app.add_option("--port,-p", *port, "Port to serve on (0: any free port; the URL is printed)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--host", *host,
                 "Address to bind (default 127.0.0.1: this machine only; any other is announced with a warning)");
  return [dir, port, host] {
    check_run_dir(*dir);
    levanter::runtime::install_stop_signal_handlers();
    levanter::viz::Dashboard dashboard(*dir, *host, *port);
    dashboard.start();
    std::fprintf(stderr, "levanter: dashboard at %s (Ctrl-C stops)\n", dashboard.url().c_str());
    while (!levanter::runtime::stop_signal()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    dashboard.stop();
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(dashboard, "dashboard", "Serve the live dashboard of a run directory (a running or finished run)",
                 setup);
