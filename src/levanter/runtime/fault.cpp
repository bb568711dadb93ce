#include "levanter/runtime/fault.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace levanter::runtime {

bool fault_armed(const char* point, int64_t step) {
  const char* env = std::getenv("LEVANTER_FAULT");
  if (!env || !*env) return false;
  // LEVANTER_FAULT_RANK=r: only the process whose RANK (torchrun's variable) is r.
  if (const char* only = std::getenv("LEVANTER_FAULT_RANK"); only && *only) {
    const char* rank = std::getenv("RANK");
    if (std::string(rank ? rank : "0") != only) return false;
  }
  const std::string want = std::string(point) + ":" + std::to_string(step);
  std::string spec(env);
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string::npos) comma = spec.size();
    std::string item = spec.substr(start, comma - start);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item == want) return true;
    start = comma + 1;
  }
  return false;
}

void maybe_inject_fault(const char* point, int64_t step, const char* what) {
  if (!fault_armed(point, step)) return;
  std::fprintf(stderr, "levanter: LEVANTER_FAULT=%s:%lld: killing this process with SIGKILL%s%s\n", point,
               static_cast<long long>(step), *what ? " " : "", what);
  std::fflush(stderr);
  ::kill(::getpid(), SIGKILL);
  std::_Exit(137);  // unreachable: SIGKILL cannot be caught or blocked
}

}  // namespace levanter::runtime
