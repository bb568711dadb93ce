// A Hugging Face `tokenizer.json` BPE tokenizer: exact (the same ids as HF `tokenizers`) and fast.
//
//   auto tok = levanter::data::Tokenizer::from_file("data/gpt2/tokenizer.json");
//   std::vector<TokenId> ids = tok.encode("Hello world");        // {15496, 995}
//   std::string text = tok.decode(ids);                           // "Hello world"
//
// Supported (anything else is refused at load time with an error naming the component):
//   model          BPE (merges as "a b" strings or ["a","b"] pairs; byte_fallback, unk_token, fuse_unk,
//                  ignore_merges, continuing_subword_prefix, end_of_word_suffix; dropout must be null)
//   normalizer     null, Sequence, Prepend, Replace (String pattern)
//   pre_tokenizer  null, ByteLevel (GPT-2 regex or none, add_prefix_space), Metaspace, Sequence
//   post_processor null, ByteLevel, TemplateProcessing (single template), RobertaProcessing, BertProcessing,
//                  Sequence
//   decoder        null, ByteLevel, Metaspace, Replace (String), ByteFallback, Fuse, Strip, Sequence
//   added_tokens   all options (special, normalized, lstrip, rstrip, single_word)
//   truncation and padding must be null (the data pipeline packs sequences itself).
// See docs/tokenizer.md for the details and the exactness guarantees.
//
// Thread safety: a Tokenizer is immutable after loading; every method may be called from any number of
// threads at once. Copies are cheap (they share the loaded model). Each thread that encodes keeps a word
// cache (up to 16 MiB, reused through a pool; it only changes speed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace levanter::data {

using TokenId = std::int32_t;
// Token ids in a tokenizer.json lie below this (2^24): far above any vocabulary in use (about 256K at most), and
// low enough that a vocabulary sized by its largest id stays small.
constexpr TokenId kMaxTokenId = TokenId{1} << 24;

// A tokenizer.json that cannot be read, parsed or is outside the supported subset.
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Text given to encode() that is not valid UTF-8. offset: the first bad byte.
class InvalidUtf8Error : public std::invalid_argument {
 public:
  InvalidUtf8Error(const std::string& what, std::size_t offset) : std::invalid_argument(what), offset(offset) {}
  std::size_t offset;
};

struct AddedToken {
  TokenId id;
  std::string content;
  bool special = false;
  bool normalized = false;
  bool lstrip = false, rstrip = false, single_word = false;
};

// ids with the byte range [begin, end) of the input text that each token came from. A token made of some of
// the bytes of a character covers exactly those bytes; a token added by the post-processor (BOS/EOS) or a
// character added by the normalizer (Metaspace's leading "▁") covers the character it was attached to, or is
// empty (begin == end).
struct Encoding {
  std::vector<TokenId> ids;
  std::vector<std::pair<std::size_t, std::size_t>> offsets;
};

struct DecodeOptions {
  bool skip_special_tokens = false;  // drop added tokens marked special (HF's skip_special_tokens)
  // false: the exact bytes, so decode(encode(s)) == s, and a token sequence that splits a character decodes
  // to the bytes it holds (concatenating the decodings of consecutive pieces gives the decoding of the
  // whole). true: HF's output, where ill-formed UTF-8 becomes U+FFFD.
  bool replace_invalid_utf8 = false;
};

class Tokenizer {
 public:
  // Reads a tokenizer.json. Throws TokenizerError naming the file and the problem.
  static Tokenizer from_file(const std::string& path);
  // Parses tokenizer.json content; `source` names it in error messages.
  static Tokenizer from_json(std::string_view json, const std::string& source = "<tokenizer.json>");

  // Token ids of `text`, as HF's encode(text, add_special_tokens). With add_special_tokens = false (the
  // default) nothing is added: no BOS/EOS, whatever the post-processor says. Throws InvalidUtf8Error.
  std::vector<TokenId> encode(std::string_view text, bool add_special_tokens = false) const;
  // Appends the ids of `text` to `out` (no allocation once `out` has grown: the hot path for the cache).
  void encode_into(std::string_view text, std::vector<TokenId>& out, bool add_special_tokens = false) const;
  Encoding encode_with_offsets(std::string_view text, bool add_special_tokens = false) const;

  // Encodes every text on up to `num_threads` threads (0: the number of hardware threads): the caller and the
  // workers of runtime::compute_pool(), which has one per hardware thread besides the caller. The result is in
  // input order and independent of the thread count. Errors are rethrown (the first failing text's).
  std::vector<std::vector<TokenId>> encode_batch(const std::vector<std::string>& texts, int num_threads = 0,
                                                 bool add_special_tokens = false) const;
  std::vector<std::vector<TokenId>> encode_batch(const std::vector<std::string_view>& texts, int num_threads = 0,
                                                 bool add_special_tokens = false) const;

  // Text of `ids` through the decoder (unknown ids are skipped, as in HF).
  std::string decode(const std::vector<TokenId>& ids, const DecodeOptions& options = {}) const;
  std::string decode(const TokenId* ids, std::size_t n, const DecodeOptions& options = {}) const;

  // 1 + the largest id of the model vocabulary and the added tokens: the embedding rows a model needs.
  std::size_t vocab_size() const;
  std::optional<TokenId> token_to_id(std::string_view token) const;  // added tokens first, then the model
  std::optional<std::string> id_to_token(TokenId id) const;
  const std::vector<AddedToken>& added_tokens() const;
  bool is_special(TokenId id) const;

  // Roles of special tokens. tokenizer.json does not name them, so: the tokens the post-processor's template
  // puts before / after the text, else well-known names (<s> </s>, <|begin_of_text|> <|end_of_text|>,
  // <bos> <eos>; GPT-2's <|endoftext|> is both BOS and EOS, as in HF's gpt2 configuration).
  std::optional<TokenId> bos_id() const;
  std::optional<TokenId> eos_id() const;
  std::optional<TokenId> unk_id() const;

  // "sha256:<64 hex>" of a canonical form of everything that determines encode() and decode(): equal for
  // the same tokenizer written differently (merges as "a b" or ["a","b"], key order, whitespace). The token
  // cache records it.
  const std::string& fingerprint() const;
  // One line: model, vocabulary size, components (for logs).
  std::string describe() const;

  Tokenizer(const Tokenizer&) = default;
  Tokenizer(Tokenizer&&) noexcept = default;
  Tokenizer& operator=(const Tokenizer&) = default;
  Tokenizer& operator=(Tokenizer&&) noexcept = default;
  ~Tokenizer();

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

}  // namespace levanter::data
