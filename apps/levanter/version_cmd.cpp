// `levanter version`: versions of this build and of the libraries it runs on (for bug reports and run records).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <iostream>

#include "command.h"
#include "levanter/version.h"

namespace {

std::function<int()> setup(CLI::App& app) {
  return [] {
    std::cout << "levanter-cpp " LEVANTER_VERSION "\n"
              << "libtorch " << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << "." << TORCH_VERSION_PATCH << "\n"
              << "threads " << at::get_num_threads() << "\n"
              << at::get_parallel_info();
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(version, "version", "Print versions of levanter-cpp and the libraries it runs on", setup);
