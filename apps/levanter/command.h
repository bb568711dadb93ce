// The CLI's command registry. Each command lives in its own file (apps/levanter/<command>.cpp) and registers
// itself with LEVANTER_COMMAND; main.cpp lists them in name order, so `levanter --help` is deterministic.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace levanter::cli {

// setup() adds the command's options to its subcommand and returns the function that runs it (exit code).
struct Command {
  std::string name;
  std::string help;
  std::function<std::function<int()>(CLI::App&)> setup;
};

std::vector<Command>& registry();

struct Registrar {
  explicit Registrar(Command c) { registry().push_back(std::move(c)); }
};

}  // namespace levanter::cli

#define LEVANTER_COMMAND(ident, name, help, setup_fn) \
  static ::levanter::cli::Registrar levanter_command_##ident({name, help, setup_fn})
