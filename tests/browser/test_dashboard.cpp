// The live dashboard as a person sees it, in headless Chromium: a real training run of a tiny GPT-2 on the bundled
// corpus with `trainer.dashboard.port: 0`; the page (at the URL the run writes to dashboard.url) plots train/loss
// and shows it grow while the run goes on; once the run has finished, the page served for its directory plots
// every row of metrics.jsonl, in order, the evaluations at their steps, and the token-probability view with one cell
// per token of the sample, coloured by the probability the run recorded.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "browser/browser.h"
#include "levanter/temp_dir.h"
#include "levanter/viz/dashboard.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using levanter::testing::slurp;

// `sh -c cmd` in the background; killed (SIGKILL) and reaped on destruction unless waited for.
struct Process {
  pid_t pid = -1;
  explicit Process(const std::string& cmd) {
    pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  bool running() {
    if (pid < 0) return false;
    int st;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      status = st;
      pid = -1;
      return false;
    }
    return true;
  }
  int wait() {
    if (pid >= 0) {
      ::waitpid(pid, &status, 0);
      pid = -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  ~Process() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  int status = 0;
};

// The JavaScript expression for the train/loss plot's point count (0 while there is none).
std::string count_of(const std::string& metric) {
  return "(+((document.querySelector('svg.plot[data-metric=\"" + metric +
         "\"]') || {getAttribute: function () { return 0; }}).getAttribute('data-count')))";
}

std::vector<std::pair<double, double>> parse_points(const std::string& points) {
  std::vector<std::pair<double, double>> out;
  std::istringstream in(points);
  for (std::string pair; in >> pair;) {
    const size_t comma = pair.find(',');
    out.emplace_back(std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1)));
  }
  return out;
}

}  // namespace

