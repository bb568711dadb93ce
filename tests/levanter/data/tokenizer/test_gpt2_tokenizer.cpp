// GPT-2 tokenizer: the same ids as Hugging Face tokenizers on the bundled corpora and on tricky strings.
#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <thread>

#include "levanter/data/tokenizer/gpt2_split.h"
#include "test_util.h"

namespace levanter::data {
namespace {

using testing::gpt2;
using testing::read_jsonl;
using testing::read_texts;
using testing::source_path;

std::vector<std::string> pre_tokens(const std::string& s) {
  std::vector<std::string> out;
  detail::gpt2_split(s.data(), s.size(), [&](std::size_t b, std::size_t e) { out.push_back(s.substr(b, e - b)); });
  return out;
}

using V = std::vector<std::string>;

TEST(Gpt2Split, FollowsTheRegex) {
  EXPECT_EQ(pre_tokens(""), V{});
  EXPECT_EQ(pre_tokens("I'm don't"), (V{"I", "'m", " don", "'t"}));
  EXPECT_EQ(pre_tokens("we've you're he'll she'd it's"),
            (V{"we", "'ve", " you", "'re", " he", "'ll", " she", "'d", " it", "'s"}));
  EXPECT_EQ(pre_tokens("IT'S"), (V{"IT", "'", "S"}));                    // case-sensitive contractions
  EXPECT_EQ(pre_tokens(" 's ?'s"), (V{" '", "s", " ?'", "s"}));          // no contraction inside a punctuation run
  EXPECT_EQ(pre_tokens("Hello   world"), (V{"Hello", "  ", " world"}));  // \s+(?!\S) gives one space back
  EXPECT_EQ(pre_tokens("\n\n\nword"), (V{"\n\n", "\n", "word"}));
  EXPECT_EQ(pre_tokens("word  \t "), (V{"word", "  \t "}));    // trailing whitespace stays together
  EXPECT_EQ(pre_tokens("a\u0085b"), (V{"a", "\u0085", "b"}));  // U+0085 is White_Space
  EXPECT_EQ(pre_tokens("x\ufeffy"), (V{"x", "\ufeff", "y"}));  // U+FEFF is not
  EXPECT_EQ(pre_tokens("a \u00a0b"), (V{"a", " ", "\u00a0", "b"}));
  EXPECT_EQ(pre_tokens("x2y 3.14 \u0661\u0662"), (V{"x", "2", "y", " 3", ".", "14", " \u0661\u0662"}));
  EXPECT_EQ(pre_tokens("cafe\u0301!"), (V{"cafe", "\u0301!"}));  // a combining mark is not \p{L}
  EXPECT_EQ(pre_tokens("日本語 😀😀"), (V{"日本語", " 😀😀"}));
}

// Every code point gets the class HF tokenizers gives it (hf_char_classes.txt.gz was made by asking HF's
// pre-tokenizer about each one; see hf_char_classes.js).
TEST(Gpt2Split, EveryCodePointHasHuggingFacesClass) {
  auto lines = open_lines(source_path("tests/data/tokenizer/hf_char_classes.txt.gz"));
  std::string_view line;
  std::size_t checked = 0, wrong = 0;
  while (lines->next(line)) {
    if (line.empty() || line[0] == '#') continue;
    unsigned first, last;
    char cls;
    ASSERT_EQ(std::sscanf(std::string(line).c_str(), "%X %X %c", &first, &last, &cls), 3) << line;
    const unicode::CharClass want = cls == 'L'   ? unicode::kLetter
                                    : cls == 'N' ? unicode::kNumber
                                    : cls == 'S' ? unicode::kSpace
                                                 : unicode::kOther;
    for (char32_t cp = first; cp <= last; ++cp, ++checked) {
      if (unicode::char_class(cp) != want && wrong++ < 10)
        ADD_FAILURE() << "U+" << std::hex << cp << " should be " << cls;
    }
  }
  EXPECT_EQ(checked, 0x110000u - 0x800u);  // all but the surrogates
  EXPECT_EQ(wrong, 0u);
}

TEST(Gpt2Tokenizer, KnownIds) {
  const Tokenizer& tok = gpt2();
  EXPECT_EQ(tok.encode("Hello world"), (std::vector<TokenId>{15496, 995}));
  EXPECT_EQ(tok.encode(" Hello world"), (std::vector<TokenId>{18435, 995}));
  EXPECT_EQ(tok.encode(""), std::vector<TokenId>{});
  EXPECT_EQ(tok.encode("a<|endoftext|>b"), (std::vector<TokenId>{64, 50256, 65}));
  EXPECT_EQ(tok.encode("<|endoftext|> Hello world <|endoftext|>"),
            (std::vector<TokenId>{50256, 18435, 995, 220, 50256}));
  // GPT-2's post-processor adds nothing, with or without add_special_tokens.
  EXPECT_EQ(tok.encode("Hello world", true), (std::vector<TokenId>{15496, 995}));
}

// Tricky strings (contractions, 'S, U+0085, U+FEFF, U+00A0, runs of spaces, trailing whitespace, numbers,
// emoji, CJK, a literal <|endoftext|>, the empty string, ...) against ids from HF tokenizers 0.23.2.
TEST(Gpt2Tokenizer, TrickyStringsMatchHuggingFace) {
  const Tokenizer& tok = gpt2();
  auto texts = read_texts(source_path("tests/data/tokenizer/tricky.jsonl"));
  auto refs = read_jsonl(source_path("tests/data/tokenizer/gpt2.tricky.refs.jsonl"));
  ASSERT_EQ(texts.size(), refs.size());
  ASSERT_GE(texts.size(), 100u);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    SCOPED_TRACE("text #" + std::to_string(i) + ": " + nlohmann::json(texts[i]).dump());
    EXPECT_EQ(tok.encode(texts[i]), refs[i].at("ids").get<std::vector<TokenId>>());
    EXPECT_EQ(tok.decode(tok.encode(texts[i])), texts[i]);
    DecodeOptions hf;
    hf.replace_invalid_utf8 = true;
    EXPECT_EQ(tok.decode(refs[i].at("ids").get<std::vector<TokenId>>(), hf),
              refs[i].at("decoded_plain").get<std::string>());
  }
}

class Gpt2Corpus : public ::testing::TestWithParam<std::string> {};

// The validation splits of the three corpora: 0 mismatches, and decode(encode(s)) == s.
TEST_P(Gpt2Corpus, ValidationSplitMatchesHuggingFace) {
  const Tokenizer& tok = gpt2();
  auto texts = read_texts(source_path("tests/data/" + GetParam() + "/validation.jsonl.gz"));
  auto refs = read_jsonl(source_path("tests/data/" + GetParam() + "/validation.ids.jsonl.gz"));
  ASSERT_EQ(texts.size(), refs.size());
  std::size_t mismatches = 0, round_trip_failures = 0;
  auto batch = tok.encode_batch(texts, 2);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    auto ids = tok.encode(texts[i]);
    if (ids != refs[i].at("ids").get<std::vector<TokenId>>()) ++mismatches;
    if (batch[i] != ids) ++mismatches;
    if (tok.decode(ids) != texts[i]) ++round_trip_failures;
  }
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(round_trip_failures, 0u);
}

