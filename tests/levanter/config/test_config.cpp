#include <gmock/gmock.h>
#include <gtest/gtest.h>

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
