// `levanter <command> [options]`: the entry point. Commands register themselves (command.h).
#include "command.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>

#include "levanter/runtime/cpu_allocator.h"

namespace levanter::cli {
std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}
}  // namespace levanter::cli

int main(int argc, char** argv) {
  using namespace levanter::cli;
  // Reuse freed tensor memory instead of returning it to the OS every step (see cpu_allocator.h).
  levanter::runtime::install_caching_cpu_allocator();
  CLI::App app{"levanter: train foundation models with named tensors (Haliax and Levanter in C++)", "levanter"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("levanter-cpp 0.1.0"));

  std::vector<Command> commands = registry();
  std::sort(commands.begin(), commands.end(), [](const Command& a, const Command& b) { return a.name < b.name; });
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
        return run();
      } catch (const std::exception& e) {
        std::fflush(stdout);
        std::cerr << "error: " << e.what() << "\n";
        return 1;
      }
    }
  }
  return 1;
}
