// The page assets embedded at build time (cmake/embed_assets.cmake) are the files of src/levanter/viz/assets/, byte for
// byte, and an unknown name is an error naming what exists.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "levanter/viz/assets.h"

namespace fs = std::filesystem;

TEST(VizAssets, EmbeddedFilesAreTheSourceFiles) {
  const fs::path dir = fs::path(LEVANTER_SOURCE_DIR) / "src/levanter/viz/assets";
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_EQ(levanter::viz::asset(e.path().filename().string()), ss.str()) << e.path();
    ++n;
  }
  EXPECT_GT(n, 0u);
  EXPECT_EQ(levanter::viz::asset_names().size(), n);
  try {
    levanter::viz::asset("nope.js");
    FAIL() << "expected an error";
  } catch (const std::out_of_range& e) {
    EXPECT_NE(std::string(e.what()).find("common.css"), std::string::npos) << e.what();
  }
}
