// The TensorBoard tracker (Levanter's `type: tensorboard`): event files that TensorBoard reads, written without
// TensorFlow. An event file ("events.out.tfevents.<unix time>.<host>.<pid>.<n><suffix>") is a sequence of
// TFRecords, each an `Event` protocol buffer (tensorboard_event.proto, serialized by libprotobuf): first the file
// version, then one event per log() call whose Summary holds every numeric metric as a scalar (`simple_value`,
// float32 as TensorBoard stores it) and every string metric as a text summary (the `text` plugin).
//
// Each process writes a new file in the directory (as TensorBoard's own writers do). Every record is written with
// one write(2) when it is logged, so a crash loses at most the record being written. A resumed run rewrites the
// directory's earlier files without the rows it is about to log again, by the same rule as metrics.jsonl
// (Tracker::resume_at), so TensorBoard shows exactly what an uninterrupted run would have shown.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "levanter/tracker/tracker.h"

namespace levanter::tracker {

// CRC-32C (Castagnoli), which TFRecord framing uses, and TensorFlow's masking of it
// (((crc >> 15) | (crc << 17)) + 0xa282ead8).
uint32_t crc32c(const void* data, size_t n);
uint32_t masked_crc32c(const void* data, size_t n);

// One TFRecord around `payload`: little-endian u64 length, masked CRC-32C of those 8 bytes, the payload, masked
// CRC-32C of the payload.
std::string tfrecord(const std::string& payload);

// The payloads of the TFRecords in `path`, in order. A last record cut short (a crash during its write) is left
// out and reported through `truncated`; a checksum that does not match is a runtime::IoError naming the file and
// the record's offset.
std::vector<std::string> read_tfrecords(const std::string& path, bool* truncated = nullptr);

class TensorboardTracker : public Tracker {
 public:
  // Creates `dir` (and its parents) and a new event file in it. runtime::IoError if that fails.
  explicit TensorboardTracker(std::string dir, std::string filename_suffix = "");
  ~TensorboardTracker() override;
  // Strings (the resolved config) as text summaries, numbers as scalars, at the step the run starts from.
  void log_hyperparameters(const Metrics& hparams) override;
  void log(const Metrics& metrics, int64_t step) override;
  // At the last step logged (TensorBoard has no separate summary view).
  void log_summary(const Metrics& metrics) override;
  void resume_at(int64_t completed_steps, bool final_eval_again) override;
  void finish() override;
  const std::string& path() const { return path_; }
  const std::string& dir() const { return dir_; }

 private:
  void write_event(const std::string& serialized);
  // One event at `step`: numbers as scalars, strings as text.
  void write_summary(const Metrics& metrics, int64_t step);
  std::string dir_, path_;
  int64_t start_step_ = 0, last_step_ = 0;
  struct File;
  std::unique_ptr<File> file_;
};

}  // namespace levanter::tracker
