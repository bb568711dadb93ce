// runtime/format.h: the exact strings progress lines and run records print.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "levanter/runtime/format.h"

using namespace levanter::runtime;
using std::chrono::system_clock;

TEST(Format, DurationRoundsToSecondsWithHoursAndMinutesAboveAMinute) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(0.49), "0s");
  EXPECT_EQ(format_duration(42), "42s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(59.5), "1m00s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3599.4), "59m59s");
  EXPECT_EQ(format_duration(3600), "1h00m");
  EXPECT_EQ(format_duration(3725), "1h02m");
  EXPECT_EQ(format_duration(90000), "25h00m");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_duration(std::nan("")), "?");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "?");
}

TEST(Format, SiHasOneDecimalForKiloAndTwoAbove) {
  EXPECT_EQ(format_si(0), "0.0");
  EXPECT_EQ(format_si(42), "42.0");
  EXPECT_EQ(format_si(999.9), "999.9");
  EXPECT_EQ(format_si(1000), "1.0k");
  EXPECT_EQ(format_si(1234), "1.2k");
  EXPECT_EQ(format_si(999999), "1000.0k");  // the unit follows the value, not the rounding
  EXPECT_EQ(format_si(3.4e6), "3.40M");
  EXPECT_EQ(format_si(2.1e9), "2.10G");
  EXPECT_EQ(format_si(1.5e12), "1500.00G");
}

TEST(Format, CountIsWholeBelowAThousand) {
  EXPECT_EQ(format_count(0), "0");
  EXPECT_EQ(format_count(42), "42");
  EXPECT_EQ(format_count(999), "999");
  EXPECT_EQ(format_count(1127), "1.1k");
  EXPECT_EQ(format_count(1006295), "1.01M");
}

TEST(Format, BytesUseDecimalUnits) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1500), "1.5 kB");
  EXPECT_EQ(format_bytes(12.3e6), "12.3 MB");
  EXPECT_EQ(format_bytes(2.5e9), "2.50 GB");
}

TEST(Format, UtcTimestampIsIso8601) {
  const system_clock::time_point t = system_clock::from_time_t(1796329345);
  EXPECT_EQ(utc_timestamp(t), "2026-12-03T20:22:25Z");
  EXPECT_EQ(utc_timestamp(t + std::chrono::microseconds(123456)), "2026-12-03T20:22:25Z");  // truncated
  EXPECT_EQ(utc_timestamp(t + std::chrono::microseconds(123456), TimestampPrecision::kMicroseconds),
            "2026-12-03T20:22:25.123456Z");
  EXPECT_EQ(
      utc_timestamp(system_clock::from_time_t(0) - std::chrono::milliseconds(1500), TimestampPrecision::kMicroseconds),
      "1969-12-31T23:59:58.500000Z");
  EXPECT_THAT(utc_timestamp(),
              ::testing::MatchesRegex("20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]Z"));
}
