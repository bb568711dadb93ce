#include "levanter/viz/dashboard.h"

#include <fcntl.h>
#include <httplib.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "levanter/viz/assets.h"

namespace levanter::viz {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kMaxSmallFile = 16 << 20;  // run.json, config.yaml

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// An open regular file of the run directory, or nothing when it does not exist. Opened without blocking (a FIFO
// named metrics.jsonl would otherwise hang the handler) and refused unless it is a regular file.
struct RunFile {
  int fd = -1;
  struct stat st {};
  ~RunFile() {
    if (fd >= 0) ::close(fd);
  }
  bool open(const std::string& path) {
    fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT || errno == ENOTDIR) return false;
      throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
    }
    if (::fstat(fd, &st) != 0) throw std::runtime_error(path + ": cannot stat: " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw std::runtime_error(path + ": not a regular file");
    return true;
  }
  // Bytes [from, to) (fewer if the file is shorter now).
  std::string read(int64_t from, int64_t to) const {
    std::string out(static_cast<size_t>(std::max<int64_t>(0, to - from)), '\0');
    size_t got = 0;
    while (got < out.size()) {
      ssize_t n = ::pread(fd, out.data() + got, out.size() - got, from + static_cast<off_t>(got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw std::runtime_error(std::string("read failed: ") + std::strerror(errno));
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    out.resize(got);
    return out;
  }
};

// A small file of the run directory as text, or nothing when absent.
std::optional<std::string> read_run_text(const std::string& path) {
  RunFile f;
  if (!f.open(path)) return std::nullopt;
  if (f.st.st_size > kMaxSmallFile) {
    throw std::runtime_error(path + ": " + std::to_string(f.st.st_size) + " bytes, more than the dashboard reads");
  }
  return f.read(0, f.st.st_size);
}

// Whether some process holds the flock on <run dir>/run.lock (a training run is running), judged from
// /proc/locks without touching the lock (taking it, even briefly, could refuse a run starting at that moment).
// Nothing when it cannot tell.
std::optional<bool> run_lock_held(const std::string& run_dir) {
  struct stat st;
  if (::stat((fs::path(run_dir) / "run.lock").c_str(), &st) != 0) return false;
  std::ifstream locks("/proc/locks");
  if (!locks) return std::nullopt;
  const std::string inode = ":" + std::to_string(static_cast<unsigned long long>(st.st_ino));
  for (std::string line; std::getline(locks, line);) {
    // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a blocked waiter's line starts "1: -> FLOCK ...")
    if (line.find("FLOCK") == std::string::npos || line.find("->") != std::string::npos) continue;
    std::istringstream in(line);
    std::string field;
    for (int i = 0; i < 6 && (in >> field); ++i) {
    }
    if (field.size() > inode.size() && field.compare(field.size() - inode.size(), inode.size(), inode) == 0) {
      return true;
    }
  }
  return false;
}

std::string json_string(const std::string& s) { return nlohmann::json(s).dump(); }

// Rows of metrics.jsonl read so far, extended by each request with what was appended since (the file is only
// appended to by the tracker, or replaced by a rewrite after a resume: a new inode, or a shorter file).
class MetricsCache {
 public:
  explicit MetricsCache(std::string path)
      : path_(std::move(path)),
        generation_(static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) & 0xffffff) {}

  // The response of /api/metrics?since=<since>&file=<file>.
  std::string page(int64_t since, const std::string& client_file) {
    RunFile f;
    const bool exists = f.open(path_);
    std::lock_guard<std::mutex> lock(mu_);
    if (!exists) {
      forget();
      return std::string("{\"exists\":false,\"file\":null,\"total\":0,\"malformed\":0,\"partial\":false,\"reset\":") +
             (since > 0 || !client_file.empty() ? "true" : "false") + ",\"rows\":[]}";
    }
    if (!have_ || f.st.st_dev != dev_ || f.st.st_ino != ino_ || f.st.st_size < end_ || !last_line_unchanged(f)) {
      forget();
      have_ = true;
      dev_ = f.st.st_dev;
      ino_ = f.st.st_ino;
      ++generation_;
    }
    bool partial = false;
    if (f.st.st_size > end_) {
      const std::string bytes = f.read(end_, f.st.st_size);
      size_t start = 0;
      for (size_t nl; (nl = bytes.find('\n', start)) != std::string::npos; start = nl + 1) {
        std::string line = bytes.substr(start, nl - start);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (row.is_object() && row.contains("step") && row["step"].is_number_integer()) {
          rows_.push_back(std::move(line));
        } else {
          ++malformed_;
        }
        last_line_at_ = end_ + static_cast<int64_t>(start);
        last_line_ = bytes.substr(start, nl + 1 - start);
      }
      end_ += static_cast<int64_t>(start);
      partial = start < bytes.size();  // the tail of a line being written: read again next time
    }
    const std::string file_id = std::to_string(static_cast<unsigned long long>(dev_)) + ":" +
                                std::to_string(static_cast<unsigned long long>(ino_)) + ":" +
                                std::to_string(generation_);
    const int64_t total = static_cast<int64_t>(rows_.size());
    const bool reset = since > total || (!client_file.empty() && client_file != file_id) || since < 0;
    const int64_t from = reset ? 0 : since;
    std::string out;
    out.reserve(256);
    out += "{\"exists\":true,\"file\":" + json_string(file_id) + ",\"total\":" + std::to_string(total) +
           ",\"since\":" + std::to_string(from) + ",\"reset\":" + (reset ? "true" : "false") +
           ",\"malformed\":" + std::to_string(malformed_) + ",\"partial\":" + (partial ? "true" : "false") +
           ",\"modified\":" + std::to_string(static_cast<long long>(f.st.st_mtime)) + ",\"rows\":[";
    for (int64_t i = from; i < total; ++i) {
      if (i > from) out += ',';
      out += rows_[static_cast<size_t>(i)];
    }
    out += "]}";
    return out;
  }

 private:
  void forget() {
    have_ = false;
    end_ = 0;
    rows_.clear();
    malformed_ = 0;
    last_line_.clear();
    last_line_at_ = -1;
  }
  // The last line read is still where it was (a file rewritten in place, not replaced, is read again).
  bool last_line_unchanged(const RunFile& f) const {
    if (last_line_at_ < 0) return true;
    return f.read(last_line_at_, last_line_at_ + static_cast<int64_t>(last_line_.size())) == last_line_;
  }

  std::string path_;
  std::mutex mu_;
  bool have_ = false;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  uint64_t generation_;
  int64_t end_ = 0;  // bytes of complete lines read
  std::vector<std::string> rows_;
  int64_t malformed_ = 0;
  std::string last_line_;
  int64_t last_line_at_ = -1;
};

// The hostname of a Host header ("127.0.0.1:8080", "[::1]:8080", "localhost").
std::string host_of(const std::string& header) {
  if (!header.empty() && header[0] == '[') {
    const size_t close = header.find(']');
    return close == std::string::npos ? header : header.substr(1, close - 1);
  }
  const size_t colon = header.find(':');
  return colon == std::string::npos ? header : header.substr(0, colon);
}

// Why binding host:port failed, found by trying the same bind (httplib reports only that it failed).
std::string bind_error(const std::string& host, int port) {
  const std::string where = host + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) return "dashboard: cannot resolve the host '" + host + "': " + ::gai_strerror(rc);
  int err = 0;
  for (addrinfo* a = res; a; a = a->ai_next) {
    const int s = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (s < 0) {
      err = errno;
      continue;
    }
    int yes = 1;
    ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    const int b = ::bind(s, a->ai_addr, a->ai_addrlen);
    err = b == 0 ? 0 : errno;
    ::close(s);
    if (b == 0) break;
  }
  ::freeaddrinfo(res);
  if (err == EADDRINUSE) {
    return "dashboard: port " + std::to_string(port) + " on " + host +
           " is in use (another dashboard or program listens there); choose another port (trainer.dashboard.port, "
           "or --port of levanter dashboard), or 0 for any free port";
  }
  if (err == EADDRNOTAVAIL)
    return "dashboard: cannot bind to " + where + ": " + host + " is not an address of this machine";
  if (err == EACCES) return "dashboard: cannot bind to " + where + ": permission denied (ports below 1024 need root)";
  return "dashboard: cannot bind to " + where + (err ? std::string(": ") + std::strerror(err) : std::string());
}

const char* content_type(const std::string& name) {
  auto ends = [&](const char* ext) {
    const size_t n = std::strlen(ext);
    return name.size() >= n && name.compare(name.size() - n, n, ext) == 0;
  };
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  return "text/plain; charset=utf-8";
}

// The page: dashboard.html, with the token-probability view's script and style linked when they are embedded.
std::string page_html() {
  std::string html(asset("dashboard.html"));
  std::string extra;
  for (const std::string& name : asset_names()) {
    if (name == "token_view.css") extra += "<link rel=\"stylesheet\" href=\"/assets/token_view.css\">\n";
    if (name == "token_view.js") extra += "<script src=\"/assets/token_view.js\"></script>\n";
  }
  const std::string marker = "<!-- token view -->";
  const size_t at = html.find(marker);
  if (at != std::string::npos) html.replace(at, marker.size(), extra);
  return html;
}

}  // namespace

