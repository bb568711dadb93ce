#include "levanter/viz/token_probs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/runtime/file_io.h"

namespace levanter::viz {

namespace {

// The length of the UTF-8 character starting at s[i]: > 0 a complete, well-formed character; 0 not UTF-8 (a stray
// continuation byte, an invalid lead byte or a missing continuation); -1 a well-formed beginning cut off by the end.
int char_length(const std::string& s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  int n;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) {
    n = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    n = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    n = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (int k = 1; k < n; ++k) {
    if (i + k >= s.size()) return -1;
    const auto c = static_cast<unsigned char>(s[i + k]);
    if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) return 0;
  }
  return n;
}

std::string escape(unsigned char c) {
  char buf[5];
  std::snprintf(buf, sizeof buf, "\\x%02X", c);
  return buf;
}

std::string escape_all(const std::string& bytes) {
  std::string out;
  for (char c : bytes) out += escape(static_cast<unsigned char>(c));
  return out;
}

std::string token_bytes(const data::Tokenizer& tok, int32_t id) {
  const auto t = static_cast<data::TokenId>(id);
  return tok.decode(&t, 1);  // the exact bytes (DecodeOptions' default), possibly part of a character
}

}  // namespace

Pieces display_pieces(const data::Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  Pieces out;
  out.pieces.reserve(ids.size());
  std::string pending;         // the beginning of a character the tokens so far have not completed
  bool pending_shown = false;  // already shown as escapes in a partial token
  for (size_t t = 0; t < ids.size(); ++t) {
    const std::string own = token_bytes(tokenizer, ids[t]);
    const std::string buf = pending + own;
    const size_t carried = pending.size();
    std::string text, rest;
    size_t i = 0;
    while (i < buf.size()) {
      const int n = char_length(buf, i);
      if (n > 0) {
        text.append(buf, i, static_cast<size_t>(n));
        i += static_cast<size_t>(n);
      } else if (n < 0) {
        rest = buf.substr(i);
        break;
      } else {
        if (i >= carried || !pending_shown) text += escape(static_cast<unsigned char>(buf[i]));
        ++i;
      }
    }
    if (text.empty() && !rest.empty()) {
      out.pieces.push_back(escape_all(own));
      out.partial.push_back(static_cast<int64_t>(t));
      pending_shown = true;
    } else {
      out.pieces.push_back(std::move(text));
      pending_shown = false;
    }
    pending = std::move(rest);
  }
  // A character the document never completes: its bytes appear in the last token unless they were shown already.
  if (!pending.empty() && !pending_shown && !out.pieces.empty()) out.pieces.back() += escape_all(pending);
  return out;
}

std::string display_piece(const data::Tokenizer& tokenizer, int32_t id) {
  const std::string bytes = token_bytes(tokenizer, id);
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    const int n = char_length(bytes, i);
    if (n > 0) {
      out.append(bytes, i, static_cast<size_t>(n));
      i += static_cast<size_t>(n);
    } else {
      out += escape(static_cast<unsigned char>(bytes[i]));
      ++i;
    }
  }
  return out;
}

double f32(double x) {
  const auto f = static_cast<float>(x);
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, f);
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

nlohmann::ordered_json docs_record(const std::string& source, int64_t top_k, const std::vector<SampleDoc>& docs,
                                   const data::Tokenizer& tokenizer) {
  nlohmann::ordered_json r;
  r["kind"] = "docs";
  r["format"] = kTokenProbsFormat;
  r["source"] = source;
  r["top_k"] = top_k;
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const SampleDoc& d : docs) {
    Pieces p = display_pieces(tokenizer, d.tokens);
    nlohmann::ordered_json e;
    e["index"] = d.index;
    e["tokens"] = d.tokens;
    e["pieces"] = p.pieces;
    e["partial"] = p.partial;
    list.push_back(std::move(e));
  }
  r["docs"] = std::move(list);
  return r;
}

nlohmann::ordered_json step_record(int64_t step, const std::vector<DocScores>& scores,
                                   const data::Tokenizer& tokenizer) {
  std::map<int32_t, std::string> pieces;  // alternatives repeat: show each id once
  auto piece = [&](int32_t id) -> const std::string& {
    auto it = pieces.find(id);
    if (it == pieces.end()) it = pieces.emplace(id, display_piece(tokenizer, id)).first;
    return it->second;
  };
  nlohmann::ordered_json r;
  r["kind"] = "step";
  r["step"] = step;
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const DocScores& s : scores) {
    nlohmann::ordered_json e;
    e["loss"] = f32(s.loss);
    nlohmann::ordered_json p = nlohmann::ordered_json::array(), top = nlohmann::ordered_json::array();
    for (float v : s.p) p.push_back(f32(v));
    for (const auto& alts : s.top) {
      nlohmann::ordered_json row = nlohmann::ordered_json::array();
      for (const auto& [id, v] : alts) row.push_back(nlohmann::ordered_json::array({piece(id), f32(v)}));
      top.push_back(std::move(row));
    }
    e["p"] = std::move(p);
    e["rank"] = s.rank;
    e["top"] = std::move(top);
    list.push_back(std::move(e));
  }
  r["docs"] = std::move(list);
  return r;
}

