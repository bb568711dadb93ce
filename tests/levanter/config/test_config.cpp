#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "levanter/config/config.h"

using namespace levanter::config;
using ::testing::HasSubstr;

namespace {

struct Inner {
  int64_t every = 1000;
  std::optional<int64_t> until;
  template <typename V>
  void fields(V& v) {
    v("every", every, "Keep a checkpoint every N steps");
    v("until", until, "Stop keeping after this step");
  }
};

struct Section {
  int64_t num_train_steps = 100;
  double learning_rate = 6e-4;
  std::string id;
  bool flag = false;
  Duration save_interval{std::chrono::minutes(15)};
  std::vector<Inner> keep;
  std::vector<std::string> urls;
  std::map<std::string, double> weights;
  template <typename V>
  void fields(V& v) {
    v("num_train_steps", num_train_steps, "Number of steps");
    v("learning_rate", learning_rate, "Peak learning rate");
    v("id", id, "Run id");
    v("flag", flag, "A flag");
    v("save_interval", save_interval, "Time between checkpoints");
    v("keep", keep, "Permanent checkpoint policies");
    v("urls", urls, "Files");
    v("weights", weights, "Mixture weights");
  }
};

struct Root {
  Section trainer;
  template <typename V>
  void fields(V& v) {
    v("trainer", trainer, "Trainer settings");
  }
};

}  // namespace

TEST(Config, ParsesTypedFieldsAndKeepsDefaults) {
  Root r = parse_string<Root>(
      "trainer:\n  num_train_steps: 1e3\n  flag: true\n  save_interval: 10m\n  keep:\n    - every: 50\n"
      "  urls: a.jsonl\n  weights: {a: 0.25, b: 0.75}\n");
  EXPECT_EQ(r.trainer.num_train_steps, 1000);
  EXPECT_DOUBLE_EQ(r.trainer.learning_rate, 6e-4);
  EXPECT_TRUE(r.trainer.flag);
  EXPECT_DOUBLE_EQ(r.trainer.save_interval.seconds(), 600);
  ASSERT_EQ(r.trainer.keep.size(), 1u);
  EXPECT_EQ(r.trainer.keep[0].every, 50);
  EXPECT_FALSE(r.trainer.keep[0].until.has_value());
  EXPECT_EQ(r.trainer.urls, std::vector<std::string>{"a.jsonl"});
  EXPECT_DOUBLE_EQ(r.trainer.weights.at("b"), 0.75);
}

TEST(Config, UnknownKeyNamesFileLineKeyAndNearestValidKey) {
  try {
    parse_string<Root>("trainer:\n  num_train_step: 5\n", "my.yaml");
    FAIL() << "expected an error";
  } catch (const ConfigError& e) {
    std::string m = e.what();
    EXPECT_THAT(m, HasSubstr("my.yaml:2"));
    EXPECT_THAT(m, HasSubstr("trainer.num_train_step"));
    EXPECT_THAT(m, HasSubstr("did you mean 'num_train_steps'"));
  }
}

TEST(Config, WrongTypeNamesKeyAndValue) {
  try {
    parse_string<Root>("trainer:\n  num_train_steps: many\n", "x.yaml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("x.yaml:2: trainer.num_train_steps: expected an integer, got 'many'"));
  }
  EXPECT_THROW(parse_string<Root>("trainer:\n  save_interval: 10 parsecs\n"), ConfigError);
  EXPECT_THROW(parse_string<Root>("trainer: 3\n"), ConfigError);
}

TEST(Config, OverridesCreateAndReplaceNestedKeys) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / "levanter_config_test";
  fs::create_directories(dir);
  std::ofstream(dir / "inc.yaml") << "num_train_steps: 7\nid: included\n";
  std::ofstream(dir / "main.yaml") << "trainer: !include inc.yaml\n";
  Root r = load<Root>((dir / "main.yaml").string(), {"--trainer.learning_rate", "1e-3", "--trainer.flag=true"});
  EXPECT_EQ(r.trainer.num_train_steps, 7);
  EXPECT_EQ(r.trainer.id, "included");
  EXPECT_DOUBLE_EQ(r.trainer.learning_rate, 1e-3);
  EXPECT_TRUE(r.trainer.flag);
  EXPECT_THROW(load<Root>((dir / "main.yaml").string(), {"--trainer.nope", "1"}), ConfigError);
  EXPECT_THROW(load<Root>((dir / "main.yaml").string(), {"trainer.flag"}), ConfigError);
  EXPECT_THROW(load<Root>((dir / "main.yaml").string(), {"--trainer.id"}), ConfigError);
}

