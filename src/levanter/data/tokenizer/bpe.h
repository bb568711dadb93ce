// The BPE model of a Hugging Face tokenizer.json (internal header; the public one is tokenizer.h).
//
// A word (one pre-token) becomes symbols, one per character (or per byte after ByteLevel), looked up in the
// vocabulary with HF's rules (continuing_subword_prefix / end_of_word_suffix, byte_fallback to <0xXX>,
// unk with fuse_unk). Then merges apply: repeatedly the adjacent pair with the lowest merge rank, leftmost
// on ties, until no pair has a rank. This is what HF's priority-queue loop computes (a stale queue entry
// can only be skipped, never merged with a wrong rank), so we use a linear scan over a small array for
// short words and HF's heap over a linked list for long ones (a 10,000-space run must not be quadratic).
//
// Hot-path choices: merges live in a flat open-addressing table keyed on (left id << 32 | right id); the
// byte-level symbol of each byte is a table lookup; nothing is allocated per word once the scratch buffers
// have grown. Each symbol carries its length in bytes of the word, for offsets.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace levanter::data::detail {

using Id = std::int32_t;
inline constexpr std::int32_t kNoRank = INT32_MAX;

inline std::uint64_t hash_bytes(const char* p, std::size_t n) {
  std::uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    std::uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
  }
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 32;
  return h;
}

// (left, right) -> (rank, merged id). Later duplicates of a pair overwrite earlier ones, as in HF.
class MergeTable {
 public:
  struct Entry {
    std::uint64_t key;
    std::int32_t rank;
    Id merged;
  };
  void reserve(std::size_t n);
  void insert(Id left, Id right, std::int32_t rank, Id merged);
  // The entry for (left, right), or nullptr.
  const Entry* find(Id left, Id right) const {
    std::uint64_t key = make_key(left, right);
    std::size_t i = slot(key);
    while (true) {
      const Entry& e = entries_[i];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }
  std::size_t size() const { return size_; }

 private:
  static constexpr std::uint64_t kEmpty = ~0ull;
  static std::uint64_t make_key(Id l, Id r) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(l)) << 32) | static_cast<std::uint32_t>(r);
  }
  std::size_t slot(std::uint64_t key) const {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  std::vector<Entry> entries_;
  std::size_t mask_ = 0, size_ = 0;
  int shift_ = 64;
};

// string -> id, open addressing; used for the vocabulary (heterogeneous lookup by string_view).
class StringIdMap {
 public:
  void reserve(std::size_t n);
  // Returns false if the key was already present (the id is then left as it was).
  bool insert(std::string_view key, Id id);
  Id find(std::string_view key) const;  // -1 when absent
  std::size_t size() const { return size_; }

 private:
  struct Slot {
    std::uint64_t hash = 0;
    std::uint32_t offset = 0, length = 0;
    Id id = -1;
  };
  void grow();
  std::vector<Slot> slots_;
  std::string arena_;
  std::size_t size_ = 0;
};

// Reusable buffers for one thread's merge loop.
struct BpeScratch {
  std::vector<Id> ids;
  std::vector<std::uint32_t> lens;
  std::vector<std::int32_t> ranks;
  std::vector<Id> merged;
  struct Symbol {
    Id id;
    std::int32_t prev, next;
    std::uint32_t len;
  };
  std::vector<Symbol> symbols;
  struct QueueEntry {
    std::int32_t rank, pos;
    Id merged;
  };
  std::vector<QueueEntry> queue;
  std::string word;  // byte-level mapped text for lookups
};

struct BpeModel {
  std::vector<std::string> id_to_token;  // "" where an id has no token
  std::vector<bool> has_id;
  StringIdMap vocab;
  MergeTable merges;
  std::string unk_token;  // empty: none
  bool has_unk = false;
  Id unk_id = -1;  // -1 when unk_token is not in the vocabulary (an error if it is ever needed, as in HF)
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::string prefix, suffix;    // continuing_subword_prefix, end_of_word_suffix
  Id byte_fallback_ids[256];     // id of "<0xAB>", or -1
  Id byte_level_ids[256];        // id of the ByteLevel character of each byte, or -1
  bool byte_level_fast = false;  // all 256 byte-level ids exist and prefix/suffix are empty

  // Call once vocab, merges and options are set.
  void finish();

  // Tokenizes one word and appends ids and lengths (bytes of `word`). byte_level: `word` is raw bytes that
  // ByteLevel maps one to one onto characters (the vocabulary holds the mapped characters).
  void tokenize(std::string_view word, bool byte_level, BpeScratch& scratch, std::vector<Id>& ids,
                std::vector<std::uint32_t>& lens) const;

  // The steps of tokenize(), exposed for tests (the two merge loops must agree): the initial symbols into
  // scratch.ids / scratch.lens, then the merges in place.
  void symbolize(std::string_view word, bool byte_level, BpeScratch& s) const;
  void merge_scan(BpeScratch& s) const;
  void merge_heap(BpeScratch& s) const;
  static constexpr std::size_t kScanLimit = 48;  // words with more symbols use the heap
};

// The GPT-2 byte -> character map (bytes_to_unicode): printable Latin-1 bytes map to themselves, the others
// to U+0100 and up, in order. Returned as UTF-8 strings.
const std::string& byte_level_char(unsigned char b);
// Inverse: the byte of a byte-level character, or -1.
int byte_level_byte(char32_t cp);

}  // namespace levanter::data::detail
