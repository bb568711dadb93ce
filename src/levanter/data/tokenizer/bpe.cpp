#include "levanter/data/tokenizer/bpe.h"

#include <algorithm>
#include <stdexcept>

#include "levanter/data/tokenizer/unicode.h"

namespace levanter::data::detail {
namespace {

std::size_t pow2_at_least(std::size_t n) {
  std::size_t c = 16;
  while (c < n) c <<= 1;
  return c;
}

struct ByteLevelMap {
  std::string chars[256];
  std::int16_t bytes[512];
  ByteLevelMap() {
    std::fill(std::begin(bytes), std::end(bytes), -1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      unicode::append_utf8(chars[b], cp);
      bytes[cp] = static_cast<std::int16_t>(b);
    }
  }
};

const ByteLevelMap& byte_level_map() {
  static const ByteLevelMap m;
  return m;
}

bool heap_after(const BpeScratch::QueueEntry& a, const BpeScratch::QueueEntry& b) {
  return a.rank > b.rank || (a.rank == b.rank && a.pos > b.pos);  // min-heap on (rank, pos)
}

}  // namespace

const std::string& byte_level_char(unsigned char b) { return byte_level_map().chars[b]; }

int byte_level_byte(char32_t cp) { return cp < 512 ? byte_level_map().bytes[cp] : -1; }

// ---- MergeTable --------------------------------------------------------------------------------------------

void MergeTable::reserve(std::size_t n) {
  std::size_t cap = pow2_at_least(2 * n + 1);
  std::vector<Entry> old;
  old.swap(entries_);
  entries_.assign(cap, Entry{kEmpty, 0, 0});
  mask_ = cap - 1;
  shift_ = 64;
  for (std::size_t c = cap; c > 1; c >>= 1) --shift_;
  size_ = 0;
  for (const Entry& e : old) {
    if (e.key != kEmpty) insert(static_cast<Id>(e.key >> 32), static_cast<Id>(e.key & 0xFFFFFFFFu), e.rank, e.merged);
  }
}

void MergeTable::insert(Id left, Id right, std::int32_t rank, Id merged) {
  if (entries_.empty() || 2 * (size_ + 1) > entries_.size()) reserve(std::max<std::size_t>(size_ + 1, 2 * size_));
  std::uint64_t key = make_key(left, right);
  std::size_t i = slot(key);
  while (entries_[i].key != kEmpty && entries_[i].key != key) i = (i + 1) & mask_;
  if (entries_[i].key == kEmpty) ++size_;
  entries_[i] = Entry{key, rank, merged};
}

// ---- StringIdMap -------------------------------------------------------------------------------------------

void StringIdMap::reserve(std::size_t n) {
  if (slots_.size() >= 2 * n) return;
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.assign(pow2_at_least(2 * n + 1), Slot{});
  std::size_t mask = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.hash == 0) continue;
    std::size_t i = s.hash & mask;
    while (slots_[i].hash != 0) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

void StringIdMap::grow() { reserve(std::max<std::size_t>(16, slots_.size())); }

bool StringIdMap::insert(std::string_view key, Id id) {
  if (2 * (size_ + 1) > slots_.size()) grow();
  std::uint64_t h = hash_bytes(key.data(), key.size()) | 1;
  std::size_t mask = slots_.size() - 1, i = h & mask;
  while (slots_[i].hash != 0) {
    const Slot& s = slots_[i];
    if (s.hash == h && std::string_view(arena_.data() + s.offset, s.length) == key) return false;
    i = (i + 1) & mask;
  }
  Slot& s = slots_[i];
  s.hash = h;
  s.offset = static_cast<std::uint32_t>(arena_.size());
  s.length = static_cast<std::uint32_t>(key.size());
  s.id = id;
  arena_.append(key.data(), key.size());
  ++size_;
  return true;
}

Id StringIdMap::find(std::string_view key) const {
  if (slots_.empty()) return -1;
  std::uint64_t h = hash_bytes(key.data(), key.size()) | 1;
  std::size_t mask = slots_.size() - 1, i = h & mask;
  while (slots_[i].hash != 0) {
    const Slot& s = slots_[i];
    if (s.hash == h && std::string_view(arena_.data() + s.offset, s.length) == key) return s.id;
    i = (i + 1) & mask;
  }
  return -1;
}

// ---- BpeModel ----------------------------------------------------------------------------------------------

void BpeModel::finish() {
  static const char* hex = "0123456789ABCDEF";
  byte_level_fast = prefix.empty() && suffix.empty();
  for (int b = 0; b < 256; ++b) {
    std::string name = "<0x";
    name += hex[b >> 4];
    name += hex[b & 15];
    name += '>';
    byte_fallback_ids[b] = vocab.find(name);
    byte_level_ids[b] = vocab.find(byte_level_char(static_cast<unsigned char>(b)));
    if (byte_level_ids[b] < 0) byte_level_fast = false;
  }
  unk_id = has_unk ? vocab.find(unk_token) : -1;
}

// HF's BPE::merge_word before the merge loop: one symbol per character, with prefix/suffix, byte fallback
// and (fused) unk. A pending unk is not flushed before byte-fallback symbols, exactly as in HF.
void BpeModel::symbolize(std::string_view word, bool byte_level, BpeScratch& s) const {
  s.ids.clear();
  s.lens.clear();
  const auto* p = reinterpret_cast<const unsigned char*>(word.data());
  const std::size_t n = word.size();
  if (byte_level && byte_level_fast) {
    for (std::size_t i = 0; i < n; ++i) {
      s.ids.push_back(byte_level_ids[p[i]]);
      s.lens.push_back(1);
    }
    return;
  }
  bool pending = false;
  std::uint32_t pending_len = 0;
  std::string key;
  for (std::size_t i = 0; i < n;) {
    std::size_t unit_len = byte_level ? 1 : static_cast<std::size_t>(unicode::utf8_length(p[i]));
    std::string_view unit = byte_level ? std::string_view(byte_level_char(p[i])) : word.substr(i, unit_len);
    bool first = i == 0, last = i + unit_len >= n;
    std::string_view lookup = unit;
    if ((!first && !prefix.empty()) || (last && !suffix.empty())) {
      key.assign(first ? "" : prefix);
      key.append(unit.data(), unit.size());
      if (last) key += suffix;
      lookup = key;
    }
    i += unit_len;
    const auto byte_len = static_cast<std::uint32_t>(unit_len);
    Id id = vocab.find(lookup);
    if (id >= 0) {
      if (pending) {
        s.ids.push_back(unk_id);
        s.lens.push_back(pending_len);
        pending = false;
      }
      s.ids.push_back(id);
      s.lens.push_back(byte_len);
      continue;
    }
    if (byte_fallback) {
      bool all = true;
      for (unsigned char b : lookup) all = all && byte_fallback_ids[b] >= 0;
      if (all) {
        for (std::size_t j = 0; j < lookup.size(); ++j) {
          s.ids.push_back(byte_fallback_ids[static_cast<unsigned char>(lookup[j])]);
          s.lens.push_back(j < byte_len ? 1 : 0);
        }
        continue;
      }
    }
    if (has_unk) {
      if (unk_id < 0) throw std::runtime_error("BPE: unk_token '" + unk_token + "' is not in the vocabulary");
      if (pending) {
        if (fuse_unk) {
          pending_len += byte_len;
        } else {
          s.ids.push_back(unk_id);
          s.lens.push_back(pending_len);
          pending_len = byte_len;
        }
      } else {
        pending = true;
        pending_len = byte_len;
      }
    }
    // No unk token: HF drops the character.
  }
  if (pending) {
    s.ids.push_back(unk_id);
    s.lens.push_back(pending_len);
  }
}

void BpeModel::merge_scan(BpeScratch& s) const {
  std::size_t n = s.ids.size();
  if (n < 2) return;
  Id* ids = s.ids.data();
  std::uint32_t* lens = s.lens.data();
  s.ranks.resize(n - 1);
  s.merged.resize(n - 1);
  std::int32_t* ranks = s.ranks.data();
  Id* merged = s.merged.data();
  auto pair_at = [&](std::size_t i) {
    const MergeTable::Entry* e = merges.find(ids[i], ids[i + 1]);
    ranks[i] = e ? e->rank : kNoRank;
    merged[i] = e ? e->merged : -1;
  };
  for (std::size_t i = 0; i + 1 < n; ++i) pair_at(i);
  while (n > 1) {
    std::int32_t best = kNoRank;
    std::size_t bi = 0;
    for (std::size_t i = 0; i + 1 < n; ++i) {
      if (ranks[i] < best) {
        best = ranks[i];
        bi = i;
      }
    }
    if (best == kNoRank) break;
    ids[bi] = merged[bi];
    lens[bi] += lens[bi + 1];
    std::size_t tail = n - bi - 2;  // symbols after bi + 1; also pairs after pair bi
    std::memmove(ids + bi + 1, ids + bi + 2, tail * sizeof(Id));
    std::memmove(lens + bi + 1, lens + bi + 2, tail * sizeof(std::uint32_t));
    std::memmove(ranks + bi, ranks + bi + 1, tail * sizeof(std::int32_t));
    std::memmove(merged + bi, merged + bi + 1, tail * sizeof(Id));
    --n;
    if (bi + 1 < n) pair_at(bi);
    if (bi > 0) pair_at(bi - 1);
  }
  s.ids.resize(n);
  s.lens.resize(n);
}

void BpeModel::merge_heap(BpeScratch& s) const {
  const std::size_t n = s.ids.size();
  if (n < 2) return;
  auto& sym = s.symbols;
  sym.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    sym[i] = BpeScratch::Symbol{s.ids[i], static_cast<std::int32_t>(i) - 1,
                                i + 1 < n ? static_cast<std::int32_t>(i + 1) : -1, s.lens[i]};
  }
  auto& q = s.queue;
  q.clear();
  for (std::size_t i = 0; i + 1 < n; ++i) {
    if (const MergeTable::Entry* e = merges.find(sym[i].id, sym[i + 1].id))
      q.push_back({e->rank, static_cast<std::int32_t>(i), e->merged});
  }
  std::make_heap(q.begin(), q.end(), heap_after);
  while (!q.empty()) {
    std::pop_heap(q.begin(), q.end(), heap_after);
    BpeScratch::QueueEntry top = q.back();
    q.pop_back();
    BpeScratch::Symbol& left = sym[top.pos];
    if (left.len == 0 || left.next == -1) continue;
    const std::int32_t right_pos = left.next;
    const BpeScratch::Symbol right = sym[right_pos];
    const MergeTable::Entry* cur = merges.find(left.id, right.id);
    if (!cur || cur->merged != top.merged) continue;  // a stale entry
    left.id = top.merged;
    left.len += right.len;
    left.next = right.next;
    sym[right_pos].len = 0;
    if (right.next != -1) sym[right.next].prev = top.pos;
    if (left.prev != -1) {
      if (const MergeTable::Entry* e = merges.find(sym[left.prev].id, left.id)) {
        q.push_back({e->rank, left.prev, e->merged});
        std::push_heap(q.begin(), q.end(), heap_after);
      }
    }
    if (left.next != -1) {
      if (const MergeTable::Entry* e = merges.find(left.id, sym[left.next].id)) {
        q.push_back({e->rank, top.pos, e->merged});
        std::push_heap(q.begin(), q.end(), heap_after);
      }
    }
  }
  s.ids.clear();
  s.lens.clear();
  for (std::int32_t i = 0; i != -1; i = sym[i].next) {
    s.ids.push_back(sym[i].id);
    s.lens.push_back(sym[i].len);
  }
}

void BpeModel::tokenize(std::string_view word, bool byte_level, BpeScratch& s, std::vector<Id>& ids,
                        std::vector<std::uint32_t>& lens) const {
  if (word.empty()) return;
  if (ignore_merges) {
    std::string_view whole = word;
    if (byte_level) {
      s.word.clear();
      for (unsigned char b : word) s.word += byte_level_char(b);
      whole = s.word;
    }
    Id id = vocab.find(whole);
    if (id >= 0) {
      ids.push_back(id);
      lens.push_back(static_cast<std::uint32_t>(word.size()));
      return;
    }
  }
  symbolize(word, byte_level, s);
  if (s.ids.size() <= kScanLimit)
    merge_scan(s);
  else
    merge_heap(s);
  ids.insert(ids.end(), s.ids.begin(), s.ids.end());
  lens.insert(lens.end(), s.lens.begin(), s.lens.end());
}

}  // namespace levanter::data::detail