TEST(Config, DumpRoundTripsExactly) {
  Root r = parse_string<Root>("trainer:\n  learning_rate: 0.1\n  keep: [{every: 3, until: 9}]\n");
  std::string yaml = dump(to_yaml_value(r));
  Root back = parse_string<Root>(yaml);
  EXPECT_EQ(back.trainer.learning_rate, r.trainer.learning_rate);  // bit-exact
  EXPECT_EQ(*back.trainer.keep[0].until, 9);
  EXPECT_EQ(dump(to_yaml_value(back)), yaml);
}

TEST(Config, DescribeListsEveryKeyWithDefaults) {
  std::vector<DocRow> rows;
  describe(rows, "", Root{});
  std::vector<std::string> keys;
  for (const auto& r : rows) keys.push_back(r.key);
  EXPECT_THAT(keys, ::testing::Contains("trainer.num_train_steps"));
  EXPECT_THAT(keys, ::testing::Contains("trainer.save_interval"));
  for (const auto& r : rows) {
    if (r.key == "trainer.save_interval") {
      EXPECT_EQ(r.default_value, "15m");
    }
  }
}

namespace {

std::string load_error(const std::filesystem::path& file) {
  try {
    load_yaml_file(file.string());
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

std::filesystem::path scratch(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("levanter_config_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace

TEST(Config, DuplicateKeysAreAnErrorNamingBothLines) {
  auto dir = scratch("dup");
  std::ofstream(dir / "c.yaml") << "trainer:\n  num_train_steps: 10\n  id: a\n  num_train_steps: 20\n";
  EXPECT_THAT(load_error(dir / "c.yaml"),
              HasSubstr("c.yaml:4: trainer.num_train_steps: duplicate key (first given on line 2)"));
  std::ofstream(dir / "top.yaml") << "trainer: {}\noptimizer: {}\ntrainer: {}\n";
  EXPECT_THAT(load_error(dir / "top.yaml"), HasSubstr("top.yaml:3: trainer: duplicate key (first given on line 1)"));
  std::filesystem::remove_all(dir);
}

TEST(Config, AliasBombIsWalkedOncePerWrittenNode) {
  // 10 levels of 12 aliases each: 12^10 (6e10) nodes if expanded (shallow enough for the nesting limit, so a walk
  // that expanded aliases would run for hours); the walk visits each written node once.
  auto dir = scratch("bomb");
  std::ofstream f(dir / "bomb.yaml");
  f << "a0: &a0 [x, x, x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 10; ++i) {
    f << "a" << i << ": &a" << i << " [";
    for (int j = 0; j < 12; ++j) f << (j ? ", " : "") << "*a" << i - 1;
    f << "]\n";
  }
  f.close();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(load_error(dir / "bomb.yaml"), "(no error)");  // loading is fine; parsing into a config then
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));  // refuses the unknown keys
  std::filesystem::remove_all(dir);
}

TEST(Config, OnlyRegularFilesAndNoEchoOfForeignContent) {
  auto dir = scratch("files");
  EXPECT_THAT(load_error(dir), HasSubstr("is a directory, not a config file"));
  EXPECT_THAT(load_error(dir / "missing.yaml"), HasSubstr("missing.yaml: config file not found"));
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  EXPECT_THAT(load_error(dir / "fifo"), HasSubstr("not a regular file"));  // returns: never opened
  std::ofstream(dir / "secret.txt") << "root:x:0:0:secret-content\n";
  std::ofstream(dir / "main.yaml") << "trainer: !include secret.txt\n";
  std::string e = load_error(dir / "main.yaml");
  EXPECT_THAT(e, HasSubstr("secret.txt: not a YAML mapping"));
  EXPECT_THAT(e, ::testing::Not(HasSubstr("secret-content")));
  std::ofstream(dir / "fifo_inc.yaml") << "trainer: !include fifo\n";
  EXPECT_THAT(load_error(dir / "fifo_inc.yaml"), HasSubstr("not a regular file"));
  std::filesystem::remove_all(dir);
}
