#include "levanter/runtime/format.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <initializer_list>

namespace levanter::runtime {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long t = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", t / 3600, t % 3600 / 60);
  } else if (t >= 60) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", t / 60, t % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%llds", t);
  }
  return buf;
}

namespace {

// The first unit whose scale the value reaches, printed with that unit's format; else `below`.
struct Unit {
  double scale;
  const char* format;  // one %f conversion
};

std::string scaled(double value, std::initializer_list<Unit> units, const char* below) {
  char buf[32];
  for (const Unit& u : units) {
    if (value >= u.scale) {
      std::snprintf(buf, sizeof(buf), u.format, value / u.scale);
      return buf;
    }
  }
  std::snprintf(buf, sizeof(buf), below, value);
  return buf;
}

}  // namespace

std::string format_si(double value) { return scaled(value, {{1e9, "%.2fG"}, {1e6, "%.2fM"}, {1e3, "%.1fk"}}, "%.1f"); }

std::string format_count(int64_t count) {
  if (count < 1000) return std::to_string(count);
  return format_si(static_cast<double>(count));
}

std::string format_bytes(double bytes) {
  return scaled(bytes, {{1e9, "%.2f GB"}, {1e6, "%.1f MB"}, {1e3, "%.1f kB"}}, "%.0f B");
}

std::string utc_timestamp(std::chrono::system_clock::time_point t, TimestampPrecision precision) {
  using namespace std::chrono;
  const int64_t us = duration_cast<microseconds>(t.time_since_epoch()).count();
  // Floor division: a time before 1970 still gets its seconds and a non-negative fraction.
  const int64_t secs = us / 1000000 - (us % 1000000 < 0 ? 1 : 0);
  const std::time_t tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
  char out[64];
  if (precision == TimestampPrecision::kMicroseconds) {
    std::snprintf(out, sizeof(out), "%s.%06lldZ", date, static_cast<long long>(us - secs * 1000000));
  } else {
    std::snprintf(out, sizeof(out), "%sZ", date);
  }
  return out;
}

std::string utc_timestamp() { return utc_timestamp(std::chrono::system_clock::now()); }

}  // namespace levanter::runtime
