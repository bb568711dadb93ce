// Loading our pages in a real browser: Debian's headless Chromium driven by Selenium (tests/browser/driver.py, run
// by Debian's python3 with python3-selenium; scripts/setup installs chromium, chromium-driver and python3-selenium).
//
//   if (auto why = browser::missing()) GTEST_SKIP() << *why;
//   nlohmann::json r = browser::run(url, {{{"wait", "document.querySelector('.tok')"}},
//                                         {{"eval", "return document.querySelectorAll('.tok').length"}, {"as", "n"}}});
//   EXPECT_EQ(r["n"], 12);
//
// run() fails the test (ADD_FAILURE with the browser's error and console errors) and returns null when a step fails.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

namespace browser {

// Why the browser tests cannot run here (a message for GTEST_SKIP), or nothing.
inline std::optional<std::string> missing() {
  for (const char* f : {"/usr/bin/chromium", "/usr/bin/chromedriver"}) {
    if (!std::filesystem::exists(f)) {
      return std::string(f) + " is missing: scripts/setup installs chromium and chromium-driver (Debian)";
    }
  }
  const std::string probe = std::string(LEVANTER_PYTHON) + " -c 'import selenium' 2>/dev/null";
  if (std::system(probe.c_str()) != 0) {
    return std::string(LEVANTER_PYTHON) + " cannot import selenium: scripts/setup installs python3-selenium (Debian)";
  }
  return std::nullopt;
}

// Where screenshots go: <build>/browser_screenshots/<name>.
inline std::string screenshot_path(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::path(LEVANTER_BINARY_DIR) / "browser_screenshots";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

// Runs the steps of tests/browser/driver.py against `url`; returns the results by name ("as"), or null on failure.
inline nlohmann::json run(const std::string& url, const nlohmann::json& program) {
  const auto tmp = std::filesystem::temp_directory_path();
  const std::string tag = std::to_string(::getpid()) + "_" + std::to_string(std::rand());
  const std::string prog = (tmp / ("browser_prog_" + tag + ".json")).string();
  const std::string out = (tmp / ("browser_out_" + tag + ".json")).string();
  std::ofstream(prog) << program.dump();
  const std::string cmd = std::string(LEVANTER_PYTHON) + " " + LEVANTER_SOURCE_DIR + "/tests/browser/driver.py '" +
                          url + "' " + prog + " " + out + " >/dev/null 2>&1";
  const int rc = std::system(cmd.c_str());
  nlohmann::json r;
  std::ifstream in(out);
  if (in) {
    try {
      in >> r;
    } catch (const std::exception& e) {
      r = {{"error", std::string("unreadable driver output: ") + e.what()}};
    }
  } else {
    r = {{"error", "driver.py wrote nothing (exit status " + std::to_string(rc) + "): " + cmd}};
  }
  std::filesystem::remove(prog);
  std::filesystem::remove(out);
  if (r.contains("error")) {
    ADD_FAILURE() << "browser: " << r["error"].get<std::string>()
                  << "\nconsole errors: " << r.value("console_errors", nlohmann::json())
                  << "\nresults so far: " << r.value("results", nlohmann::json());
    return nullptr;
  }
  if (!r["console_errors"].empty()) ADD_FAILURE() << "the page logged errors: " << r["console_errors"];
  return r["results"];
}

}  // namespace browser
