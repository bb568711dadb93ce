// The live dashboard: a small read-only HTTP server over one run directory (docs/visualization.md, "The live
// dashboard"). It serves the page (src/levanter/viz/assets/dashboard.{html,js,css}, embedded in the program) and
// the run's files as JSON, read fresh on each request, so it shows a running run, a finished run, and a run of
// another process the same way:
//
//   GET /                  the page                         GET /api/run           run.json (null until written)
//   GET /assets/<name>     an embedded asset (viz::asset)   GET /api/config        config.yaml as text (or null)
//   GET /api/metrics       rows of metrics.jsonl            GET /api/token_probs   token-probability page data
//
// /api/metrics?since=N&file=ID returns the rows from the N-th on, with the file's identity `file` (a rewrite of
// metrics.jsonl after a resume, which replaces the file, changes it) and `reset: true` when the client's rows are
// no longer a prefix of the file (then `rows` holds all of them). A last line still being written is left for the
// next request; a line that is not a JSON object is skipped and counted (`malformed`).
//
// Read-only by construction: no route maps a request path to a file, so nothing outside the run directory can be
// read; any other path is 404, any method but GET and HEAD 405, a Host header that is not a loopback name is 403
// while bound to a loopback address (DNS rebinding). Handlers run on the server's own threads; an exception in one
// is a 500 with its message. Training never waits on the dashboard.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>

namespace levanter::viz {

// Whether `host` is 127.0.0.1 (or any 127.x.y.z), localhost or ::1.
bool is_loopback_host(const std::string& host);
// The warning printed when binding to `host`: it is then reachable from other machines; nothing for loopback.
std::optional<std::string> exposure_warning(const std::string& host);

// The token-probability view's page data for `run_dir` (<run dir>/token_probs.jsonl), or null when the run has none.
// The token-probability view of the run (token_probs.jsonl as page data), or null; dashboard_token_probs.cpp.
nlohmann::json dashboard_token_probs(const std::string& run_dir);

class Dashboard {
 public:
  explicit Dashboard(std::string run_dir, std::string host = "127.0.0.1", int port = 0);
  ~Dashboard();  // stops
  Dashboard(const Dashboard&) = delete;
  Dashboard& operator=(const Dashboard&) = delete;

  // Binds (port 0: any free port), serves on its own threads, returns the bound port. Prints exposure_warning(host)
  // on stderr for a host other machines can reach. Throws std::runtime_error naming host and port when it cannot
  // bind (the port in use, an address not of this machine).
  int start();
  // http://<host>:<port>/ (127.0.0.1 for a wildcard host). Empty before start().
  std::string url() const;
  int port() const;
  // Stops serving and joins the server's threads; idempotent.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace levanter::viz
