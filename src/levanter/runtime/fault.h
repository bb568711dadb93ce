// Fault injection for crash-safety tests: LEVANTER_FAULT names points at which this process kills itself
// with SIGKILL, so a test can crash a run at an exact, reproducible moment (no cleanup handlers, no flushes:
// what a preemption or an OOM kill does).
//
//   LEVANTER_FAULT=checkpoint_write:<step>    mid-write of the checkpoint for <step>: after about half of the
//                                             first tensor file's data is written, before any rename/manifest
//   LEVANTER_FAULT=checkpoint_commit:<step>   after step-<step>/ is renamed into place, before its manifest
//
// Several points may be given, separated by commas. LEVANTER_FAULT_RANK=r arms them only in the process whose RANK
// is r (one process of a multi-process job). Unset (the normal case) costs one getenv per call.
// Other components may add points with their own names; unknown names are ignored here.
#pragma once

#include <cstdint>

namespace levanter::runtime {

// True when LEVANTER_FAULT holds `<point>:<step>`.
bool fault_armed(const char* point, int64_t step);

// If armed: prints one line to stderr naming the point and `what`, then SIGKILLs this process.
void maybe_inject_fault(const char* point, int64_t step, const char* what = "");

}  // namespace levanter::runtime
