// Internals of Tokenizer (not a public header): the loaded pipeline and the per-thread word caches.
//
// encode() follows HF's TokenizerImpl::encode_single_sequence step by step:
//   1. split out added tokens whose `normalized` is false, on the raw text;
//   2. normalize each remaining piece, then split out the `normalized` added tokens (their content was put
//      through the normalizer at load time, as HF does);
//   3. pre-tokenize each remaining piece (ByteLevel / Metaspace), 4. BPE each pre-token,
//   5. the post-processor's template, only when add_special_tokens is asked for.
// For GPT-2-like tokenizers (no normalizer, ByteLevel with the GPT-2 regex and no prefix space) steps 2-3 run
// on the raw bytes with the hand-written scanner of gpt2_split.h, and every pre-token goes through a word
// cache, so BPE runs once per distinct word. Other tokenizers take the general path, which carries for every
// byte of a transformed piece the range of the original text it came from.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "levanter/data/tokenizer/bpe.h"
#include "levanter/data/tokenizer/tokenizer.h"

namespace levanter::data::detail {

enum class PrependScheme { kAlways, kFirst, kNever };

struct NormalizerStep {
  enum Kind { kPrepend, kReplace } kind;
  std::string pattern, content;  // kPrepend: content only
};

struct PreTokenizerStep {
  enum Kind { kByteLevel, kMetaspace } kind;
  bool add_prefix_space = false;  // ByteLevel
  bool use_regex = true;          // ByteLevel
  std::string replacement;        // Metaspace (one character, UTF-8)
  PrependScheme scheme = PrependScheme::kAlways;
  bool split = true;  // Metaspace
};

struct DecoderStep {
  enum Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip } kind;
  std::string pattern, content;  // kReplace: pattern -> content; kMetaspace: pattern = replacement; kStrip: content
  PrependScheme scheme = PrependScheme::kAlways;
  int start = 0, stop = 0;  // kStrip
};

// Leftmost-longest search over the added tokens' contents (HF uses Aho-Corasick, LeftmostLongest).
class AddedMatcher {
 public:
  void add(std::string pattern, int token_index);
  void finish();
  bool empty() const { return patterns_.empty(); }
  // The first match at or after `from`: sets begin/end and returns the token index, or -1.
  int find(std::string_view s, std::size_t from, std::size_t* begin, std::size_t* end) const;

 private:
  std::vector<std::pair<std::string, int>> patterns_;
  std::vector<std::vector<int>> by_first_byte_;  // pattern indices, longest first
  bool first_byte_[256] = {};
};

// An open-addressing map from a word to its ids and byte lengths; cleared when full (only speed changes).
// One 64-byte slot per word holds the hash, the key and up to 4 ids inline, so that a hit on a typical word
// touches one cache line; longer keys and values live in arenas. Lengths (for offsets) are always in an arena.
class WordCache {
 public:
  WordCache();
  // On a hit, appends the ids (and lens when lens != nullptr) and returns true.
  bool lookup(std::string_view word, std::uint64_t hash, std::vector<Id>& ids, std::vector<std::uint32_t>* lens) {
    // Hot words first: a direct-mapped 128 KiB table that stays in L2 (the 5,000 most frequent words of
    // English text are ~90% of its pre-tokens; the big table is spread over megabytes).
    Hot& hot = hot_[(hash >> 32) & (kHotSlots - 1)];
    if (!lens && hot.hash == static_cast<std::uint32_t>(hash) && hot.key_length == word.size() &&
        same_bytes(hot.key, word.data(), word.size())) {
      for (std::uint32_t k = 0; k < hot.count; ++k) ids.push_back(hot.ids[k]);
      return true;
    }
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.hash == 0) return false;
      if (s.hash != hash || s.key_length != word.size()) continue;
      const char* key = s.key_length <= kInlineKey ? s.key : keys_.data() + s.key_offset;
      if (!same_bytes(key, word.data(), word.size())) continue;
      const Id* v = s.count <= kInlineIds ? s.ids : ids_.data() + s.value_offset;
      for (std::uint32_t k = 0; k < s.count; ++k) ids.push_back(v[k]);
      if (word.size() <= kHotKey && s.count <= kHotIds) {
        hot.hash = static_cast<std::uint32_t>(hash);
        hot.key_length = static_cast<std::uint8_t>(word.size());
        hot.count = static_cast<std::uint8_t>(s.count);
        std::memcpy(hot.key, word.data(), word.size());
        std::copy(v, v + s.count, hot.ids);
      }
      if (lens) lens->insert(lens->end(), lens_.begin() + s.lens_offset, lens_.begin() + s.lens_offset + s.count);
      return true;
    }
  }
  void insert(std::string_view word, std::uint64_t hash, const Id* ids, const std::uint32_t* lens, std::size_t n);
  static constexpr std::size_t kMaxWordBytes = 255;

 private:
  static constexpr std::uint32_t kInlineKey = 20, kInlineIds = 4;
  struct alignas(64) Slot {
    std::uint64_t hash = 0;  // 0: empty
    std::uint32_t key_length = 0, count = 0;
    std::uint32_t key_offset = 0, value_offset = 0, lens_offset = 0;
    char key[kInlineKey];
    Id ids[kInlineIds];
  };
  static_assert(sizeof(Slot) == 64, "one cache line per slot");
  static constexpr std::size_t kHotSlots = 4096, kHotKey = 14, kHotIds = 2;
  struct alignas(32) Hot {
    std::uint32_t hash = 0;  // low 32 bits of the word's hash (never 0 for a filled slot: the hash is odd)
    std::uint8_t key_length = 0, count = 0;
    char key[kHotKey];
    Id ids[kHotIds];
  };
  static_assert(sizeof(Hot) == 32, "two hot words per cache line");
  static bool same_bytes(const char* a, const char* b, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
      if (a[i] != b[i]) return false;
    return true;
  }
  void clear();
  std::vector<Hot> hot_;
  std::vector<Slot> slots_;
  std::size_t size_ = 0;
  std::string keys_;
  std::vector<Id> ids_;
  std::vector<std::uint32_t> lens_;
};

