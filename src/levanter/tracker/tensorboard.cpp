#include "levanter/tracker/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <variant>

#include "levanter/runtime/file_io.h"
#include "levanter/tracker/tensorboard_event.pb.h"

namespace fs = std::filesystem;

namespace levanter::tracker {

namespace pb = ::levanter::tensorboard;

// --- CRC-32C and TFRecords -----------------------------------------------------------------------------------

namespace {

std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;  // reflected Castagnoli polynomial
    t[i] = c;
  }
  return t;
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t get_le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> table = make_crc32c_table();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord(const std::string& payload) {
  std::string out;
  out.reserve(payload.size() + 16);
  put_le(out, payload.size(), 8);
  put_le(out, masked_crc32c(out.data(), 8), 4);
  out += payload;
  put_le(out, masked_crc32c(payload.data(), payload.size()), 4);
  return out;
}

std::vector<std::string> read_tfrecords(const std::string& path, bool* truncated) {
  const std::shared_ptr<runtime::Buffer> buf = runtime::read_file(path);
  const std::string_view bytes(buf->data(), buf->size());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  std::vector<std::string> out;
  if (truncated) *truncated = false;
  size_t at = 0;
  while (at < bytes.size()) {
    const size_t left = bytes.size() - at;
    if (left < 12) {
      if (truncated) *truncated = true;
      break;
    }
    const uint64_t len = get_le(p + at, 8);
    if (get_le(p + at + 8, 4) != masked_crc32c(p + at, 8)) {
      throw runtime::IoError(path + ": record at byte " + std::to_string(at) +
                             ": the length's checksum does not match (not an event file, or a damaged one)");
    }
    if (len > left - 12 || left - 12 - len < 4) {
      if (truncated) *truncated = true;
      break;
    }
    if (get_le(p + at + 12 + len, 4) != masked_crc32c(p + at + 12, len)) {
      throw runtime::IoError(path + ": record at byte " + std::to_string(at) + ": the data's checksum does not match");
    }
    out.emplace_back(bytes.data() + at + 12, len);
    at += 16 + len;
  }
  return out;
}

// --- the tracker ---------------------------------------------------------------------------------------------

namespace {

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string hostname() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

constexpr const char* kFilePrefix = "events.out.tfevents.";

void add_scalar(pb::Summary& s, const std::string& tag, double v) {
  pb::Summary::Value* val = s.add_value();
  val->set_tag(tag);
  val->set_simple_value(static_cast<float>(v));
}

// A text summary as TensorBoard's text plugin reads it: a string tensor of shape [1].
void add_text(pb::Summary& s, const std::string& tag, const std::string& text) {
  pb::Summary::Value* val = s.add_value();
  val->set_tag(tag);
  val->mutable_metadata()->mutable_plugin_data()->set_plugin_name("text");
  pb::TensorProto* t = val->mutable_tensor();
  t->set_dtype(pb::DT_STRING);
  t->mutable_tensor_shape()->add_dim()->set_size(1);
  t->add_string_val(text);
}

std::string serialize(const pb::Event& e) {
  std::string out;
  if (!e.SerializeToString(&out)) throw std::runtime_error("tensorboard: cannot serialize an event");
  return out;
}

}  // namespace

struct TensorboardTracker::File {
  runtime::File out;
};

TensorboardTracker::TensorboardTracker(std::string dir, std::string filename_suffix)
    : dir_(std::move(dir)), file_(std::make_unique<File>()) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw runtime::IoError(dir_ + ": cannot create the TensorBoard log directory: " + ec.message());
  const auto now = static_cast<long long>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "%010lld", now);
  const std::string base = std::string(kFilePrefix) + stamp + "." + hostname() + "." + std::to_string(::getpid()) + ".";
  // O_EXCL: never append to another writer's file; the counter makes names unique within a process.
  for (int n = 0;; ++n) {
    path_ = (fs::path(dir_) / (base + std::to_string(n) + filename_suffix)).string();
    if (fs::exists(path_, ec)) continue;
    file_->out = runtime::File::open(path_, O_WRONLY | O_CREAT | O_EXCL | O_APPEND, 0644);
    break;
  }
  pb::Event e;
  e.set_wall_time(wall_time());
  e.set_file_version("brain.Event:2");
  write_event(serialize(e));
}