TokenProbsWriter::TokenProbsWriter(std::string path, const nlohmann::ordered_json& docs) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw runtime::IoError(path_ + ": cannot open for appending: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw runtime::IoError(path_ + ": " + std::strerror(errno));
  if (st.st_size > 0) {
    // Cut a last line without its newline (a crash in the middle of a write): it never was a record.
    std::ifstream in(path_, std::ios::binary);
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t keep = content.rfind('\n') == std::string::npos ? 0 : content.rfind('\n') + 1;
    if (keep != content.size() && ::ftruncate(fd_, static_cast<off_t>(keep)) != 0) {
      throw runtime::IoError(path_ + ": cannot cut its unfinished last line: " + std::strerror(errno));
    }
    existed_ = keep > 0;
    for (size_t start = 0; start < keep;) {
      const size_t end = content.find('\n', start);
      auto r = nlohmann::json::parse(std::string_view(content).substr(start, end - start), nullptr, false);
      start = end + 1;
      if (existing_docs_.is_null() && r.is_object() && r.value("kind", std::string()) == "docs") existing_docs_ = r;
      if (!r.is_object() || !r.contains("step") || !r["step"].is_number_integer()) continue;
      const int64_t step = r["step"].get<int64_t>();
      const std::string kind = r.value("kind", std::string());
      if (kind == "step") steps_.insert(step);
      if (kind == "resume") steps_.erase(steps_.lower_bound(step), steps_.end());
    }
  }
  if (!existed_) append(docs);
}

TokenProbsWriter::~TokenProbsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void TokenProbsWriter::append(const nlohmann::ordered_json& record) {
  const std::string kind = record.value("kind", std::string());
  const int64_t step = record.value("step", int64_t{0});
  if (kind == "step") steps_.insert(step);
  if (kind == "resume") steps_.erase(steps_.lower_bound(step), steps_.end());
  const std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw runtime::IoError(path_ + ": cannot append a record: " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

nlohmann::json page_data(const nlohmann::json& docs_record, std::vector<Series> series, const std::string& title,
                         std::optional<std::pair<int, int>> compare) {
  const std::string source = docs_record.value("source", std::string());
  nlohmann::json docs = nlohmann::json::array();
  for (const auto& d : docs_record.at("docs")) {
    const int64_t index = d.value("index", int64_t{0});
    nlohmann::json e;
    e["name"] = (source.empty() ? std::string("document") : source) + " #" + std::to_string(index);
    e["index"] = index;
    e["tokens"] = d.at("tokens");
    e["pieces"] = d.at("pieces");
    e["partial"] = d.value("partial", nlohmann::json::array());
    docs.push_back(std::move(e));
  }
  if (!compare) {
    std::stable_sort(series.begin(), series.end(), [](const Series& a, const Series& b) { return a.step < b.step; });
  }
  nlohmann::json s = nlohmann::json::array();
  for (Series& x : series) s.push_back({{"label", x.label}, {"step", x.step}, {"docs", std::move(x.docs)}});
  nlohmann::json out;
  out["title"] = title;
  out["source"] = source;
  out["top_k"] = docs_record.value("top_k", int64_t{0});
  out["docs"] = std::move(docs);
  out["series"] = std::move(s);
  out["compare"] = compare ? nlohmann::json{{"a", compare->first}, {"b", compare->second}} : nlohmann::json(nullptr);
  return out;
}

nlohmann::json read_page_data(const std::string& path, const std::string& title) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot read: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string content = ss.str();
  nlohmann::json docs;
  std::map<int64_t, nlohmann::json> steps;  // by step; a later record of a step replaces an earlier one
  size_t start = 0;
  int64_t line_no = 0;
  while (start < content.size()) {
    const size_t end = content.find('\n', start);
    if (end == std::string::npos) break;  // the line being written
    ++line_no;
    const std::string_view line(content.data() + start, end - start);
    start = end + 1;
    auto bad = [&](const std::string& why) {
      return std::runtime_error(path + ":" + std::to_string(line_no) + ": " + why);
    };
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json r = nlohmann::json::parse(line, nullptr, false);
    if (r.is_discarded() || !r.is_object()) throw bad("not a JSON object (a corrupt token_probs record)");
    const std::string kind = r.value("kind", std::string());
    try {
      if (line_no == 1) {
        if (kind != "docs") throw bad("the first line must be the \"docs\" record, found kind \"" + kind + "\"");
        if (r.value("format", 0) != kTokenProbsFormat) {
          throw bad("format " + r.value("format", nlohmann::json()).dump() + " is not the format this program reads (" +
                    std::to_string(kTokenProbsFormat) + ")");
        }
        if (!r.contains("docs") || !r["docs"].is_array()) throw bad("the docs record has no \"docs\" list");
        for (const auto& d : r["docs"]) {
          if (!d.contains("tokens") || !d.contains("pieces") || d["tokens"].size() != d["pieces"].size()) {
            throw bad("a document needs \"tokens\" and as many \"pieces\"");
          }
        }
        docs = std::move(r);
      } else if (kind == "step") {
        const int64_t step = r.at("step").get<int64_t>();
        if (!r.contains("docs") || !r["docs"].is_array() || r["docs"].size() != docs["docs"].size()) {
          throw bad("step " + std::to_string(step) + " scores " +
                    std::to_string(r.value("docs", nlohmann::json::array()).size()) + " documents, the docs line has " +
                    std::to_string(docs["docs"].size()));
        }
        steps[step] = std::move(r["docs"]);
      } else if (kind == "resume") {
        const int64_t s = r.at("step").get<int64_t>();
        steps.erase(steps.lower_bound(s), steps.end());
      } else {
        throw bad("unknown record kind \"" + kind + "\"");
      }
    } catch (const nlohmann::json::exception& e) {
      throw bad(std::string("malformed record: ") + e.what());
    }
  }
  if (docs.is_null()) throw std::runtime_error(path + ": no complete \"docs\" line yet");
  std::vector<Series> series;
  for (auto& [step, d] : steps) series.push_back({"step " + std::to_string(step), step, std::move(d)});
  return page_data(docs, std::move(series), title);
}

}  // namespace levanter::viz
