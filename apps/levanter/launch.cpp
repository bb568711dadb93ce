// `levanter launch --nproc N [--nnodes M --node_rank R --master ADDR:PORT] -- train --config ...`: starts the N
// processes of this machine with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT), prefixes each line they print with its rank, and supervises them: a process that dies
// (a signal, a crash, an out-of-memory kill) or fails stops the others, with a message naming it; SIGINT/SIGTERM to
// the launcher is passed on once (the processes save a checkpoint and stop together), a second one kills them.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "command.h"
#include "levanter/distributed/config.h"

namespace {

struct Args {
  int nproc = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master;  // ADDR:PORT; default 127.0.0.1 and a free port (one node)
  std::vector<std::string> command;
};

std::atomic<int> g_signal{0};
std::atomic<int> g_signals{0};
void on_signal(int sig) {
  g_signal = sig;
  g_signals.fetch_add(1);
}

struct Child {
  int rank = 0;
  pid_t pid = -1;
  int out = -1, err = -1;        // read ends of its stdout and stderr
  std::string out_buf, err_buf;  // a partial last line
  bool done = false;
  int status = 0;
};

std::string describe(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return std::string("was killed by signal ") + std::to_string(sig) + " (" + ::strsignal(sig) + ")";
  }
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

void flush_lines(int rank, std::string& buf, FILE* to, bool final) {
  size_t start = 0;
  for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::fprintf(to, "[rank %d] %.*s\n", rank, static_cast<int>(nl - start), buf.data() + start);
  }
  buf.erase(0, start);
  if (final && !buf.empty()) {
    std::fprintf(to, "[rank %d] %s\n", rank, buf.c_str());
    buf.clear();
  }
  std::fflush(to);
}

// The arguments after `launch ... --`, verbatim from /proc/self/cmdline (CLI11 would reinterpret some, e.g. "[]").
std::vector<std::string> raw_command() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> argv;
  for (std::string arg; std::getline(in, arg, '\0');) argv.push_back(arg);
  size_t i = 0;
  while (i < argv.size() && argv[i] != "launch") ++i;
  while (i < argv.size() && argv[i] != "--") ++i;
  if (i >= argv.size()) return {};
  return std::vector<std::string>(argv.begin() + static_cast<std::ptrdiff_t>(i) + 1, argv.end());
}

