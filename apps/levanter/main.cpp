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
#include <new>
#include <optional>
#include <string>

#include "levanter/config/config.h"
#include "levanter/runtime/cpu_allocator.h"
#include "levanter/runtime/openblas_core.h"
#include "levanter/version.h"

namespace levanter::cli {
std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}
}  // namespace levanter::cli

namespace {

// Settings that libraries read when they load, before main: the process sets them and executes itself again, once.
// execv keeps the process (its pid, so signals sent to it reach the new image; its open descriptors; its signal
// mask; ignored signals stay ignored) and runs before anything is set up: `levanter train` installs its stop-signal
// handlers (runtime/signals.h) and takes its run locks afterwards, in the re-executed image. If execv fails, the
// process goes on with the libraries' defaults.
//
// OpenMP (ATen's threads) and OpenBLAS (its own pthreads) share the cores. libgomp's default lets an idle
// OpenMP thread spin for 300,000 rounds after each parallel region, so during the fp32 GEMMs that follow it
// competes with OpenBLAS's worker for the second core: GPT-2 small fp32 steps took 1.5x as long (1491 ms
// against 969 ms at GOMP_SPINCOUNT=30000; bf16, which runs on oneDNN's OpenMP threads, was unchanged). The compute
// commands set GOMP_SPINCOUNT unless the user chose OpenMP's wait policy already. Scheduling only: results are
// bit-identical.
//
// OpenBLAS's generic kernels on a CPU it does not know (runtime/openblas_core.h): every command sets
// OPENBLAS_CORETYPE to the core the CPU's features call for, unless the user set it.
void reexec_with_library_settings(int argc, char** argv) {
  bool changed = levanter::runtime::choose_openblas_core();
  const bool compute = argc >= 2 && (std::strcmp(argv[1], "train") == 0 || std::strcmp(argv[1], "eval") == 0 ||
                                     std::strcmp(argv[1], "sample") == 0 || std::strcmp(argv[1], "viz") == 0);
  if (compute && !std::getenv("GOMP_SPINCOUNT") && !std::getenv("OMP_WAIT_POLICY")) {
    setenv("GOMP_SPINCOUNT", "30000", 1);
    changed = true;
  }
  if (changed) execv("/proc/self/exe", argv);  // returns only on failure
}

// libtorch's errors (c10::Error) end in a C++ stack trace, also when another message wraps them: a user gets the
// message alone (LEVANTER_BACKTRACE=1 keeps the traces).
std::string without_backtraces(const std::string& message) {
  if (std::getenv("LEVANTER_BACKTRACE")) return message;
  std::string out, line;
  bool in_trace = false;
  for (size_t i = 0; i <= message.size(); ++i) {
    if (i < message.size() && message[i] != '\n') {
      line += message[i];
      continue;
    }
    if (line.rfind("Exception raised from ", 0) == 0) {
      in_trace = true;
    } else if (!(in_trace && line.rfind("frame #", 0) == 0)) {
      in_trace = false;
      if (!out.empty()) out += '\n';
      out += line;
    }
    line.clear();
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// An allocation that failed: the size asked for, when the message says it ("allocating N bytes", libtorch's
// "tried to allocate N bytes"); 0 when it does not.
std::optional<double> out_of_memory_size(const std::exception& e) {
  const std::string m = e.what();
  const bool oom = dynamic_cast<const std::bad_alloc*>(&e) != nullptr ||
                   m.find("out of memory allocating") != std::string::npos ||
                   m.find("can't allocate memory") != std::string::npos;
  if (!oom) return std::nullopt;
  for (const char* marker : {"out of memory allocating ", "tried to allocate "}) {
    size_t at = m.find(marker);
    if (at != std::string::npos) return std::strtod(m.c_str() + at + std::strlen(marker), nullptr);
  }
  return 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  reexec_with_library_settings(argc, argv);
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
        if (std::optional<double> bytes = out_of_memory_size(e)) {
          char size[64] = "";
          if (*bytes > 0) std::snprintf(size, sizeof(size), " allocating %.1f GB", *bytes / 1e9);
          std::cerr << "error: out of memory" << size
                    << ": reduce the model (model.hidden_dim, model.num_layers), the microbatch "
                       "(trainer.train_batch_size, or trainer.per_device_parallelism to accumulate over smaller ones), "
                       "or turn on model.gradient_checkpointing\n";
        } else {
          std::cerr << "error: " << without_backtraces(e.what()) << "\n";
        }
        return 1;
      }
    }
  }
  return 1;
}
