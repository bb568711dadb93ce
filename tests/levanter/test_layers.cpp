// The layering of src/ is enforced by cmake/check_layers.cmake on every build: a file that includes an area
// above its own, or libtorch where it is not allowed, fails the build with the file, the line and the rule.
// Checked here on small trees: the project's own must pass, and each kind of violation must fail by name.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace {

// Runs the check on `src` (writing only into `work`); returns its exit status and puts its output in `out`.
int check(const fs::path& src, const fs::path& work, std::string& out) {
  fs::path log = work / "check.log";
  std::string cmd = "cmake -DSRC='" + src.string() + "' -DSTAMP='" + (work / "ok").string() + "' -P '" +
                    LEVANTER_SOURCE_DIR + "/cmake/check_layers.cmake' > '" + log.string() + "' 2>&1";
  int rc = std::system(cmd.c_str());
  std::ifstream in(log);
  out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return rc;
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

}  // namespace

TEST(Layers, TheProjectsOwnSourcesPass) {
  fs::path tmp = fs::temp_directory_path() / ("levanter_layers_own_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  std::string out;
  EXPECT_EQ(check(fs::path(LEVANTER_SOURCE_DIR) / "src", tmp, out), 0) << out;
  fs::remove_all(tmp);
}

TEST(Layers, ViolationsFailWithTheFileAndTheRule) {
  fs::path root = fs::temp_directory_path() / ("levanter_layers_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::path src = root / "src";
  write(src / "levanter/data/ok.cpp", "#include \"levanter/runtime/file_io.h\"\n#include <vector>\n");
  write(src / "levanter/models/ok.cpp", "#include <ATen/ATen.h>\n#include \"haliax/haliax.h\"\n");
  std::string out;
  ASSERT_EQ(check(src, root, out), 0) << out;

  write(src / "levanter/data/uses_torch.cpp", "#include <vector>\n#include <ATen/ATen.h>\n");
  write(src / "levanter/models/uses_trainer.h", "#include \"levanter/trainer/trainer.h\"\n");
  write(src / "levanter/tracker/uses_haliax.cpp", "#include \"haliax/named_array.h\"\n");
  EXPECT_NE(check(src, root, out), 0);
  EXPECT_THAT(out, ::testing::HasSubstr(
                       "src/levanter/data/uses_torch.cpp: '#include <ATen/ATen.h>': data/ may not use libtorch"));
  EXPECT_THAT(
      out,
      ::testing::HasSubstr(
          "src/levanter/models/uses_trainer.h: '#include \"levanter/trainer/trainer.h\"': models/ may include only"));
  EXPECT_THAT(out, ::testing::HasSubstr("src/levanter/tracker/uses_haliax.cpp"));
  fs::remove_all(root);
}
