// The MFU denominator: probed once per machine and cached, reused from the cache, never changed when
// configured, and raised (with the cache) when a run achieves more than a probed peak, so MFU is never above
// 100% without a reason.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "levanter/trainer/peak_flops.h"

namespace fs = std::filesystem;
using levanter::trainer::PeakFlops;

namespace {

struct CacheDir {
  fs::path dir = fs::temp_directory_path() / ("levanter_peak_" + std::to_string(::getpid()));
  CacheDir() {
    fs::remove_all(dir);
    ::setenv("LEVANTER_CACHE_DIR", dir.c_str(), 1);
  }
  ~CacheDir() {
    ::unsetenv("LEVANTER_CACHE_DIR");
    fs::remove_all(dir);
  }
  nlohmann::json read() const {
    std::ifstream in(dir / "peak_flops.json");
    return nlohmann::json::parse(in);
  }
};

}  // namespace

TEST(PeakFlops, ProbedOnceThenReadFromTheCache) {
  CacheDir cache;
  EXPECT_EQ(levanter::trainer::peak_flops_cache_file(), (cache.dir / "peak_flops.json").string());
  PeakFlops first = PeakFlops::resolve(at::kFloat, std::nullopt);
  EXPECT_GT(first.value(), 1e8);  // any CPU this runs on does more than 0.1 GFLOP/s in fp32 GEMMs
  EXPECT_THAT(first.source(), ::testing::HasSubstr("probe"));
  nlohmann::json j = cache.read();
  ASSERT_EQ(j.size(), 1u);
  EXPECT_THAT(j.begin().key(), ::testing::HasSubstr("Float"));
  EXPECT_EQ(j.begin().value()["flops"].get<double>(), first.value());

  PeakFlops second = PeakFlops::resolve(at::kFloat, std::nullopt);  // same machine: no new probe
  EXPECT_EQ(second.value(), first.value());
  EXPECT_THAT(second.source(), ::testing::HasSubstr("cached in " + (cache.dir / "peak_flops.json").string()));
}

TEST(PeakFlops, ARunFasterThanTheProbeRaisesTheCachedPeak) {
  CacheDir cache;
  PeakFlops p = PeakFlops::resolve(at::kFloat, std::nullopt);
  const double probed = p.value();
  EXPECT_DOUBLE_EQ(p.mfu(probed / 2), 0.5);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(p.mfu(probed * 2), 1.0);  // never above 100%: the peak becomes what the run achieved
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), ::testing::HasSubstr("more than the probed GEMM peak"));
  EXPECT_EQ(p.value(), probed * 2);
  EXPECT_EQ(p.source(), "raised to what this run achieved");
  EXPECT_EQ(cache.read().begin().value()["flops"].get<double>(), probed * 2);
  EXPECT_EQ(PeakFlops::resolve(at::kFloat, std::nullopt).value(), probed * 2);
}

TEST(PeakFlops, AConfiguredPeakIsNeverChangedAndSaysSo) {
  CacheDir cache;
  PeakFlops p = PeakFlops::resolve(at::kBFloat16, 1e9);
  EXPECT_EQ(p.source(), "trainer.peak_flops");
  EXPECT_FALSE(fs::exists(cache.dir / "peak_flops.json"));  // nothing probed
  ::testing::internal::CaptureStderr();
  EXPECT_DOUBLE_EQ(p.mfu(2e9), 2.0);
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), ::testing::HasSubstr("more than trainer.peak_flops"));
  EXPECT_EQ(p.value(), 1e9);
}
