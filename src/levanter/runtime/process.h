// Other processes of this machine, by pid: whether one exists and in what state (/proc/<pid>/stat).
#pragma once

namespace levanter::runtime {

// True while a process with this pid exists (a zombie included; EPERM: it exists, owned by someone else).
bool process_exists(long pid);
// Its state letter in /proc/<pid>/stat ('R', 'S', 'T' stopped, 'Z' zombie, ...), or '\0' if it cannot be read.
char process_state(long pid);

}  // namespace levanter::runtime
