// Every test binary runs with the OpenBLAS core `levanter` would choose (runtime/openblas_core.h): where OpenBLAS
// took its generic kernels on a CPU it does not know, the binary sets OPENBLAS_CORETYPE and executes itself again
// before main, as apps/levanter/main.cpp does. glibc passes (argc, argv, envp) to constructors.
#include <unistd.h>

#include "levanter/runtime/openblas_core.h"

namespace {

__attribute__((constructor)) void openblas_core_for_tests(int /*argc*/, char** argv, char** /*envp*/) {
  if (levanter::runtime::choose_openblas_core()) execv("/proc/self/exe", argv);  // returns only on failure
}

}  // namespace