struct Segment {  // a piece of text after added-token splitting
  std::size_t begin, end;
  int added = -1;  // index into added tokens, or -1 for text
};

// What one encoding thread owns: a word cache and scratch buffers.
struct EncodeState {
  WordCache cache;
  std::vector<Segment> segments, sub_segments;
  BpeScratch scratch;
  std::vector<Id> word_ids;
  std::vector<std::uint32_t> word_lens;
};

// A free list of EncodeStates, so that short-lived threads and plain encode() calls reuse warm caches.
class StatePool {
 public:
  std::unique_ptr<EncodeState> acquire();
  void release(std::unique_ptr<EncodeState> s);

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<EncodeState>> free_;
};

// encode_batch runs on runtime::compute_pool(): the caller encodes with a leased state, and each of the
// pool's workers (participant p >= 1) with its own state here, so that its word cache stays warm across
// batches. Slot p is created and used only by worker p (a worker runs one chunk at a time), so concurrent
// batches need no lock.
class WorkerStates {
 public:
  EncodeState& of(int participant);

 private:
  std::once_flag sized_;
  std::vector<std::unique_ptr<EncodeState>> states_;
};

// A piece of transformed text (general path): bytes and, for each byte, the original range it came from.
struct Piece {
  std::string text;
  std::vector<std::uint32_t> orig_begin, orig_end;
  std::size_t original_start() const { return orig_begin.empty() ? 0 : orig_begin[0]; }
};

struct Output {
  std::vector<Id>* ids;
  std::vector<std::pair<std::size_t, std::size_t>>* offsets;  // nullptr when not wanted
};

}  // namespace levanter::data::detail

namespace levanter::data {

struct Tokenizer::Impl {
  detail::BpeModel bpe;
  std::vector<AddedToken> added;
  // What id_to_token and decode give for each added token: its content, put through the normalizer when
  // `normalized` (HF stores it so: with a Prepend("▁") normalizer, a normalized "<s>" decodes as "▁<s>").
  std::vector<std::string> added_surface;
  detail::StringIdMap added_by_content;  // content -> index into `added`
  std::vector<int> added_by_id;          // id -> index into `added`, or -1
  detail::AddedMatcher raw_matcher, normalized_matcher;

  std::vector<detail::NormalizerStep> normalizer;
  std::vector<detail::PreTokenizerStep> pre_tokenizer;
  bool byte_level = false;  // pre-tokens are raw bytes mapped by ByteLevel
  bool gpt2_fast = false;   // the fast path applies (see the file comment)

  bool has_template = false;
  std::vector<std::vector<TokenId>> template_items;  // single template; an empty item marks the sequence

  bool has_decoder = false;
  std::vector<detail::DecoderStep> decoders;

  std::optional<TokenId> bos, eos;
  std::size_t vocab_size = 0;
  std::string fingerprint, description;

  mutable detail::StatePool pool;
  mutable detail::WorkerStates workers;  // encode_batch's warm states, one per compute-pool worker

  void encode(std::string_view text, bool add_special_tokens, detail::Output out) const;  // leases a state
  void encode(std::string_view text, bool add_special_tokens, detail::EncodeState& st, detail::Output out) const;
  detail::StatePool& states() const { return pool; }
  std::string decode(const TokenId* ids, std::size_t n, const DecodeOptions& options) const;

  // Steps of encode().
  void split_added(std::string_view s, const detail::AddedMatcher& m, std::vector<detail::Segment>& out) const;
  void encode_fast(std::string_view text, std::size_t base, detail::EncodeState& st, detail::Output out) const;
  void normalize(detail::Piece& p) const;
  void pre_tokenize_and_model(detail::Piece&& p, detail::EncodeState& st, detail::Output out) const;
  void model_word(std::string_view word, detail::EncodeState& st, bool want_lens) const;
};

// Loading (tokenizer_load.cpp).
std::shared_ptr<Tokenizer::Impl> load_tokenizer_impl(std::string_view json, const std::string& source);

}  // namespace levanter::data