bool is_loopback_host(const std::string& host) {
  const std::string h = lower(host);
  if (h == "localhost" || h == "::1" || h == "[::1]" || h == "localhost.") return true;
  // 127.0.0.0/8, written as a dotted quad
  unsigned a, b, c, d;
  char tail;
  return std::sscanf(h.c_str(), "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4 && a == 127 && b < 256 && c < 256 &&
         d < 256;
}

std::optional<std::string> exposure_warning(const std::string& host) {
  if (is_loopback_host(host)) return std::nullopt;
  return "levanter: warning: the dashboard binds to " + host +
         ", so it is reachable from other machines on the network (with no password): anyone who can reach this "
         "port can read the run's metrics, record and config. Bind to 127.0.0.1 (the default) and use an SSH tunnel "
         "to watch from elsewhere";
}

struct Dashboard::Impl {
  std::string run_dir, host;
  int port = 0;
  int bound_port = 0;
  bool loopback = true;
  httplib::Server server;
  std::thread thread;
  MetricsCache metrics;
  std::mutex mu;

  Impl(std::string dir, std::string h, int p)
      : run_dir(std::move(dir)),
        host(std::move(h)),
        port(p),
        loopback(is_loopback_host(host)),
        metrics((fs::path(run_dir) / "metrics.jsonl").string()) {}

  std::string file(const char* name) const { return (fs::path(run_dir) / name).string(); }
  void routes();
};

namespace {

using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

void set_json(httplib::Response& res, const std::string& body) {
  res.set_content(body, "application/json; charset=utf-8");
}

// Every handler's exceptions become a 500 with the message: nothing escapes into the server's threads.
Handler guarded(Handler h) {
  return [h = std::move(h)](const httplib::Request& req, httplib::Response& res) {
    try {
      h(req, res);
    } catch (const std::exception& e) {
      res.status = 500;
      res.set_content(std::string("dashboard: ") + e.what() + "\n", "text/plain; charset=utf-8");
    } catch (...) {
      res.status = 500;
      res.set_content("dashboard: unknown error\n", "text/plain; charset=utf-8");
    }
  };
}

}  // namespace

void Dashboard::Impl::routes() {
  server.set_socket_options([](socket_t sock) {
    // SO_REUSEADDR only: httplib's default SO_REUSEPORT would let two dashboards share a port without an error.
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // Few threads, short keep-alive: a page polls once a second; the training process keeps its cores.
  server.new_task_queue = [] { return new httplib::ThreadPool(8); };
  server.set_keep_alive_timeout(2);
  server.set_read_timeout(5, 0);
  server.set_write_timeout(5, 0);
  server.set_payload_max_length(1 << 16);

  server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Referrer-Policy", "no-referrer");
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                   "frame-ancestors 'none'; form-action 'none'");
    if (req.method != "GET" && req.method != "HEAD") {
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      res.set_content("dashboard: read-only; only GET and HEAD\n", "text/plain; charset=utf-8");
      return httplib::Server::HandlerResponse::Handled;
    }
    // Bound to a loopback address, only loopback names are served: a web page elsewhere cannot rebind its own
    // name to 127.0.0.1 and read the run through the user's browser.
    if (loopback && req.has_header("Host") && !is_loopback_host(host_of(req.get_header_value("Host")))) {
      res.status = 403;
      res.set_content("dashboard: Host '" + req.get_header_value("Host") +
                          "' refused; open the dashboard as http://127.0.0.1:" + std::to_string(bound_port) + "/\n",
                      "text/plain; charset=utf-8");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server.set_error_handler(httplib::Server::Handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(res.status == 404 ? "dashboard: not found\n" : "dashboard: error\n", "text/plain; charset=utf-8");
    }
  }));
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    res.status = 500;
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      res.set_content(std::string("dashboard: ") + e.what() + "\n", "text/plain; charset=utf-8");
      return;
    } catch (...) {
    }
    res.set_content("dashboard: unknown error\n", "text/plain; charset=utf-8");
  });

  server.Get("/", guarded([](const httplib::Request&, httplib::Response& res) {
               res.set_content(page_html(), "text/html; charset=utf-8");
             }));
  server.Get(R"(/assets/([A-Za-z0-9_-]+\.[a-z]+))", guarded([](const httplib::Request& req, httplib::Response& res) {
               const std::string name = req.matches[1];
               for (const std::string& n : asset_names()) {
                 if (n == name) {
                   res.set_content(std::string(asset(name)), content_type(name));
                   return;
                 }
               }
               res.status = 404;
             }));
  server.Get("/api/metrics", guarded([this](const httplib::Request& req, httplib::Response& res) {
               int64_t since = 0;
               if (req.has_param("since")) {
                 const std::string s = req.get_param_value("since");
                 char* end = nullptr;
                 errno = 0;
                 since = std::strtoll(s.c_str(), &end, 10);
                 if (s.empty() || *end != '\0' || errno != 0 || since < 0) {
                   res.status = 400;
                   res.set_content("dashboard: since must be a row count (a non-negative integer)\n",
                                   "text/plain; charset=utf-8");
                   return;
                 }
               }
               std::string body = metrics.page(since, req.get_param_value("file"));
               // Whether a training run holds the run directory's lock right now.
               const std::optional<bool> live = run_lock_held(run_dir);
               body.insert(body.size() - 1,
                           std::string(",\"live\":") + (live ? (*live ? "true" : "false") : "null") +
                               ",\"now\":" + std::to_string(static_cast<long long>(std::time(nullptr))));
               set_json(res, body);
             }));
  server.Get("/api/run", guarded([this](const httplib::Request&, httplib::Response& res) {
               const auto text = read_run_text(file("run.json"));
               if (!text) return set_json(res, "null");
               const auto j = nlohmann::ordered_json::parse(*text, nullptr, false);  // keys in the file's order
               if (j.is_discarded()) throw std::runtime_error(file("run.json") + ": not valid JSON");
               set_json(res, j.dump());
             }));
  server.Get("/api/config", guarded([this](const httplib::Request&, httplib::Response& res) {
               const auto text = read_run_text(file("config.yaml"));
               if (!text) return set_json(res, "null");
               set_json(res, nlohmann::json{{"file", "config.yaml"}, {"text", *text}}.dump(
                                 -1, ' ', false, nlohmann::json::error_handler_t::replace));
             }));
  server.Get("/api/token_probs", guarded([this](const httplib::Request&, httplib::Response& res) {
               set_json(res,
                        dashboard_token_probs(run_dir).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
             }));
}

