// OpenBLAS's kernels on CPUs newer than its release.
//
// Debian 12's OpenBLAS (0.3.21, what libtorch's f32 at::mm runs on) picks its kernels from the CPU's family and model
// number, and takes its generic Prescott (SSE3) kernels for a model it does not know, such as Emerald Rapids (family 6,
// model 207). Those run f32 GEMMs 4x slower (63 against 262 GFLOP/s at 2048^3 on 2 cores) and, unlike its AVX-512
// kernels, give a row bits that depend on the rows computed with it (batched decoding would not match a prompt
// alone). OpenBLAS reads OPENBLAS_CORETYPE only when it loads, before main, so a process that finds the generic core
// on a CPU with AVX2 or AVX-512 sets the variable to the core its features call for and executes itself again.
#pragma once

#include <string>

namespace levanter::runtime {

// The core OpenBLAS runs with in this process ("" where OpenBLAS is not loaded).
std::string openblas_core();

// The OPENBLAS_CORETYPE this process should run with: "" when OpenBLAS is not loaded, already runs an optimised
// core, or the user set OPENBLAS_CORETYPE; otherwise "Cooperlake" (AVX-512 with BF16), "SkylakeX" (AVX-512) or
// "Haswell" (AVX2 and FMA), by the CPU's features.
std::string openblas_core_to_set();

// Sets OPENBLAS_CORETYPE to openblas_core_to_set() when that is not "" and returns true (the caller then executes
// itself again: the variable takes effect in a new image); false otherwise.
bool choose_openblas_core();

}  // namespace levanter::runtime