TensorboardTracker::~TensorboardTracker() = default;

void TensorboardTracker::write_event(const std::string& serialized) {
  if (!file_->out.is_open()) throw runtime::IoError(path_ + ": the event file is closed (finish() was called)");
  const std::string rec = tfrecord(serialized);
  file_->out.write_all(rec.data(), rec.size());
}

void TensorboardTracker::write_summary(const Metrics& metrics, int64_t step) {
  pb::Event e;
  e.set_wall_time(wall_time());
  e.set_step(step);
  pb::Summary* s = e.mutable_summary();
  for (const auto& [name, value] : metrics) {
    std::visit(
        [&, &name = name](const auto& v) {
          if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::string>) {
            add_text(*s, name, v);
          } else {
            add_scalar(*s, name, static_cast<double>(v));
          }
        },
        value);
  }
  write_event(serialize(e));
}

void TensorboardTracker::log_hyperparameters(const Metrics& hparams) {
  if (hparams.empty()) return;
  Metrics shown = hparams;
  for (auto& [name, value] : shown) {
    const auto* s = std::get_if<std::string>(&value);
    if (!s) continue;
    // Markdown: indent so that a YAML config shows as a code block.
    std::string md;
    size_t start = 0;
    while (start <= s->size()) {
      size_t end = s->find('\n', start);
      if (end == std::string::npos) end = s->size();
      if (end > start) md += "    " + s->substr(start, end - start) + "\n";
      start = end + 1;
    }
    value = std::move(md);
  }
  write_summary(shown, start_step_);
}

void TensorboardTracker::log(const Metrics& metrics, int64_t step) {
  write_summary(metrics, step);
  last_step_ = std::max(last_step_, step);
}

void TensorboardTracker::log_summary(const Metrics& metrics) { log(metrics, last_step_); }

void TensorboardTracker::resume_at(int64_t completed_steps, bool final_eval_again) {
  start_step_ = last_step_ = completed_steps;
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kFilePrefix, 0) != 0 || runtime::is_temporary_name(name)) continue;
    if (entry.path().string() == path_ || !entry.is_regular_file(ec)) continue;
    files.push_back(entry.path().string());
  }
  if (ec) throw runtime::IoError(dir_ + ": cannot list: " + ec.message());
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    bool truncated = false;
    const std::vector<std::string> records = read_tfrecords(f, &truncated);
    std::string kept;
    bool dropped = truncated;
    for (const std::string& r : records) {
      pb::Event e;
      if (!e.ParseFromString(r)) {
        throw runtime::IoError(f + ": a record is not a TensorBoard event; move the file out of " + dir_);
      }
      if (e.has_summary()) {
        pb::Summary filtered;
        for (const pb::Summary::Value& v : e.summary().value()) {
          if (logged_again(v.tag(), e.step(), completed_steps, final_eval_again)) {
            dropped = true;
          } else {
            *filtered.add_value() = v;
          }
        }
        if (filtered.value_size() != e.summary().value_size()) {
          if (filtered.value_size() == 0) continue;
          *e.mutable_summary() = std::move(filtered);
          kept += tfrecord(serialize(e));
          continue;
        }
      }
      kept += tfrecord(r);
    }
    if (!dropped) continue;
    runtime::AtomicFile out(fs::canonical(f).string());
    out.write(kept.data(), kept.size());
    out.commit();
  }
}

void TensorboardTracker::finish() {
  if (!file_->out.is_open()) return;
  file_->out.sync_data();
  file_->out.close();
}

}  // namespace levanter::tracker
