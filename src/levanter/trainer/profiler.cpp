#include "levanter/trainer/profiler.h"

#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "levanter/runtime/file_io.h"
#include "levanter/trainer/config.h"

namespace levanter::trainer {

namespace fs = std::filesystem;
namespace prof = torch::autograd::profiler;

namespace {

// One completed range: an operator, an autograd node or one of the trainer's own ranges.
struct Range {
  std::string name;
  uint64_t thread = 0;
  double begin_us = 0, duration_us = 0, self_us = 0;
  int depth = 0;
};

// Pairs each thread's push and pop events (nested, in order) into ranges, with self time = duration minus the
// durations of the ranges directly inside.
std::vector<Range> ranges_of(const prof::thread_event_lists& lists) {
  std::vector<Range> out;
  for (const auto& events : lists) {
    struct Open {
      const prof::LegacyEvent* event;
      double children_us;
    };
    std::vector<Open> stack;
    for (const prof::LegacyEvent& e : events) {
      if (e.kind() == prof::EventKind::PushRange) {
        stack.push_back({&e, 0.0});
      } else if (e.kind() == prof::EventKind::PopRange) {
        // The matching push is the innermost open one with this handle (normally the top of the stack).
        auto it =
            std::find_if(stack.rbegin(), stack.rend(), [&](const Open& o) { return o.event->handle() == e.handle(); });
        if (it == stack.rend()) continue;
        const size_t at = static_cast<size_t>(std::distance(it, stack.rend())) - 1;
        const prof::LegacyEvent& push = *stack[at].event;
        Range r;
        r.name = push.name();
        r.thread = push.threadId();
        r.begin_us = push.cpuUs();
        r.duration_us = push.cpuElapsedUs(e);
        r.self_us = r.duration_us - stack[at].children_us;
        r.depth = static_cast<int>(at);
        stack.resize(at);
        if (!stack.empty()) stack.back().children_us += r.duration_us;
        out.push_back(std::move(r));
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const Range& a, const Range& b) {
    return a.begin_us != b.begin_us ? a.begin_us < b.begin_us : a.depth < b.depth;
  });
  return out;
}

void write_trace(const std::string& path, const std::vector<Range>& ranges) {
  nlohmann::json events = nlohmann::json::array();
  const double t0 = ranges.empty() ? 0.0 : ranges.front().begin_us;
  for (const Range& r : ranges) {
    events.push_back({{"name", r.name},
                      {"ph", "X"},
                      {"pid", 0},
                      {"tid", r.thread},
                      {"ts", r.begin_us - t0},
                      {"dur", r.duration_us},
                      {"args", {{"self_us", r.self_us}}}});
  }
  nlohmann::json doc = {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
  runtime::write_file_atomic(path, doc.dump() + "\n");
}

// Operators by total self time, largest first (the trainer's own ranges are listed with their total time).
std::string ops_table(const std::vector<Range>& ranges, int64_t steps) {
  struct Total {
    int64_t calls = 0;
    double self_us = 0, total_us = 0;
  };
  std::map<std::string, Total> by_name;  // ordered: ties in the sort below stay in name order
  double all_self = 0;
  for (const Range& r : ranges) {
    Total& t = by_name[r.name];
    t.calls += 1;
    t.self_us += r.self_us;
    t.total_us += r.duration_us;
    all_self += r.self_us;
  }
  std::vector<std::pair<std::string, Total>> rows(by_name.begin(), by_name.end());
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.second.self_us > b.second.self_us; });
  std::string s;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%lld profiled step%s, %.1f ms of self time in all; times per step in ms\n\n",
                (long long)steps, steps == 1 ? "" : "s", all_self / 1000.0);
  s += buf;
  std::snprintf(buf, sizeof(buf), "%-48s %10s %12s %8s %12s\n", "name", "calls/step", "self ms/step", "self %",
                "total ms/step");
  s += buf;
  const double n = static_cast<double>(std::max<int64_t>(steps, 1));
  for (const auto& [name, t] : rows) {
    std::snprintf(buf, sizeof(buf), "%-48s %10.1f %12.2f %7.1f%% %12.2f\n", name.substr(0, 48).c_str(),
                  static_cast<double>(t.calls) / n, t.self_us / 1000.0 / n,
                  all_self > 0 ? 100.0 * t.self_us / all_self : 0.0, t.total_us / 1000.0 / n);
    s += buf;
  }
  return s;
}

}  // namespace

struct StepProfiler::Impl {
  bool enabled = false;
  int64_t start = 0, num = 0;
  std::string dir;
  bool progress = false;
  bool recording = false;
  int64_t first_step = 0, last_step = -1;

  void stop_and_write() {
    if (!recording) return;
    recording = false;
    prof::thread_event_lists lists = prof::disableProfilerLegacy();
    const std::vector<Range> ranges = ranges_of(lists);
    const int64_t steps = last_step - first_step + 1;
    fs::create_directories(dir);
    write_trace((fs::path(dir) / "trace.json").string(), ranges);
    runtime::write_file_atomic((fs::path(dir) / "ops.txt").string(), ops_table(ranges, steps));
    if (progress) {
      std::fprintf(stderr,
                   "profiler: steps %lld-%lld written to %s (trace.json for https://ui.perfetto.dev, ops.txt)\n",
                   (long long)first_step, (long long)last_step, dir.c_str());
    }
  }
};

StepProfiler::StepProfiler(const TrainerConfig& config, std::string run_dir, bool progress, bool enabled)
    : impl_(std::make_unique<Impl>()) {
  impl_->enabled = enabled && config.profiler;
  impl_->start = config.profiler_start_step;
  impl_->num = config.profiler_num_steps;
  impl_->dir = (fs::path(run_dir) / "profiler").string();
  impl_->progress = progress;
}

StepProfiler::~StepProfiler() {
  if (impl_->recording) {
    try {
      impl_->recording = false;
      prof::disableProfilerLegacy();
    } catch (...) {
      // Unwinding: the recorded events are dropped.
    }
  }
}

void StepProfiler::before_step(int64_t step) {
  Impl& I = *impl_;
  if (!I.enabled || I.recording || step < I.start || step >= I.start + I.num) return;
  prof::enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU));
  I.recording = true;
  I.first_step = step;
}

void StepProfiler::after_step(int64_t step) {
  Impl& I = *impl_;
  if (!I.recording) return;
  I.last_step = step;
  if (step + 1 >= I.start + I.num) I.stop_and_write();
}

void StepProfiler::finish() { impl_->stop_and_write(); }

}  // namespace levanter::trainer