INSTANTIATE_TEST_SUITE_P(Corpora, Gpt2Corpus, ::testing::Values("kjv", "austen", "fortunes"));

TEST(Gpt2Tokenizer, Vocabulary) {
  const Tokenizer& tok = gpt2();
  EXPECT_EQ(tok.vocab_size(), 50257u);
  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), 50256);
  EXPECT_EQ(tok.token_to_id("\u0120the"), 262);
  EXPECT_EQ(tok.token_to_id("no such token"), std::nullopt);
  EXPECT_EQ(tok.id_to_token(262), "\u0120the");
  EXPECT_EQ(tok.id_to_token(50256), "<|endoftext|>");
  EXPECT_EQ(tok.id_to_token(50257), std::nullopt);
  EXPECT_EQ(tok.id_to_token(-1), std::nullopt);
  EXPECT_EQ(tok.eos_id(), 50256);
  EXPECT_EQ(tok.bos_id(), 50256);
  EXPECT_EQ(tok.unk_id(), std::nullopt);
  EXPECT_TRUE(tok.is_special(50256));
  EXPECT_FALSE(tok.is_special(262));
  ASSERT_EQ(tok.added_tokens().size(), 1u);
  EXPECT_EQ(tok.added_tokens()[0].content, "<|endoftext|>");
}

TEST(Gpt2Tokenizer, DecodeOptions) {
  const Tokenizer& tok = gpt2();
  auto ids = tok.encode("a<|endoftext|>b");
  EXPECT_EQ(tok.decode(ids), "a<|endoftext|>b");
  DecodeOptions skip;
  skip.skip_special_tokens = true;
  EXPECT_EQ(tok.decode(ids, skip), "ab");
  // A character split across tokens: the exact bytes by default, U+FFFD like HF on request.
  auto emoji = tok.encode("😀");
  ASSERT_GT(emoji.size(), 1u);
  std::string first = tok.decode(std::vector<TokenId>(emoji.begin(), emoji.begin() + 1));
  std::string rest = tok.decode(std::vector<TokenId>(emoji.begin() + 1, emoji.end()));
  EXPECT_EQ(first + rest, "😀");
  DecodeOptions hf;
  hf.replace_invalid_utf8 = true;
  EXPECT_EQ(tok.decode(std::vector<TokenId>(emoji.begin(), emoji.begin() + 1), hf).substr(0, 3), "\xEF\xBF\xBD");
  EXPECT_EQ(tok.decode({999999, 15496}), "Hello");  // unknown ids are skipped, as in HF
}

