// Stopping a run cleanly on SIGINT, SIGTERM and SIGHUP (Ctrl-C, a scheduler's preemption notice, a closed
// terminal).
//
// install_stop_signal_handlers() installs, for each of the three, a handler that does nothing but record the
// first signal in an atomic flag; the trainer reads the flag between steps (stop_signal()), finishes the step it
// is in, writes a checkpoint and returns. The handlers are installed with SA_RESETHAND, so a second signal of the
// same kind finds the default action and ends the process at once; once the trainer has seen the flag it restores
// the default action of all three (restore_default_stop_signals), so that any further signal ends it at once.
// A signal that was ignored when the process started (nohup ignores SIGHUP) stays ignored.
//
// The three are delivered to one thread started for them: install_stop_signal_handlers() blocks them in the calling
// thread (and so in every thread it starts afterwards) and starts a thread that takes them, so that no signal
// interrupts a computing thread (oneDNN's sgemm corrupts the heap when one does). Send them to the process (kill,
// Ctrl-C, a scheduler): one raised in a thread that blocks it (raise() after install_stop_signal_handlers in the
// same thread) stays pending there.
//
// Nothing here is libtorch or trainer specific: request_stop() sets the same flag from code (tests, programs that
// embed the trainer and have their own reasons to stop).
#pragma once

namespace levanter::runtime {

void install_stop_signal_handlers();
// 0, or the first stop signal received (SIGINT, SIGTERM, SIGHUP, or what request_stop was given).
int stop_signal();
// As if `sig` had arrived (the first request wins).
void request_stop(int sig);
void clear_stop_request();
// From now on SIGINT, SIGTERM and SIGHUP take their default action (end the process), unless they were ignored
// when install_stop_signal_handlers ran. Does nothing if install_stop_signal_handlers was never called.
void restore_default_stop_signals();
// While alive, SIGINT, SIGTERM and SIGHUP are unblocked in the calling thread: hold one around starting a child
// process (popen, system), which inherits the starting thread's mask, so that the child can be stopped as usual.
class StopSignalsUnblocked {
 public:
  StopSignalsUnblocked();
  ~StopSignalsUnblocked();
  StopSignalsUnblocked(const StopSignalsUnblocked&) = delete;
  StopSignalsUnblocked& operator=(const StopSignalsUnblocked&) = delete;

 private:
  unsigned long long saved_[16];  // the thread's previous mask (a sigset_t, without <signal.h> here)
};
// "SIGINT", "SIGTERM", "SIGHUP", or "signal N".
const char* stop_signal_name(int sig);
// The conventional exit status of a process stopped by `sig` after cleaning up: 128 + sig (130 for SIGINT, 143 for
// SIGTERM, 129 for SIGHUP).
inline int stop_exit_code(int sig) { return 128 + sig; }

}  // namespace levanter::runtime
