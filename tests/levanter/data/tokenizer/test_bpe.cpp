// The BPE merge loop: the linear scan (short words) and HF's heap (long words) give the same merges.
#include <gtest/gtest.h>

#include <random>

#include "levanter/data/tokenizer/bpe.h"
#include "test_util.h"

namespace levanter::data {
namespace {

const detail::BpeModel& gpt2_model() {
  static const detail::BpeModel model = [] {
    detail::BpeModel m;
    auto j = nlohmann::json::parse(testing::read_file(testing::source_path("data/gpt2/tokenizer.json")));
    const auto& vocab = j["model"]["vocab"];
    for (auto it = vocab.begin(); it != vocab.end(); ++it) m.vocab.insert(it.key(), it.value().get<int>());
    int rank = 0;
    for (const auto& mg : j["model"]["merges"]) {
      std::string l = mg[0], r = mg[1];
      m.merges.insert(m.vocab.find(l), m.vocab.find(r), rank++, m.vocab.find(l + r));
    }
    m.finish();
    return m;
  }();
  return model;
}

std::vector<detail::Id> merged(const detail::BpeModel& m, const std::string& word, bool heap) {
  detail::BpeScratch s;
  m.symbolize(word, true, s);
  heap ? m.merge_heap(s) : m.merge_scan(s);
  std::uint32_t total = 0;
  for (auto len : s.lens) total += len;
  EXPECT_EQ(total, word.size());
  return s.ids;
}

TEST(Bpe, ScanAndHeapAgree) {
  const auto& m = gpt2_model();
  ASSERT_TRUE(m.byte_level_fast);
  std::vector<std::string> words;
  for (const std::string& t : testing::read_texts(testing::source_path("tests/data/austen/validation.jsonl.gz"))) {
    for (std::size_t i = 0; i + 64 <= t.size() && words.size() < 3000; i += 61)
      words.push_back(t.substr(i, 1 + i % 63));
  }
  std::mt19937 rng(1234);
  const std::string alphabet = "aeiou tnsrhl'.,\n";
  for (int k = 0; k < 2000; ++k) {
    std::string w;
    for (int n = 1 + rng() % 80; n > 0; --n) w += alphabet[rng() % alphabet.size()];
    words.push_back(w);
  }
  words.push_back(std::string(500, ' '));
  words.push_back(std::string(333, 'a'));
  for (const std::string& w : words) ASSERT_EQ(merged(m, w, false), merged(m, w, true)) << w;
}

TEST(Bpe, ByteLevelCharacters) {
  EXPECT_EQ(detail::byte_level_char(' '), "\u0120");   // Ġ
  EXPECT_EQ(detail::byte_level_char('\n'), "\u010a");  // Ċ
  EXPECT_EQ(detail::byte_level_char('a'), "a");
  EXPECT_EQ(detail::byte_level_char(0xAD), "\u0143");
  for (int b = 0; b < 256; ++b) {
    char32_t cp = 0;
    const std::string& c = detail::byte_level_char(static_cast<unsigned char>(b));
    unsigned char c0 = c[0];
    cp = c.size() == 1 ? c0 : ((c0 & 0x1Fu) << 6) | (static_cast<unsigned char>(c[1]) & 0x3Fu);
    EXPECT_EQ(detail::byte_level_byte(cp), b);
  }
}

}  // namespace
}  // namespace levanter::data
