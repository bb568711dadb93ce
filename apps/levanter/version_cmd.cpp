// `levanter version`: versions of this build and of the libraries it runs on (for bug reports and run records).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "command.h"
#include "levanter/runtime/openblas_core.h"
#include "levanter/version.h"

namespace {

std::function<int()> setup(CLI::App& app) {
  return [] {
    const std::string core = levanter::runtime::openblas_core();
    const char* forced = std::getenv("OPENBLAS_CORETYPE");
    // OPENBLAS_CORETYPE as this process runs with it (set by the user, or by levanter for a CPU OpenBLAS does not
    // know: runtime/openblas_core.h); bench/train_gpt2 gives its peers the same.
    const std::string openblas_note = forced && *forced ? std::string(" (OPENBLAS_CORETYPE=") + forced + ")" : "";
    std::cout << "levanter-cpp " LEVANTER_VERSION "\n"
              << "libtorch " << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << "." << TORCH_VERSION_PATCH << "\n"
              << "threads " << at::get_num_threads() << "\n"
              << "OpenBLAS core " << core << openblas_note << "\n"
              << at::get_parallel_info();
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(version, "version", "Print versions of levanter-cpp and the libraries it runs on", setup);
