// docs/configuration.md holds the table that `levanter config` prints: every key, type, default and meaning.
// This fails when a key is added, removed or changed in code without regenerating the page:
//   build/levanter config   (paste between the BEGIN/END markers)
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "levanter/config/config.h"
#include "levanter/trainer/config.h"

TEST(ConfigurationMd, TableMatchesTheCode) {
  std::ifstream in(std::string(LEVANTER_SOURCE_DIR) + "/docs/configuration.md");
  ASSERT_TRUE(in) << "docs/configuration.md is missing";
  std::stringstream ss;
  ss << in.rdbuf();
  std::string doc = ss.str();
  const std::string begin = "<!-- BEGIN levanter config -->\n", end = "<!-- END levanter config -->";
  size_t b = doc.find(begin), e = doc.find(end);
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(e, std::string::npos);
  std::string table = doc.substr(b + begin.size(), e - b - begin.size());
  std::string expected = levanter::config::markdown_table(levanter::trainer::describe_train_config());
  EXPECT_EQ(table, expected)
      << "docs/configuration.md is out of date: regenerate its table with `build/levanter config`";
}
