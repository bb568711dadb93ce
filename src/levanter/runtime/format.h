// Human-readable numbers for progress lines and run records: one implementation, so that every command
// prints durations, counts, sizes and times the same way.
//
//   format_duration(3725)    "1h02m"      format_duration(185)  "3m05s"     format_duration(42)  "42s"
//   format_si(1234)          "1.2k"       format_si(3.4e6)      "3.40M"     format_si(42)        "42.0"
//   format_count(42)         "42"         format_count(1234)    "1.2k"      (format_si, whole below 1000)
//   format_bytes(12.3e6)     "12.3 MB"    (decimal units: kB, MB, GB; below 1 kB "512 B")
//   utc_timestamp()          "2026-12-03T20:22:06Z"   (ISO 8601, UTC; or "...:06.123456Z" with microseconds)
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace levanter::runtime {

// Rounded to whole seconds; hours and minutes above a minute. "?" for a negative or non-finite value.
std::string format_duration(double seconds);
// k with one decimal, M and G with two; below 1000 one decimal.
std::string format_si(double value);
// A count of things: format_si, but a whole number below 1000.
std::string format_count(int64_t count);
// Decimal (SI) byte units: GB with two decimals, MB and kB with one, bytes with none.
std::string format_bytes(double bytes);
// The time `t` (default: now) as ISO 8601 UTC, to the second (truncated) or to the microsecond.
enum class TimestampPrecision { kSeconds, kMicroseconds };
std::string utc_timestamp(std::chrono::system_clock::time_point t,
                          TimestampPrecision precision = TimestampPrecision::kSeconds);
std::string utc_timestamp();

}  // namespace levanter::runtime