TEST(BrowserDashboard, ShowsARunGrowLiveAndAllOfItOnceFinished) {
  if (auto why = browser::missing()) GTEST_SKIP() << *why;
  const fs::path root = fs::temp_directory_path() / ("levanter_browser_dashboard_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  const std::string corpus = std::string(LEVANTER_SOURCE_DIR) + "/data/corpus/austen/";
  const fs::path config = root / "run.yaml";
  // Many tiny steps (a few ms each), so that the page sees the run grow; evaluations every 100.
  const int steps = 1600;
  std::ofstream(config) << "data:\n  train_urls: [\"" << corpus << "train.jsonl.gz\"]\n  validation_urls: [\"" << corpus
                        << "validation.jsonl.gz\"]\n  cache_dir: " << (root / "cache").string()
                        << "\nmodel: {type: gpt2, hidden_dim: 16, num_heads: 2, num_layers: 1, seq_len: 16}\n"
                           "trainer:\n  id: live\n  num_train_steps: "
                        << steps
                        << "\n  train_batch_size: 2\n  steps_per_eval: 400\n  max_eval_batches: 1\n"
                           "  num_threads: 1\n  peak_flops: 1e9\n  log_dir: "
                        << (root / "logs").string() << "\n  checkpointer: {base_path: " << (root / "ckpt").string()
                        << ", save_interval: 1h, keep: []}\n  tracker: {type: json}\n  dashboard: {port: 0}\n";
  const fs::path run_dir = root / "logs" / "live";
  Process train(std::string(LEVANTER_BINARY_DIR) + "/levanter train --quiet --config '" + config.string() + "' > '" +
                (root / "out.txt").string() + "' 2>&1");

  // The URL, once the run has started serving (and some steps done, so the page has a plot to show).
  std::string url;
  for (int i = 0; i < 600 && url.empty(); ++i) {
    ASSERT_TRUE(train.running()) << "the run ended before serving its dashboard:\n" << slurp(root / "out.txt");
    if (fs::exists(run_dir / "dashboard.url")) {
      url = slurp(run_dir / "dashboard.url");
      while (!url.empty() && url.back() == '\n') url.pop_back();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(url.empty()) << "no dashboard.url after 60 s:\n" << slurp(root / "out.txt");
  EXPECT_EQ(url.rfind("http://127.0.0.1:", 0), 0u) << url;

  const std::string loss = count_of("train/loss");
  json live = browser::run(
      url, {{{"wait", loss + " >= 3"}, {"timeout", 60}},
            {{"eval", "window.__first = " + loss + "; return window.__first"}, {"as", "first"}},
            {{"wait", loss + " > window.__first"}, {"timeout", 30}},
            {{"eval", "return " + loss}, {"as", "later"}},
            {{"eval", "return document.getElementById('status').getAttribute('data-state')"}, {"as", "state"}},
            {{"eval", "return document.getElementById('status').textContent"}, {"as", "status"}},
            {{"screenshot", browser::screenshot_path("dashboard_live.png")}}});
  ASSERT_FALSE(live.is_null()) << slurp(root / "out.txt");
  EXPECT_GE(live["first"].get<int>(), 3);
  EXPECT_GT(live["later"].get<int>(), live["first"].get<int>());
  EXPECT_EQ(live["state"], "live") << live["status"];
  EXPECT_NE(live["status"].get<std::string>().find("live"), std::string::npos) << live["status"];

  ASSERT_EQ(train.wait(), 0) << slurp(root / "out.txt");
  EXPECT_FALSE(fs::exists(run_dir / "dashboard.url"));  // removed with the server

  // The finished run, served for its directory (as `levanter dashboard` does).
  std::vector<double> losses;
  std::vector<int64_t> loss_steps, eval_steps;
  {
    std::ifstream rows(run_dir / "metrics.jsonl");
    for (std::string line; std::getline(rows, line);) {
      const json r = json::parse(line);
      if (r.contains("train/loss")) {
        losses.push_back(r["train/loss"].get<double>());
        loss_steps.push_back(r["step"].get<int64_t>());
      }
      if (r.contains("eval/loss")) eval_steps.push_back(r["step"].get<int64_t>());
    }
  }
  ASSERT_EQ(losses.size(), static_cast<size_t>(steps));
  ASSERT_GE(eval_steps.size(), 2u);
  levanter::viz::Dashboard dashboard(run_dir.string());
  dashboard.start();
  const std::string plot = "document.querySelector('svg.plot[data-metric=\"train/loss\"]')";
  json done = browser::run(
      dashboard.url(),
      {{{"wait", loss + " == " + std::to_string(losses.size()) + " && " + count_of("eval/loss") +
                     " == " + std::to_string(eval_steps.size()) +
                     " && document.getElementById('status').getAttribute('data-state') == 'finished'"
                     // the run record arrives by its own poll
                     " && document.getElementById('status').textContent.indexOf('live') >= 0"},
        {"timeout", 30}},
       {{"eval", "return " + plot + ".querySelector('polyline').getAttribute('points')"}, {"as", "points"}},
       {{"eval", "return [+" + plot + ".getAttribute('data-min'), +" + plot + ".getAttribute('data-max')]"},
        {"as", "range"}},
       {{"eval", "return " + count_of("eval/bpb")}, {"as", "bpb"}},
       {{"eval",
         "return document.querySelector('svg.plot[data-metric=\"eval/loss\"] polyline').getAttribute('points')"},
        {"as", "eval_points"}},
       {{"eval", "return document.getElementById('status').textContent"}, {"as", "status"}},
       {{"eval", "return document.getElementById('run').textContent"}, {"as", "run"}},
       {{"eval", "return document.getElementById('config').textContent"}, {"as", "config"}},
       {{"eval", "return !!document.getElementById('token-view')"}, {"as", "token_view"}},
       {{"screenshot", browser::screenshot_path("dashboard.png")}}});
  ASSERT_FALSE(done.is_null());
  // One point per row, x growing with the step, y lower where the loss is higher (an SVG's y points down).
  const auto pts = parse_points(done["points"]);
  ASSERT_EQ(pts.size(), losses.size());
  for (size_t i = 1; i < pts.size(); ++i) ASSERT_GT(pts[i].first, pts[i - 1].first) << i;
  const auto [lo, hi] = std::minmax_element(losses.begin(), losses.end());
  const double span = *hi - *lo;
  ASSERT_GT(span, 0);
  int compared = 0;
  for (size_t i = 0; i < losses.size(); i += 7) {
    for (size_t j = i + 1; j < losses.size(); j += 5) {
      if (std::abs(losses[i] - losses[j]) < span * 0.02) continue;  // closer than the drawing's rounding
      ASSERT_EQ(losses[i] > losses[j], pts[i].second < pts[j].second) << "steps " << i << " and " << j;
      ++compared;
    }
  }
  EXPECT_GT(compared, 1000);
  EXPECT_DOUBLE_EQ(done["range"][0].get<double>(), *lo);
  EXPECT_DOUBLE_EQ(done["range"][1].get<double>(), *hi);
  // The highest loss at the top of the plot area (y 10 of the viewBox), the lowest at its bottom (y 194).
  EXPECT_EQ(pts[hi - losses.begin()].second, 10.0);
  EXPECT_EQ(pts[lo - losses.begin()].second, 194.0);
  EXPECT_EQ(parse_points(done["eval_points"]).size(), eval_steps.size());
  EXPECT_EQ(done["bpb"].get<size_t>(), eval_steps.size());
  const std::string status = done["status"];
  EXPECT_NE(status.find("live"), std::string::npos) << status;  // the run id
  EXPECT_NE(status.find("step " + std::to_string(steps) + " of " + std::to_string(steps)), std::string::npos) << status;
  EXPECT_NE(status.find("finished"), std::string::npos) << status;
  EXPECT_NE(done["run"].get<std::string>().find("\"run_id\": \"live\""), std::string::npos);
  EXPECT_NE(done["config"].get<std::string>().find("num_train_steps: " + std::to_string(steps)), std::string::npos);
  EXPECT_TRUE(done["token_view"].get<bool>());

  // The token-probability view in the dashboard: one cell per token of the sample, at the newest step, each
  // coloured by the probability recorded in token_probs.jsonl (viridis; the table itself is checked against
  // matplotlib's values by test_token_view.cpp).
  json docs_record, last_step;
  {
    std::ifstream in(run_dir / "token_probs.jsonl");
    for (std::string line; std::getline(in, line);) {
      const json r = json::parse(line);
      if (r["kind"] == "docs") docs_record = r;
      if (r["kind"] == "step") last_step = r;
    }
  }
  ASSERT_TRUE(docs_record.is_object() && last_step.is_object()) << "the run wrote no token_probs.jsonl";
  EXPECT_EQ(last_step["step"], steps);
  size_t tokens = 0;
  for (const auto& d : docs_record["docs"]) tokens += d["tokens"].size();
  ASSERT_GT(tokens, 0u);
  json view =
      browser::run(dashboard.url(),
                   {{{"wait", "document.querySelectorAll('#token-view span.tok').length == " + std::to_string(tokens)},
                     {"timeout", 30}},
                    {{"eval",
                      "return Array.from(document.querySelectorAll('#token-view span.tok')).map(function (e) { return ["
                      "+e.getAttribute('data-doc'), +e.getAttribute('data-pos'), e.getAttribute('data-p'), "
                      "getComputedStyle(e).backgroundColor.replace(/ /g, ''), e.getAttribute('data-p') === '' ? '' : "
                      "window.LevanterTokenView.viridis(+e.getAttribute('data-p')).replace(/ /g, '')]; })"},
                     {"as", "cells"}},
                    {{"screenshot", browser::screenshot_path("dashboard_token_view.png")}}});
  ASSERT_FALSE(view.is_null());
  ASSERT_EQ(view["cells"].size(), tokens);
  for (const auto& c : view["cells"]) {
    const size_t doc = c[0], pos = c[1];
    if (pos == 0) {
      EXPECT_EQ(c[2], "") << "the first token has no prediction";
      continue;
    }
    const double want = last_step["docs"][doc]["p"][pos - 1];
    EXPECT_NEAR(std::stod(c[2].get<std::string>()), want, 1e-6 * std::max(1.0, want)) << doc << "/" << pos;
    EXPECT_EQ(c[3], c[4]) << "cell " << doc << "/" << pos << " (p " << want << ")";
  }
  dashboard.stop();
  fs::remove_all(root);
}
