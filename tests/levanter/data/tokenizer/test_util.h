// Helpers for the tokenizer tests: paths of bundled test data and JSONL readers.
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "levanter/data/jsonl_reader.h"
#include "levanter/data/tokenizer/tokenizer.h"

namespace levanter::data::testing {

inline std::string source_path(const std::string& relative) {
  return std::string(LEVANTER_SOURCE_DIR) + "/" + relative;
}

inline const Tokenizer& gpt2() {
  static const Tokenizer tok = Tokenizer::from_file(source_path("data/gpt2/tokenizer.json"));
  return tok;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every non-blank line of a (possibly compressed) JSONL file, parsed.
inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  auto lines = open_lines(path);
  std::string_view line;
  while (lines->next(line))
    if (!is_blank(line)) out.push_back(nlohmann::json::parse(line.begin(), line.end()));
  return out;
}

inline std::vector<std::string> read_texts(const std::string& path) {
  std::vector<std::string> texts;
  for (const auto& j : read_jsonl(path)) texts.push_back(j.at("text").get<std::string>());
  return texts;
}

}  // namespace levanter::data::testing
