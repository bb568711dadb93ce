#include "levanter/runtime/openblas_core.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>

namespace levanter::runtime {

std::string openblas_core() {
  using CoreName = char* (*)();
  auto f = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* name = f ? f() : nullptr;
  return name ? name : "";
}

std::string openblas_core_to_set() {
  if (const char* set = std::getenv("OPENBLAS_CORETYPE"); set && *set) return "";
  const std::string core = openblas_core();
  // The generic x86-64 cores OpenBLAS falls back to (it names them in either case).
  if (core != "Prescott" && core != "prescott" && core != "Core2" && core != "core2") return "";
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512cd");
  if (avx512 && __builtin_cpu_supports("avx512bf16")) return "Cooperlake";
  if (avx512) return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

bool choose_openblas_core() {
  const std::string core = openblas_core_to_set();
  if (core.empty()) return false;
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  return true;
}

}  // namespace levanter::runtime