Dashboard::Dashboard(std::string run_dir, std::string host, int port)
    : impl_(std::make_unique<Impl>(std::move(run_dir), std::move(host), port)) {
  if (port < 0 || port > 65535)
    throw std::invalid_argument("dashboard: port must be 0..65535, got " + std::to_string(port));
  impl_->routes();
}

Dashboard::~Dashboard() { stop(); }

int Dashboard::start() {
  Impl& I = *impl_;
  std::lock_guard<std::mutex> lock(I.mu);
  if (I.thread.joinable()) return I.bound_port;
  if (auto w = exposure_warning(I.host)) std::fprintf(stderr, "%s\n", w->c_str());
  int bound = -1;
  if (I.port == 0) {
    bound = I.server.bind_to_any_port(I.host);
  } else if (I.server.bind_to_port(I.host, I.port)) {
    bound = I.port;
  }
  if (bound <= 0) throw std::runtime_error(bind_error(I.host, I.port));
  I.bound_port = bound;
  I.thread = std::thread([&I] {
    // httplib writes with send(2) without MSG_NOSIGNAL: a browser closing a connection mid-answer would raise
    // SIGPIPE and end the (training) process. Blocked here, in the thread whose worker threads inherit the mask,
    // it becomes an EPIPE for that one connection. The stop signals are left to the program's other threads.
    sigset_t block;
    sigemptyset(&block);
    for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP}) sigaddset(&block, sig);
    pthread_sigmask(SIG_BLOCK, &block, nullptr);
    I.server.listen_after_bind();
  });
  // stop() right after start() must find the server running (httplib's stop does nothing before that).
  for (int i = 0; i < 5000 && !I.server.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return bound;
}

int Dashboard::port() const { return impl_->bound_port; }

std::string Dashboard::url() const {
  const Impl& I = *impl_;
  if (!I.bound_port) return "";
  std::string h = I.host;
  if (h == "0.0.0.0" || h == "::" || h == "[::]" || h.empty()) h = "127.0.0.1";
  if (h.find(':') != std::string::npos && h.front() != '[') h = "[" + h + "]";
  return "http://" + h + ":" + std::to_string(I.bound_port) + "/";
}

void Dashboard::stop() {
  Impl& I = *impl_;
  std::lock_guard<std::mutex> lock(I.mu);
  if (!I.thread.joinable()) return;
  I.server.stop();
  I.thread.join();
}

}  // namespace levanter::viz
