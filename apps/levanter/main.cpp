// `levanter <command> [options]`: the entry point. Commands register themselves (command.h).
#include "command.h"

#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>

#include "levanter/config/config.h"
#include "levanter/runtime/cpu_allocator.h"
#include "levanter/version.h"

namespace levanter::cli {
std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}
}  // namespace levanter::cli

namespace {

// OpenMP (ATen's threads) and OpenBLAS (its own pthreads) share the cores. libgomp's default lets an idle
// OpenMP thread spin for 300,000 rounds after each parallel region, so during the fp32 GEMMs that follow it
// competes with OpenBLAS's worker for the second core: GPT-2 small fp32 steps took 1.5x as long (1491 ms
// against 969 ms at GOMP_SPINCOUNT=30000; bf16, which runs on oneDNN's OpenMP threads, was unchanged). libgomp
// reads the setting when it loads, before main, so the compute commands re-execute themselves once with it,
// unless the user chose OpenMP's wait policy already. Scheduling only: results are bit-identical.
// execv keeps the process (its pid, so signals sent to it reach the new image; its open descriptors; its signal
// mask; ignored signals stay ignored) and runs before anything is set up: `levanter train` installs its stop-signal
// handlers (runtime/signals.h) and takes its run locks afterwards, in the re-executed image.
void tune_openmp_spinning(int argc, char** argv) {
  if (argc < 2 ||
      (std::strcmp(argv[1], "train") != 0 && std::strcmp(argv[1], "eval") != 0 && std::strcmp(argv[1], "sample") != 0))
    return;
  if (std::getenv("GOMP_SPINCOUNT") || std::getenv("OMP_WAIT_POLICY")) return;
  setenv("GOMP_SPINCOUNT", "30000", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then run with libgomp's defaults
}

}  // namespace

int main(int argc, char** argv) {
  tune_openmp_spinning(argc, argv);
  using namespace levanter::cli;
  // Reuse freed tensor memory instead of returning it to the OS every step (see cpu_allocator.h).
  levanter::runtime::install_caching_cpu_allocator();
  CLI::App app{"levanter: train foundation models with named tensors (Haliax and Levanter in C++)", "levanter"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("levanter-cpp ") + LEVANTER_VERSION);

  std::vector<Command> commands = registry();
  std::sort(commands.begin(), commands.end(), [](const Command& a, const Command& b) { return a.name < b.name; });
  // `levanter trian`: CLI11 would say only "A subcommand is required"; name the nearest command instead.
  if (argc >= 2 && argv[1][0] != '-') {
    std::vector<std::string> names;
    for (const Command& c : commands) names.push_back(c.name);
    if (std::find(names.begin(), names.end(), argv[1]) == names.end()) {
      std::string near = levanter::config::nearest(argv[1], names);
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      std::cerr << "error: unknown command '" << argv[1] << "'"
                << (near.empty() ? "" : "; did you mean '" + near + "'?") << " Commands: " << list << "\n";
      return 2;
    }
  }
  std::vector<std::pair<CLI::App*, std::function<int()>>> runners;
  for (const Command& c : commands) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    runners.emplace_back(sub, c.setup(*sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (auto& [sub, run] : runners) {
    if (sub->parsed()) {
      try {
        int rc = run();
        // Output lost on a full disk or a closed pipe is an error, not a silent success.
        if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
          std::cerr << "error: cannot write to standard output: " << std::strerror(errno) << "\n";
          return rc == 0 ? 1 : rc;
        }
        return rc;
      } catch (const std::exception& e) {
        std::fflush(stdout);
        std::cerr << "error: " << e.what() << "\n";
        return 1;
      }
    }
  }
  return 1;
}
