// Messages of the `levanter` CLI for common mistakes, run as a user would (the built binary, through a shell).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

// Runs `levanter ARGS`; returns the exit code and stderr.
std::pair<int, std::string> run(const std::string& args) {
  const fs::path err = fs::temp_directory_path() / ("levanter_cli_msg_" + std::to_string(::getpid()) + ".txt");
  std::string cmd = std::string(LEVANTER_BINARY_DIR) + "/levanter " + args + " > /dev/null 2> '" + err.string() + "'";
  int rc = std::system(cmd.c_str());
  std::ifstream in(err);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  fs::remove(err);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, text};
}

}  // namespace

TEST(CliMessages, UnknownCommandNamesTheNearest) {
  auto [rc, err] = run("trian --config x.yaml");
  EXPECT_EQ(rc, 2);
  EXPECT_THAT(err, HasSubstr("unknown command 'trian'; did you mean 'train'?"));
  EXPECT_THAT(err, HasSubstr("Commands: cache, config, eval, export"));
}

TEST(CliMessages, ConfigThatIsNotARegularFile) {
  const fs::path dir = fs::temp_directory_path() / ("levanter_cli_dir_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto [rc, err] = run("train --config '" + dir.string() + "'");
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(err, HasSubstr(dir.string() + ": is a directory, not a config file"));
  ASSERT_EQ(::mkfifo((dir / "fifo.yaml").c_str(), 0600), 0);
  auto [rc2, err2] = run("config --check '" + (dir / "fifo.yaml").string() + "'");  // must return, not block
  EXPECT_NE(rc2, 0);
  EXPECT_THAT(err2, HasSubstr("not a regular file"));
  fs::remove_all(dir);
}
