// The TensorBoard tracker: TFRecord framing with CRC-32C (checked against the standard check value), events
// parsed back with the same schema (scalars as float32, strings as text-plugin tensors), damaged files named, and
// a resumed run's rewrite of earlier event files. TensorBoard's own reader loads these files in
// tests/interop/test_tensorboard_interop.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "levanter/runtime/file_io.h"
#include "levanter/tracker/tensorboard.h"
#include "levanter/tracker/tensorboard_event.pb.h"

namespace fs = std::filesystem;
using namespace levanter::tracker;
namespace pb = levanter::tensorboard;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("levanter_tb_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<pb::Event> events_of(const std::string& path) {
  std::vector<pb::Event> out;
  for (const std::string& r : read_tfrecords(path)) {
    pb::Event e;
    EXPECT_TRUE(e.ParseFromString(r));
    out.push_back(e);
  }
  return out;
}

std::vector<std::string> event_files(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

// tag@step for every scalar in the directory's event files, in file order.
std::vector<std::string> scalar_points(const fs::path& dir) {
  std::vector<std::string> out;
  for (const std::string& f : event_files(dir)) {
    for (const pb::Event& e : events_of(f)) {
      for (const auto& v : e.summary().value()) {
        if (v.value_case() == pb::Summary::Value::kSimpleValue) out.push_back(v.tag() + "@" + std::to_string(e.step()));
      }
    }
  }
  return out;
}

}  // namespace

TEST(Tensorboard, Crc32cIsCastagnoli) {
  // The CRC-32C check value (RFC 3720's polynomial) of "123456789", and of nothing.
  EXPECT_EQ(crc32c("123456789", 9), 0xe3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  // 32 zero bytes: RFC 3720 appendix B.4's first test vector.
  const std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8a9136aau);
  const uint32_t c = crc32c("abc", 3);
  EXPECT_EQ(masked_crc32c("abc", 3), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(Tensorboard, RecordsRoundTripAndDamageIsNamed) {
  fs::path dir = temp_dir("records");
  const std::string path = (dir / "f").string();
  const std::string a = "first", b(1000, 'x');
  levanter::runtime::write_file_atomic(path, tfrecord(a) + tfrecord(b) + tfrecord("").substr(0, 7));
  bool truncated = false;
  EXPECT_EQ(read_tfrecords(path, &truncated), (std::vector<std::string>{a, b}));
  EXPECT_TRUE(truncated);  // the cut-off third record is left out, not an error

  std::string bad = tfrecord(a);
  bad[14] ^= 1;  // a payload byte
  levanter::runtime::write_file_atomic(path, bad);
  try {
    read_tfrecords(path);
    FAIL() << "a flipped byte was not noticed";
  } catch (const levanter::runtime::IoError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(path + ": record at byte 0: the data's checksum does not match"));
  }
  levanter::runtime::write_file_atomic(path, "this is not an event file at all");
  EXPECT_THROW(read_tfrecords(path), levanter::runtime::IoError);
  fs::remove_all(dir);
}

TEST(Tensorboard, WritesScalarsAndTextAsTensorboardSchema) {
  fs::path dir = temp_dir("write");
  const float loss = 6.61523008f;
  std::string path;
  {
    TensorboardTracker t((dir / "run").string(), ".v1");
    path = t.path();
    EXPECT_THAT(fs::path(path).filename().string(), ::testing::StartsWith("events.out.tfevents."));
    EXPECT_THAT(path, ::testing::EndsWith(".v1"));
    t.resume_at(0, false);
    t.log_hyperparameters({{"config", std::string("trainer:\n  seed: 0\n")}});
    t.log({{"train/loss", loss}, {"throughput/total_tokens", int64_t{2048}}, {"sample", std::string("Once upon")}}, 3);
    t.finish();
  }
  std::vector<pb::Event> ev = events_of(path);
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[0].file_version(), "brain.Event:2");
  EXPECT_GT(ev[0].wall_time(), 1.6e9);
  // The config, as a markdown code block.
  ASSERT_EQ(ev[1].summary().value_size(), 1);
  EXPECT_EQ(ev[1].summary().value(0).metadata().plugin_data().plugin_name(), "text");
  EXPECT_EQ(ev[1].summary().value(0).tensor().string_val(0), "    trainer:\n      seed: 0\n");
  const pb::Event& e = ev[2];
  EXPECT_EQ(e.step(), 3);
  ASSERT_EQ(e.summary().value_size(), 3);
  EXPECT_EQ(e.summary().value(0).tag(), "train/loss");
  const float back = e.summary().value(0).simple_value();
  EXPECT_EQ(std::memcmp(&back, &loss, sizeof loss), 0);  // float32 metrics keep their bits
  EXPECT_EQ(e.summary().value(1).simple_value(), 2048.0f);
  const auto& text = e.summary().value(2);
  EXPECT_EQ(text.tag(), "sample");
  EXPECT_EQ(text.metadata().plugin_data().plugin_name(), "text");
  EXPECT_EQ(text.tensor().dtype(), pb::DT_STRING);
  ASSERT_EQ(text.tensor().tensor_shape().dim_size(), 1);
  EXPECT_EQ(text.tensor().tensor_shape().dim(0).size(), 1);
  EXPECT_EQ(text.tensor().string_val(0), "Once upon");
  fs::remove_all(dir);
}

TEST(Tensorboard, AResumedRunRewritesEarlierFilesWithoutTheRowsItLogsAgain) {
  fs::path dir = temp_dir("resume");
  const std::string run = (dir / "run").string();
  {  // The first process: steps 0..5 logged, evaluations after 2 and 4 steps, killed before its checkpoint at 6.
    TensorboardTracker t(run);
    t.resume_at(0, false);
    for (int64_t s = 0; s < 6; ++s) t.log({{"train/loss", 1.0 / (s + 1)}}, s);
    t.log({{"eval/loss", 2.0}}, 2);
    t.log({{"eval/loss", 1.5}}, 4);
  }  // no finish(): as after SIGKILL
  // Cut the last record in half, as a kill during its write leaves it.
  std::string first = event_files(run)[0];
  fs::resize_file(first, fs::file_size(first) - 5);
  {  // The second process resumes from the checkpoint after 4 steps and redoes steps 4 and 5.
    TensorboardTracker t(run);
    t.resume_at(4, false);
    for (int64_t s = 4; s < 6; ++s) t.log({{"train/loss", 1.0 / (s + 1)}}, s);
    t.finish();
  }
  // What an uninterrupted run shows: each step once, the evaluation after 4 steps kept.
  std::vector<std::string> points = scalar_points(run);
  EXPECT_EQ(points, (std::vector<std::string>{"train/loss@0", "train/loss@1", "train/loss@2", "train/loss@3",
                                              "eval/loss@2", "train/loss@4", "train/loss@5"}));
  // The eval after 4 steps was the cut-off record: gone; the rewritten file parses whole.
  EXPECT_EQ(event_files(run).size(), 2u);
  for (const std::string& f : event_files(run)) {
    bool truncated = true;
    read_tfrecords(f, &truncated);
    EXPECT_FALSE(truncated) << f;
  }
  fs::remove_all(dir);
}