int run(Args a) {
  if (auto raw = raw_command(); !raw.empty()) a.command = raw;
  if (a.command.empty()) {
    std::cerr << "error: launch: give the command to run after --, e.g. levanter launch --nproc 2 -- train --config "
                 "C.yaml\n";
    return 2;
  }
  if (a.nproc < 1 || a.nnodes < 1 || a.node_rank < 0 || a.node_rank >= a.nnodes) {
    std::cerr << "error: launch: need --nproc >= 1, --nnodes >= 1 and 0 <= --node_rank < --nnodes\n";
    return 2;
  }
  std::string addr = "127.0.0.1";
  int port = 0;
  if (!a.master.empty()) {
    const size_t colon = a.master.rfind(':');
    if (colon == std::string::npos) {
      std::cerr << "error: launch: --master must be ADDR:PORT, got '" << a.master << "'\n";
      return 2;
    }
    addr = a.master.substr(0, colon);
    port = std::atoi(a.master.c_str() + colon + 1);
  } else if (a.nnodes > 1) {
    std::cerr << "error: launch: --nnodes " << a.nnodes << " needs --master ADDR:PORT (the address of node 0)\n";
    return 2;
  } else {
    port = levanter::distributed::free_loopback_port();
  }
  const int world = a.nproc * a.nnodes;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(s, &sa, nullptr);

  std::vector<Child> children(static_cast<size_t>(a.nproc));
  for (int i = 0; i < a.nproc; ++i) {
    Child& c = children[static_cast<size_t>(i)];
    c.rank = a.node_rank * a.nproc + i;
    int po[2], pe[2];
    if (::pipe2(po, O_CLOEXEC) != 0 || ::pipe2(pe, O_CLOEXEC) != 0) {
      std::perror("launch: pipe");
      return 1;
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("launch: fork");
      return 1;
    }
    if (pid == 0) {
      ::setpgid(0, 0);  // the terminal's Ctrl-C reaches the launcher only; it passes it on once
      ::dup2(po[1], 1);
      ::dup2(pe[1], 2);
      for (int s : {SIGINT, SIGTERM, SIGHUP}) ::signal(s, SIG_DFL);
      ::setenv("RANK", std::to_string(c.rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(i).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(a.nproc).c_str(), 1);
      ::setenv("GROUP_RANK", std::to_string(a.node_rank).c_str(), 1);
      ::setenv("MASTER_ADDR", addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<char*> argv;
      std::string self = "levanter";
      argv.push_back(self.data());
      std::vector<std::string> copy = a.command;
      for (auto& s : copy) argv.push_back(s.data());
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::perror("launch: exec");
      ::_exit(127);
    }
    ::close(po[1]);
    ::close(pe[1]);
    c.pid = pid;
    c.out = po[0];
    c.err = pe[0];
  }
  std::fprintf(stderr, "levanter launch: %d processes (ranks %d..%d of %d), coordinator %s:%d\n", a.nproc,
               a.node_rank * a.nproc, a.node_rank * a.nproc + a.nproc - 1, world, addr.c_str(), port);

  int exit_code = 0;
  bool stopping = false;
  int forwarded = 0;
  auto kill_all = [&](int sig) {
    for (auto& c : children) {
      if (!c.done) ::kill(c.pid, sig);
    }
  };
  std::chrono::steady_clock::time_point kill_at{};
  for (;;) {
    // Output, a line at a time, prefixed with the rank.
    std::vector<pollfd> fds;
    std::vector<std::pair<Child*, bool>> owners;  // child, is stderr
    for (auto& c : children) {
      if (c.out >= 0) fds.push_back({c.out, POLLIN, 0}), owners.emplace_back(&c, false);
      if (c.err >= 0) fds.push_back({c.err, POLLIN, 0}), owners.emplace_back(&c, true);
    }
    if (!fds.empty()) ::poll(fds.data(), fds.size(), 100);
    for (size_t k = 0; k < fds.size(); ++k) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Child& c = *owners[k].first;
      const bool is_err = owners[k].second;
      char buf[65536];
      const ssize_t n = ::read(fds[k].fd, buf, sizeof(buf));
      std::string& b = is_err ? c.err_buf : c.out_buf;
      if (n > 0) {
        b.append(buf, static_cast<size_t>(n));
        flush_lines(c.rank, b, is_err ? stderr : stdout, false);
      } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        flush_lines(c.rank, b, is_err ? stderr : stdout, true);
        ::close(fds[k].fd);
        (is_err ? c.err : c.out) = -1;
      }
    }
    if (fds.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    // Exits.
    bool all_done = true;
    for (auto& c : children) {
      if (c.done) continue;
      int status = 0;
      if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
        c.done = true;
        c.status = status;
        const bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (failed && exit_code == 0) {
          exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          if (!stopping) {
            std::fprintf(stderr, "levanter launch: rank %d (pid %d) %s; stopping the other ranks\n", c.rank,
                         static_cast<int>(c.pid), describe(status).c_str());
            stopping = true;
            kill_all(SIGTERM);
            kill_at = std::chrono::steady_clock::now() + std::chrono::seconds(30);
          }
        }
      } else {
        all_done = false;
      }
    }
    if (all_done && fds.empty()) break;
    if (all_done) continue;  // drain the pipes
    // Signals to the launcher: passed on once (the processes checkpoint and stop together), then SIGKILL.
    const int n = g_signals.load();
    if (n > forwarded) {
      if (forwarded == 0) {
        std::fprintf(stderr, "levanter launch: %s: passing it to every rank (again to kill them)\n",
                     ::strsignal(g_signal.load()));
        kill_all(g_signal.load());
        stopping = true;
      } else {
        kill_all(SIGKILL);
      }
      forwarded = n;
    }
    if (stopping && kill_at.time_since_epoch().count() != 0 && std::chrono::steady_clock::now() > kill_at) {
      std::fprintf(stderr, "levanter launch: ranks still running 30 s after SIGTERM: killing them\n");
      kill_all(SIGKILL);
      kill_at = {};
    }
  }
  if (g_signals.load() > 0 && exit_code == 0) {
    for (const auto& c : children) {
      if (!(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)) {
        exit_code = WIFEXITED(c.status) ? WEXITSTATUS(c.status) : 128 + WTERMSIG(c.status);
      }
    }
  }
  return exit_code;
}

std::function<int()> setup(CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("--nproc,--nproc_per_node", a->nproc, "Processes to start on this machine")->capture_default_str();
  app.add_option("--nnodes", a->nnodes, "Machines in the job")->capture_default_str();
  app.add_option("--node_rank", a->node_rank, "This machine's index in the job")->capture_default_str();
  app.add_option("--master,--master_addr", a->master,
                 "ADDR:PORT of node 0's rank 0 (default with one node: 127.0.0.1 and a free port)");
  app.add_option("command", a->command, "The levanter command each process runs, after --")->required();
  return [a] { return run(*a); };  // run() takes the command verbatim from the process's arguments
}

}  // namespace

LEVANTER_COMMAND(launch, "launch",
                 "Start N processes of a levanter command with torchrun's environment and supervise them "
                 "(data-parallel training: levanter launch --nproc 2 -- train --config C.yaml)",
                 setup);