TEST(Gpt2Tokenizer, OffsetsCoverTheText) {
  const Tokenizer& tok = gpt2();
  for (const std::string& text : read_texts(source_path("tests/data/tokenizer/tricky.jsonl"))) {
    Encoding e = tok.encode_with_offsets(text);
    ASSERT_EQ(e.ids, tok.encode(text));
    ASSERT_EQ(e.ids.size(), e.offsets.size());
    std::size_t pos = 0;
    for (std::size_t i = 0; i < e.ids.size(); ++i) {
      ASSERT_EQ(e.offsets[i].first, pos) << text;  // contiguous for a byte-level tokenizer without normalizer
      ASSERT_GT(e.offsets[i].second, e.offsets[i].first);
      // Each token decodes to exactly the bytes it covers.
      ASSERT_EQ(tok.decode({e.ids[i]}), text.substr(e.offsets[i].first, e.offsets[i].second - e.offsets[i].first));
      pos = e.offsets[i].second;
    }
    EXPECT_EQ(pos, text.size());
  }
}

TEST(Gpt2Tokenizer, InvalidUtf8IsAnErrorNamingTheByte) {
  const Tokenizer& tok = gpt2();
  const std::pair<std::string, std::size_t> cases[] = {
      {"ab\xFF", 2}, {"x\xC3", 1}, {"\xED\xA0\x80 surrogate", 0}, {"ok \xC0\xAF overlong", 3}};
  for (const auto& [bad, offset] : cases) {
    try {
      tok.encode(bad);
      ADD_FAILURE() << "no error for case with offset " << offset;
    } catch (const InvalidUtf8Error& e) {
      EXPECT_EQ(e.offset, offset);
      EXPECT_NE(std::string(e.what()).find("invalid UTF-8 at byte " + std::to_string(offset)), std::string::npos);
    }
  }
}

TEST(Gpt2Tokenizer, BatchIsDeterministicAcrossThreadCounts) {
  const Tokenizer& tok = gpt2();
  auto texts = read_texts(source_path("tests/data/fortunes/validation.jsonl.gz"));
  auto one = tok.encode_batch(texts, 1);
  EXPECT_EQ(tok.encode_batch(texts, 2), one);
  EXPECT_EQ(tok.encode_batch(texts, 7), one);
  std::vector<std::string_view> views(texts.begin(), texts.end());
  EXPECT_EQ(tok.encode_batch(views, 3), one);
  EXPECT_TRUE(tok.encode_batch(std::vector<std::string>{}, 4).empty());
  // Batches from several threads at once on one tokenizer (the pool serves one; the others work alone), and a
  // tokenizer destroyed with its pool threads alive.
  {
    Tokenizer copy = Tokenizer::from_file(source_path("data/gpt2/tokenizer.json"));
    std::vector<std::vector<std::vector<TokenId>>> outs(3);
    std::vector<std::thread> callers;
    for (int k = 0; k < 3; ++k) callers.emplace_back([&, k] { outs[k] = copy.encode_batch(texts, 2); });
    for (auto& t : callers) t.join();
    for (const auto& o : outs) EXPECT_EQ(o, one);
  }
  // The error of the first bad text is rethrown.
  texts[5] = "bad \xFF";
  EXPECT_THROW(tok.encode_batch(texts, 2), InvalidUtf8Error);
}

TEST(Gpt2Tokenizer, LongRunsAreNotQuadratic) {
  const Tokenizer& tok = gpt2();
  std::string spaces(200000, ' ');
  auto ids = tok.encode("a" + spaces + "b");
  EXPECT_EQ(tok.decode(ids), "a" + spaces + "b");
  std::string word(100000, 'x');
  EXPECT_EQ(tok.decode(tok.encode(word)), word);
}

// The same tokenizer written differently (merges as "a b" strings, other key order and whitespace) has the
// same fingerprint; a different one has another.
TEST(Gpt2Tokenizer, FingerprintIsCanonical) {
  const Tokenizer& tok = gpt2();
  EXPECT_EQ(tok.fingerprint().rfind("sha256:", 0), 0u);
  EXPECT_EQ(tok.fingerprint().size(), 7u + 64u);
  nlohmann::json legacy = nlohmann::json::parse(testing::read_file(source_path("data/gpt2/tokenizer.json")));
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& m : legacy["model"]["merges"])
    merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  legacy["model"]["merges"] = merges;
  Tokenizer same = Tokenizer::from_json(legacy.dump(2));
  EXPECT_EQ(same.fingerprint(), tok.fingerprint());
  EXPECT_EQ(same.encode("Hello world, it's 2024!"), tok.encode("Hello world, it's 2024!"));
  legacy["added_tokens"][0]["special"] = false;
  EXPECT_NE(Tokenizer::from_json(legacy.dump()).fingerprint(), tok.fingerprint());
}

}  // namespace
}  // namespace levanter::data
