// The token-probability view's data (docs/visualization.md, "The token-probability view"): the store
// <run dir>/token_probs.jsonl that training appends to, and the page data that the page (page.h) and the live
// dashboard both read. Free of libtorch: the scores come from eval/token_probs.h through the trainer or the CLI.
//
//   {"kind":"docs","format":1,"source":"...","top_k":K,"docs":[{"index":I,"tokens":[...],"pieces":[...],
//     "partial":[...]}]}                                  first line, written once when the file is created
//   {"kind":"step","step":S,"docs":[{"loss":L,"p":[...],"rank":[...],"top":[[["piece",p],...],...]}]}
//   {"kind":"resume","step":S}                            a run resumed after S steps: step records with
//                                                         step >= S written before this line no longer count
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace levanter::data {
class Tokenizer;
}

namespace levanter::viz {

inline constexpr int kTokenProbsFormat = 1;
inline constexpr const char* kTokenProbsFile = "token_probs.jsonl";

// One sample document: its index in the set it came from and its token ids.
struct SampleDoc {
  int64_t index = 0;
  std::vector<int32_t> tokens;
};

// The scores of one document (eval::TokenScores without libtorch): positions j = 1..n-1.
struct DocScores {
  double loss = 0;
  std::vector<float> p;
  std::vector<int64_t> rank;
  std::vector<std::vector<std::pair<int32_t, float>>> top;  // (token id, p), most probable first
};

// How each token of a document is shown. Byte-level BPE tokens may hold part of a UTF-8 character: a token shows
// the characters whose last byte it holds (a character split over tokens appears in the token completing it);
// a token holding only incomplete bytes shows them as \xNN escapes and is listed in `partial` (0-based
// positions). Bytes that are not UTF-8 at all are shown as \xNN escapes where they are found.
struct Pieces {
  std::vector<std::string> pieces;
  std::vector<int64_t> partial;
};
Pieces display_pieces(const data::Tokenizer& tokenizer, const std::vector<int32_t>& ids);
// One token shown alone (a top-k alternative): its complete characters, the rest as \xNN escapes.
std::string display_piece(const data::Tokenizer& tokenizer, int32_t id);

// The value a float32 prints as in its shortest form, as a double: the file keeps float32 precision compactly.
double f32(double x);

// The records of the file, as the lines hold them (keys in the documented order).
nlohmann::ordered_json docs_record(const std::string& source, int64_t top_k, const std::vector<SampleDoc>& docs,
                                   const data::Tokenizer& tokenizer);
nlohmann::ordered_json step_record(int64_t step, const std::vector<DocScores>& scores,
                                   const data::Tokenizer& tokenizer);

// <run dir>/token_probs.jsonl, append-only. The constructor creates the file with `docs` as its first line when it
// is absent or empty; an existing file keeps its first line. A last line a crash left without its newline is cut
// off (it never was a record). One write(2) per line; runtime::IoError naming the file on failure.
class TokenProbsWriter {
 public:
  TokenProbsWriter(std::string path, const nlohmann::ordered_json& docs);
  ~TokenProbsWriter();
  TokenProbsWriter(const TokenProbsWriter&) = delete;
  TokenProbsWriter& operator=(const TokenProbsWriter&) = delete;
  const std::string& path() const { return path_; }
  // Whether the file held records before this writer opened it.
  bool existed() const { return existed_; }
  // The file's docs line as it was when opened (null when this writer created the file).
  const nlohmann::json& existing_docs() const { return existing_docs_; }
  // Whether the file holds a step record of `step` that counts (the resume rule applied), as the reader sees it.
  bool has_step(int64_t step) const { return steps_.count(step) > 0; }
  void append(const nlohmann::ordered_json& record);
  void resume_at(int64_t completed_steps) { append({{"kind", "resume"}, {"step", completed_steps}}); }

 private:
  std::string path_;
  int fd_ = -1;
  bool existed_ = false;
  std::set<int64_t> steps_;
  nlohmann::json existing_docs_;
};

// The page data, the one shape the page and the dashboard consume:
//   {"title", "source", "top_k", "docs":[{"name","index","tokens","pieces","partial"}],
//    "series":[{"label","step","docs":[{"loss","p","rank","top"}]}] (by step), "compare": null | {"a":0,"b":1}}
struct Series {
  std::string label;
  int64_t step = 0;
  nlohmann::json docs;  // a step record's "docs"
};
nlohmann::json page_data(const nlohmann::json& docs_record, std::vector<Series> series, const std::string& title,
                         std::optional<std::pair<int, int>> compare = std::nullopt);

// Reads a token_probs.jsonl: the docs line, then the step records that count (the resume rule), one series per
// step ("step S"). A last line without its newline (being written) is ignored; any other line that is not a
// record throws std::runtime_error naming the file and line.
nlohmann::json read_page_data(const std::string& path, const std::string& title = "");

}  // namespace levanter::viz
