// The tokenizer.json loader: Tokenizer::from_json (what Tokenizer::from_file calls after reading the file), then
// the loaded tokenizer at work, since a loader that accepts a file must give a tokenizer that cannot crash.
//
// Input:  tokenizer.json  [NUL  text to encode]   (without a text, a fixed mix of scripts and special tokens)
// Expected: TokenizerError from the loader; InvalidUtf8Error from encode when the text is not UTF-8.
// Checked on every loaded tokenizer: ids in [0, vocab_size), encode_with_offsets gives encode's ids with offsets
// inside the text, decode of any id (negative, unknown, past the vocabulary) does not crash.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"
#include "levanter/data/tokenizer/tokenizer.h"

namespace {

constexpr std::string_view kDefaultText =
    "Hello world! It's  a\ttest\n\n of 12345 numbers, caf\xC3\xA9, \xE4\xBD\xA0\xE5\xA5\xBD, \xF0\x9F\x98\x80 "
    "<s>x</s> <|endoftext|> <unk><mask>  \xE2\x96\x81 trailing ";

void exercise(const levanter::data::Tokenizer& tok, std::string_view text) {
  using namespace levanter::data;
  const size_t vocab = tok.vocab_size();
  for (bool special : {false, true}) {
    std::vector<TokenId> ids;
    try {
      ids = tok.encode(text, special);
    } catch (const InvalidUtf8Error& e) {
      LEVANTER_FUZZ_CHECK(e.offset < text.size());
      return;
    }
    for (TokenId id : ids) LEVANTER_FUZZ_CHECK(id >= 0 && static_cast<size_t>(id) < vocab);
    const Encoding enc = tok.encode_with_offsets(text, special);
    LEVANTER_FUZZ_CHECK(enc.ids == ids);
    LEVANTER_FUZZ_CHECK(enc.offsets.size() == ids.size());
    for (const auto& [begin, end] : enc.offsets) LEVANTER_FUZZ_CHECK(begin <= end && end <= text.size());
    tok.decode(ids);
    tok.decode(ids, DecodeOptions{true, true});
  }
  // Ids the vocabulary may not have: skipped by decode, nullopt from id_to_token.
  constexpr TokenId kMax = std::numeric_limits<TokenId>::max(), kMin = std::numeric_limits<TokenId>::min();
  const auto n = static_cast<TokenId>(vocab);
  const std::vector<TokenId> odd = {-1, 0, 1, n - 1, n, kMax, kMin};
  tok.decode(odd);
  tok.decode(odd, DecodeOptions{true, true});
  for (TokenId id : odd) {
    if (auto s = tok.id_to_token(id)) tok.token_to_id(*s);
  }
  for (const AddedToken& a : tok.added_tokens()) tok.is_special(a.id);
  tok.bos_id();
  tok.eos_id();
  tok.unk_id();
  tok.describe();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace levanter;
  const auto parts = fuzz::split_nul(std::string_view(reinterpret_cast<const char*>(data), size));
  std::optional<data::Tokenizer> tok;
  try {
    tok.emplace(data::Tokenizer::from_json(parts[0], "fuzz/tokenizer.json"));
  } catch (const data::TokenizerError& e) {
    fuzz::expected(e);
    return 0;
  } catch (const std::exception& e) {
    fuzz::unexpected(e);
  }
  try {
    exercise(*tok, parts.size() > 1 ? parts[1] : kDefaultText);
  } catch (const std::exception& e) {
    fuzz::unexpected(e);
  }
  return 0;
}
