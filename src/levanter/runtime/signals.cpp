#include "levanter/runtime/signals.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

namespace levanter::runtime {

namespace {

std::atomic<int> g_stop{0};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free atomic");

constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP};
// Signals that were ignored at startup (index as kStopSignals): left alone.
std::atomic<bool> g_ignored[3] = {false, false, false};
std::atomic<bool> g_installed{false};

// Async-signal-safe: one atomic compare-and-swap, nothing else.
extern "C" void on_stop_signal(int sig) {
  int expected = 0;
  g_stop.compare_exchange_strong(expected, sig);
}

}  // namespace

void install_stop_signal_handlers() {
  g_installed = true;
  for (int i = 0; i < 3; ++i) {
    struct sigaction old {};
    if (::sigaction(kStopSignals[i], nullptr, &old) == 0 && old.sa_handler == SIG_IGN) {
      g_ignored[i] = true;
      continue;
    }
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_RESETHAND;  // a second one (the handler is gone) ends the process
    ::sigaction(kStopSignals[i], &sa, nullptr);
  }
  // The signals are taken by one thread that does nothing else: blocked in this thread and so in every thread it
  // starts from now on (OpenMP's, Gloo's), unblocked in the receiver. A signal's frame is pushed on the stack of the
  // thread it interrupts, and oneDNN 2.6's sgemm (Debian's libdnnl) does not survive that: a SIGALRM every 100 us
  // during its calls corrupts the heap within a second (a scratch program; before this, a Ctrl-C during a step
  // aborted with "corrupted size vs. prev_size" about once in ten runs).
  sigset_t set;
  sigemptyset(&set);
  for (int i = 0; i < 3; ++i) {
    if (!g_ignored[i]) sigaddset(&set, kStopSignals[i]);
  }
  ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
  static std::once_flag receiver;
  std::call_once(receiver, [] {
    std::thread([] {
      sigset_t all;
      sigemptyset(&all);
      for (int s : kStopSignals) sigaddset(&all, s);
      ::pthread_sigmask(SIG_UNBLOCK, &all, nullptr);
      for (;;) ::pause();  // the handler runs here, then the default action once restored
    }).detach();
  });
}

int stop_signal() { return g_stop.load(); }

void request_stop(int sig) {
  int expected = 0;
  g_stop.compare_exchange_strong(expected, sig);
}

void clear_stop_request() { g_stop.store(0); }

void restore_default_stop_signals() {
  if (!g_installed) return;  // not ours: a program's own handlers stay
  for (int i = 0; i < 3; ++i) {
    if (g_ignored[i]) continue;
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    ::sigaction(kStopSignals[i], &sa, nullptr);
  }
}

static_assert(sizeof(StopSignalsUnblocked) >= sizeof(sigset_t), "StopSignalsUnblocked::saved_ holds a sigset_t");

StopSignalsUnblocked::StopSignalsUnblocked() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kStopSignals) sigaddset(&set, s);
  ::pthread_sigmask(SIG_UNBLOCK, &set, reinterpret_cast<sigset_t*>(saved_));
}

StopSignalsUnblocked::~StopSignalsUnblocked() {
  ::pthread_sigmask(SIG_SETMASK, reinterpret_cast<const sigset_t*>(saved_), nullptr);
}

const char* stop_signal_name(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
  }
  static thread_local char buf[32];
  std::snprintf(buf, sizeof(buf), "signal %d", sig);
  return buf;
}

}  // namespace levanter::runtime
