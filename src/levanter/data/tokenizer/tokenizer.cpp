// Tokenizer: encode (fast GPT-2 path and general path), decode, batch encoding on threads.
#include "levanter/data/tokenizer/tokenizer.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>

#include "levanter/data/tokenizer/gpt2_split.h"
#include "levanter/data/tokenizer/tokenizer_impl.h"
#include "levanter/data/tokenizer/unicode.h"
#include "levanter/runtime/thread_pool.h"

namespace levanter::data {
namespace detail {

// ---- AddedMatcher ------------------------------------------------------------------------------------------

void AddedMatcher::add(std::string pattern, int token_index) {
  patterns_.emplace_back(std::move(pattern), token_index);
}

void AddedMatcher::finish() {
  by_first_byte_.assign(256, {});
  std::fill(std::begin(first_byte_), std::end(first_byte_), false);
  for (std::size_t i = 0; i < patterns_.size(); ++i) {
    auto b = static_cast<unsigned char>(patterns_[i].first[0]);
    first_byte_[b] = true;
    by_first_byte_[b].push_back(static_cast<int>(i));
  }
  for (auto& v : by_first_byte_)
    std::stable_sort(v.begin(), v.end(),
                     [&](int a, int b) { return patterns_[a].first.size() > patterns_[b].first.size(); });
}

int AddedMatcher::find(std::string_view s, std::size_t from, std::size_t* begin, std::size_t* end) const {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = from; i < s.size(); ++i) {
    if (!first_byte_[p[i]]) continue;
    for (int k : by_first_byte_[p[i]]) {
      const std::string& pat = patterns_[k].first;
      if (s.size() - i >= pat.size() && std::memcmp(s.data() + i, pat.data(), pat.size()) == 0) {
        *begin = i;
        *end = i + pat.size();
        return patterns_[k].second;
      }
    }
  }
  return -1;
}

// ---- WordCache ---------------------------------------------------------------------------------------------

namespace {
constexpr std::size_t kInitialSlots = 1u << 12;
constexpr std::size_t kMaxSlots = 1u << 18;  // 16 MiB, ~128k words per thread; then the cache starts over
}  // namespace

WordCache::WordCache() : hot_(kHotSlots) { slots_.assign(kInitialSlots, Slot{}); }

void WordCache::clear() {
  hot_.assign(kHotSlots, Hot{});
  slots_.assign(kInitialSlots, Slot{});
  size_ = 0;
  keys_.clear();
  ids_.clear();
  lens_.clear();
}

void WordCache::insert(std::string_view word, std::uint64_t hash, const Id* ids, const std::uint32_t* lens,
                       std::size_t n) {
  if (word.size() > kMaxWordBytes || n > 0xFFFF) return;
  if (2 * (size_ + 1) > slots_.size()) {
    if (slots_.size() >= kMaxSlots) {
      clear();
    } else {
      std::vector<Slot> old(slots_.size() * 2);
      old.swap(slots_);
      const std::size_t mask = slots_.size() - 1;
      for (const Slot& s : old) {
        if (s.hash == 0) continue;
        std::size_t i = s.hash & mask;
        while (slots_[i].hash != 0) i = (i + 1) & mask;
        slots_[i] = s;
      }
    }
  }
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = hash & mask;
  while (slots_[i].hash != 0) i = (i + 1) & mask;
  Slot& s = slots_[i];
  s.hash = hash;
  s.key_length = static_cast<std::uint32_t>(word.size());
  s.count = static_cast<std::uint32_t>(n);
  if (word.size() <= kInlineKey) {
    std::memcpy(s.key, word.data(), word.size());
  } else {
    s.key_offset = static_cast<std::uint32_t>(keys_.size());
    keys_.append(word.data(), word.size());
  }
  if (n <= kInlineIds) {
    std::copy(ids, ids + n, s.ids);
  } else {
    s.value_offset = static_cast<std::uint32_t>(ids_.size());
    ids_.insert(ids_.end(), ids, ids + n);
  }
  s.lens_offset = static_cast<std::uint32_t>(lens_.size());
  lens_.insert(lens_.end(), lens, lens + n);
  ++size_;
}

// ---- StatePool ---------------------------------------------------------------------------------------------

std::unique_ptr<EncodeState> StatePool::acquire() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!free_.empty()) {
      auto s = std::move(free_.back());
      free_.pop_back();
      return s;
    }
  }
  return std::make_unique<EncodeState>();
}

void StatePool::release(std::unique_ptr<EncodeState> s) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (free_.size() < 64) free_.push_back(std::move(s));
}

// ---- WorkerStates ------------------------------------------------------------------------------------------

EncodeState& WorkerStates::of(int participant) {
  std::call_once(sized_, [&] { states_.resize(static_cast<std::size_t>(runtime::compute_pool().size()) + 1); });
  std::unique_ptr<EncodeState>& s = states_[static_cast<std::size_t>(participant)];
  if (!s) s = std::make_unique<EncodeState>();
  return *s;
}

namespace {

struct StateLease {
  StatePool& pool;
  std::unique_ptr<EncodeState> state;
  explicit StateLease(StatePool& p) : pool(p), state(p.acquire()) {}
  ~StateLease() { pool.release(std::move(state)); }
};

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && std::memcmp(s.data(), prefix.data(), prefix.size()) == 0;
}

}  // namespace
}  // namespace detail

// ---- encode ------------------------------------------------------------------------------------------------

using namespace detail;

namespace {

// The code point that ends at `end` (valid UTF-8) / starts at `begin`.
char32_t last_char(std::string_view s) {
  std::size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  char32_t cp;
  unicode::decode_utf8(reinterpret_cast<const unsigned char*>(s.data() + i), &cp);
  return cp;
}
char32_t first_char(std::string_view s) {
  char32_t cp;
  unicode::decode_utf8(reinterpret_cast<const unsigned char*>(s.data()), &cp);
  return cp;
}

}  // namespace

// HF AddedVocabulary::find_matches: leftmost-longest matches, then single_word / lstrip / rstrip.
void Tokenizer::Impl::split_added(std::string_view s, const AddedMatcher& m, std::vector<Segment>& out) const {
  out.clear();
  std::size_t start_offset = 0, from = 0, mb, me;
  if (!m.empty()) {
    int k;
    while ((k = m.find(s, from, &mb, &me)) >= 0) {
      from = me;
      const AddedToken& tok = added[k];
      std::size_t start = mb, stop = me;
      if (tok.single_word) {
        bool start_space = start == 0 || !unicode::is_word_char(last_char(s.substr(0, start)));
        bool stop_space = stop == s.size() || !unicode::is_word_char(first_char(s.substr(stop)));
        if (!start_space || !stop_space) continue;
      }
      if (tok.lstrip) {
        std::size_t ns = start;
        while (ns > 0) {
          std::size_t i = ns - 1;
          while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
          char32_t cp;
          unicode::decode_utf8(reinterpret_cast<const unsigned char*>(s.data() + i), &cp);
          if (!unicode::is_white_space(cp)) break;
          ns = i;
        }
        start = std::max(ns, start_offset);
      }
      if (tok.rstrip) {
        while (stop < s.size()) {
          char32_t cp;
          int len = unicode::decode_utf8(reinterpret_cast<const unsigned char*>(s.data() + stop), &cp);
          if (!unicode::is_white_space(cp)) break;
          stop += len;
        }
      }
      if (start > start_offset) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, k});
      start_offset = stop;
    }
  }
  if (start_offset < s.size()) out.push_back({start_offset, s.size(), -1});
}

// Ids (and byte lengths) of one pre-token into st.word_ids / st.word_lens, through the word cache.
void Tokenizer::Impl::model_word(std::string_view word, EncodeState& st, bool want_lens) const {
  st.word_ids.clear();
  st.word_lens.clear();
  if (word.size() <= WordCache::kMaxWordBytes) {
    std::uint64_t h = hash_bytes(word.data(), word.size()) | 1;
    if (st.cache.lookup(word, h, st.word_ids, want_lens ? &st.word_lens : nullptr)) return;
    bpe.tokenize(word, byte_level, st.scratch, st.word_ids, st.word_lens);
    st.cache.insert(word, h, st.word_ids.data(), st.word_lens.data(), st.word_ids.size());
    return;
  }
  bpe.tokenize(word, byte_level, st.scratch, st.word_ids, st.word_lens);
}

void Tokenizer::Impl::encode_fast(std::string_view text, std::size_t base, EncodeState& st, Output out) const {
  const bool want_offsets = out.offsets != nullptr;
  gpt2_split(text.data(), text.size(), [&](std::size_t b, std::size_t e) {
    std::string_view word = text.substr(b, e - b);
    if (!want_offsets && word.size() <= WordCache::kMaxWordBytes &&
        st.cache.lookup(word, hash_bytes(word.data(), word.size()) | 1, *out.ids, nullptr))
      return;  // the common case: a word seen before, its ids appended in place
    model_word(word, st, want_offsets);
    out.ids->insert(out.ids->end(), st.word_ids.begin(), st.word_ids.end());
    if (want_offsets) {
      std::size_t pos = base + b;
      for (std::uint32_t len : st.word_lens) {
        out.offsets->emplace_back(pos, pos + len);
        pos += len;
      }
    }
  });
}

namespace {

Piece make_piece(std::string_view text, std::size_t base) {
  Piece p;
  p.text.assign(text.data(), text.size());
  p.orig_begin.resize(text.size());
  p.orig_end.resize(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    p.orig_begin[i] = static_cast<std::uint32_t>(base + i);
    p.orig_end[i] = static_cast<std::uint32_t>(base + i + 1);
  }
  return p;
}

Piece slice(const Piece& p, std::size_t b, std::size_t e) {
  Piece s;
  s.text = p.text.substr(b, e - b);
  s.orig_begin.assign(p.orig_begin.begin() + b, p.orig_begin.begin() + e);
  s.orig_end.assign(p.orig_end.begin() + b, p.orig_end.begin() + e);
  return s;
}

// Puts `content` before the text; its bytes come from the first character (as HF's NormalizedString::prepend).
void prepend(Piece& p, const std::string& content) {
  if (p.text.empty()) return;
  std::size_t first_len = unicode::utf8_length(static_cast<unsigned char>(p.text[0]));
  std::uint32_t b = p.orig_begin[0], e = p.orig_end[first_len - 1];
  p.text.insert(0, content);
  p.orig_begin.insert(p.orig_begin.begin(), content.size(), b);
  p.orig_end.insert(p.orig_end.begin(), content.size(), e);
}

// Replaces every (non-overlapping, left to right) occurrence of `pattern`; new bytes come from the match.
void replace_all(Piece& p, const std::string& pattern, const std::string& content) {
  std::size_t j = p.text.find(pattern);
  if (j == std::string::npos) return;
  Piece r;
  r.text.reserve(p.text.size() + p.text.size() / 2);
  r.orig_begin.reserve(r.text.capacity());
  r.orig_end.reserve(r.text.capacity());
  std::size_t i = 0;
  for (; j != std::string::npos; j = p.text.find(pattern, i)) {
    r.text.append(p.text, i, j - i);
    r.orig_begin.insert(r.orig_begin.end(), p.orig_begin.begin() + i, p.orig_begin.begin() + j);
    r.orig_end.insert(r.orig_end.end(), p.orig_end.begin() + i, p.orig_end.begin() + j);
    std::uint32_t b = p.orig_begin[j], e = p.orig_end[j + pattern.size() - 1];
    r.text += content;
    r.orig_begin.insert(r.orig_begin.end(), content.size(), b);
    r.orig_end.insert(r.orig_end.end(), content.size(), e);
    i = j + pattern.size();
  }
  r.text.append(p.text, i, std::string::npos);
  r.orig_begin.insert(r.orig_begin.end(), p.orig_begin.begin() + i, p.orig_begin.end());
  r.orig_end.insert(r.orig_end.end(), p.orig_end.begin() + i, p.orig_end.end());
  p = std::move(r);
}

// Pre-tokenizer step `s` on one piece: its transformation in place, then emit(begin, end) for each
// resulting pre-token (byte ranges of the transformed piece, in order, covering it).
template <class Emit>
void apply_step(const PreTokenizerStep& s, Piece& p, Emit&& emit) {
  if (s.kind == PreTokenizerStep::kByteLevel) {
    if (s.add_prefix_space && !starts_with(p.text, " ")) prepend(p, " ");
    if (s.use_regex)
      gpt2_split(p.text.data(), p.text.size(), emit);
    else if (!p.text.empty())
      emit(std::size_t{0}, p.text.size());
    return;
  }
  // Metaspace
  replace_all(p, " ", s.replacement);
  bool has = starts_with(p.text, s.replacement);
  if ((s.scheme == PrependScheme::kAlways && !has) ||
      (s.scheme == PrependScheme::kFirst && !has && p.original_start() == 0))
    prepend(p, s.replacement);
  if (!s.split) {
    if (!p.text.empty()) emit(std::size_t{0}, p.text.size());
    return;
  }
  // A new pre-token at every replacement character (HF's MergedWithNext: "▁▁a▁b" -> "▁", "▁a", "▁b").
  const std::string& r = s.replacement;
  const char* t = p.text.data();
  const std::size_t n = p.text.size();
  std::size_t start = 0;
  for (std::size_t i = 0; i < n;) {
    bool match = t[i] == r[0] && n - i >= r.size() && std::memcmp(t + i, r.data(), r.size()) == 0;
    if (match && i > start) {
      emit(start, i);
      start = i;
    }
    i += match ? r.size() : unicode::utf8_length(static_cast<unsigned char>(t[i]));
  }
  if (start < n) emit(start, n);
}

}  // namespace

void Tokenizer::Impl::normalize(Piece& p) const {
  for (const NormalizerStep& s : normalizer) {
    if (s.kind == NormalizerStep::kPrepend)
      prepend(p, s.content);
    else
      replace_all(p, s.pattern, s.content);
  }
}

// All pre-tokenizer steps but the last make new pieces; the last one only emits ranges, which go straight to
// the model (no allocation per word in the common one-step case).
void Tokenizer::Impl::pre_tokenize_and_model(Piece&& piece, EncodeState& st, Output out) const {
  std::vector<Piece> cur, next;
  cur.push_back(std::move(piece));
  for (std::size_t k = 0; k + 1 < pre_tokenizer.size(); ++k) {
    next.clear();
    for (Piece& p : cur)
      apply_step(pre_tokenizer[k], p, [&](std::size_t b, std::size_t e) { next.push_back(slice(p, b, e)); });
    cur.swap(next);
  }
  const bool want_offsets = out.offsets != nullptr;
  for (Piece& p : cur) {
    auto model = [&](std::size_t b, std::size_t e) {
      model_word(std::string_view(p.text).substr(b, e - b), st, want_offsets);
      out.ids->insert(out.ids->end(), st.word_ids.begin(), st.word_ids.end());
      if (!want_offsets) return;
      std::size_t pos = b;
      for (std::uint32_t len : st.word_lens) {
        if (len == 0) {
          std::size_t at = pos < p.text.size() ? p.orig_begin[pos] : p.orig_end.back();
          out.offsets->emplace_back(at, at);
        } else {
          out.offsets->emplace_back(p.orig_begin[pos], p.orig_end[pos + len - 1]);
        }
        pos += len;
      }
    };
    if (pre_tokenizer.empty()) {
      if (!p.text.empty()) model(0, p.text.size());
    } else {
      apply_step(pre_tokenizer.back(), p, model);
    }
  }
}

void Tokenizer::Impl::encode(std::string_view text, bool add_special_tokens, Output out) const {
  StateLease lease(pool);
  encode(text, add_special_tokens, *lease.state, out);
}

void Tokenizer::Impl::encode(std::string_view text, bool add_special_tokens, EncodeState& st, Output out) const {
  std::size_t bad = unicode::find_invalid_utf8(text);
  if (bad != std::string_view::npos) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "invalid UTF-8 at byte %zu (0x%02X)", bad, static_cast<unsigned char>(text[bad]));
    throw InvalidUtf8Error(buf, bad);
  }
  const bool want_offsets = out.offsets != nullptr;
  auto push_special = [&](const std::vector<TokenId>& ids) {
    for (TokenId id : ids) {
      out.ids->push_back(id);
      if (want_offsets) out.offsets->emplace_back(0, 0);
    }
  };
  std::size_t seq_item = template_items.size();
  if (add_special_tokens && has_template) {
    for (seq_item = 0; seq_item < template_items.size() && !template_items[seq_item].empty(); ++seq_item)
      push_special(template_items[seq_item]);
  }

  std::vector<Segment>& segments = st.segments;
  std::vector<Segment>& sub = st.sub_segments;
  split_added(text, raw_matcher, segments);
  for (const Segment& seg : segments) {
    if (seg.added >= 0) {
      out.ids->push_back(added[seg.added].id);
      if (want_offsets) out.offsets->emplace_back(seg.begin, seg.end);
      continue;
    }
    std::string_view seg_text = text.substr(seg.begin, seg.end - seg.begin);
    if (gpt2_fast) {
      // No normalizer: the normalized added tokens match on the raw text.
      split_added(seg_text, normalized_matcher, sub);
      for (const Segment& s : sub) {
        if (s.added >= 0) {
          out.ids->push_back(added[s.added].id);
          if (want_offsets) out.offsets->emplace_back(seg.begin + s.begin, seg.begin + s.end);
        } else {
          encode_fast(seg_text.substr(s.begin, s.end - s.begin), seg.begin + s.begin, st, out);
        }
      }
      continue;
    }
    Piece piece = make_piece(seg_text, seg.begin);
    normalize(piece);
    split_added(piece.text, normalized_matcher, sub);
    for (const Segment& s : sub) {
      if (s.end <= s.begin) continue;
      if (s.added >= 0) {
        out.ids->push_back(added[s.added].id);
        if (want_offsets) out.offsets->emplace_back(piece.orig_begin[s.begin], piece.orig_end[s.end - 1]);
        continue;
      }
      pre_tokenize_and_model(slice(piece, s.begin, s.end), st, out);
    }
  }

  if (add_special_tokens && has_template) {
    for (std::size_t i = seq_item + 1; i < template_items.size(); ++i) push_special(template_items[i]);
  }
}

// ---- decode ------------------------------------------------------------------------------------------------

namespace {

void replace_in(std::string& s, const std::string& pattern, const std::string& content) {
  if (s.find(pattern) == std::string::npos) return;
  std::string r;
  std::size_t i = 0, j;
  while ((j = s.find(pattern, i)) != std::string::npos) {
    r.append(s, i, j - i);
    r += content;
    i = j + pattern.size();
  }
  r.append(s, i, std::string::npos);
  s.swap(r);
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of a "<0xAB>" token, or -1.
int fallback_byte(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  int hi = hex_digit(t[3]), lo = hex_digit(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// ByteLevel: each character back to its byte; a token with a character outside the map keeps its bytes.
std::string byte_level_decode(const std::vector<std::string>& tokens) {
  std::string out, bytes;
  for (const std::string& t : tokens) {
    bytes.clear();
    bool ok = unicode::find_invalid_utf8(t) == std::string_view::npos;
    const auto* p = reinterpret_cast<const unsigned char*>(t.data());
    for (std::size_t i = 0; ok && i < t.size();) {
      char32_t cp;
      i += unicode::decode_utf8(p + i, &cp);
      int b = byte_level_byte(cp);
      if (b < 0) ok = false;
      bytes += static_cast<char>(b);
    }
    out += ok ? bytes : t;
  }
  return out;
}

}  // namespace

std::string Tokenizer::Impl::decode(const TokenId* ids, std::size_t n, const DecodeOptions& options) const {
  std::vector<std::string> tokens;
  tokens.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    TokenId id = ids[i];
    if (id < 0) continue;
    if (static_cast<std::size_t>(id) < added_by_id.size() && added_by_id[id] >= 0) {
      // HF skips by content: a normalized special token whose surface differs ("▁<s>") is kept.
      const std::string& surface = added_surface[added_by_id[id]];
      Id same = added_by_content.find(surface);
      if (!(options.skip_special_tokens && same >= 0 && added[same].special)) tokens.push_back(surface);
    } else if (static_cast<std::size_t>(id) < bpe.has_id.size() && bpe.has_id[id]) {
      tokens.push_back(bpe.id_to_token[id]);
    }
  }
  if (!has_decoder) {
    std::string out;
    for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  const bool hf = options.replace_invalid_utf8;
  for (const DecoderStep& d : decoders) {
    switch (d.kind) {
      case DecoderStep::kByteLevel: {
        std::string s = byte_level_decode(tokens);
        tokens.assign(1, hf ? unicode::utf8_lossy(s) : s);
        break;
      }
      case DecoderStep::kMetaspace:
        for (std::size_t i = 0; i < tokens.size(); ++i)
          replace_in(tokens[i], d.pattern, i == 0 && d.scheme != PrependScheme::kNever ? "" : " ");
        break;
      case DecoderStep::kReplace:
        for (std::string& t : tokens) replace_in(t, d.pattern, d.content);
        break;
      case DecoderStep::kByteFallback: {
        std::vector<std::string> r;
        std::string pending;
        auto flush = [&] {
          if (pending.empty()) return;
          if (!hf || unicode::find_invalid_utf8(pending) == std::string_view::npos) {
            r.push_back(pending);
          } else {
            for (std::size_t k = 0; k < pending.size(); ++k) r.push_back("\xEF\xBF\xBD");
          }
          pending.clear();
        };
        for (std::string& t : tokens) {
          int b = fallback_byte(t);
          if (b >= 0) {
            pending += static_cast<char>(b);
          } else {
            flush();
            r.push_back(std::move(t));
          }
        }
        flush();
        tokens.swap(r);
        break;
      }
      case DecoderStep::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, all);
        break;
      }
      case DecoderStep::kStrip:
        for (std::string& t : tokens) {
          const std::string& c = d.content;
          std::size_t b = 0, e = t.size();
          for (int k = 0; k < d.start && e - b >= c.size() && t.compare(b, c.size(), c) == 0; ++k) b += c.size();
          for (int k = 0; k < d.stop && e - b >= c.size() && t.compare(e - c.size(), c.size(), c) == 0; ++k)
            e -= c.size();
          t = t.substr(b, e - b);
        }
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

// ---- Tokenizer ---------------------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json(std::string_view json, const std::string& source) {
  return Tokenizer(load_tokenizer_impl(json, source));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  {
    // A FIFO or device would block or stream without end: refuse anything but a regular file, before opening.
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      throw TokenizerError(path + ": not a regular file (give a tokenizer.json)");
    }
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TokenizerError(path + ": cannot open the tokenizer file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw TokenizerError(path + ": read error");
  return from_json(ss.str(), path);
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<TokenId> ids;
  impl_->encode(text, add_special_tokens, {&ids, nullptr});
  return ids;
}

void Tokenizer::encode_into(std::string_view text, std::vector<TokenId>& out, bool add_special_tokens) const {
  impl_->encode(text, add_special_tokens, {&out, nullptr});
}

Encoding Tokenizer::encode_with_offsets(std::string_view text, bool add_special_tokens) const {
  Encoding e;
  impl_->encode(text, add_special_tokens, {&e.ids, &e.offsets});
  return e;
}

namespace {

// Documents are claimed 8 at a time by the caller and the compute pool's workers; each result goes to its
// own slot, so the output does not depend on who encoded what.
template <class Texts>
std::vector<std::vector<TokenId>> encode_many(const Tokenizer::Impl& impl, const Texts& texts, int num_threads,
                                              bool add) {
  const std::size_t n = texts.size();
  std::vector<std::vector<TokenId>> result(n);
  std::vector<std::exception_ptr> errors(n);
  StateLease lease(impl.states());
  runtime::ThreadPool::ForOptions options;
  options.chunk = 8;
  options.max_participants = static_cast<std::size_t>(num_threads > 0 ? num_threads : runtime::hardware_threads());
  runtime::compute_pool().parallel_for(n, options, [&](std::size_t b, std::size_t e, int participant) {
    EncodeState& st = participant == 0 ? *lease.state : impl.workers.of(participant);
    for (std::size_t i = b; i < e; ++i) {
      try {
        result[i].reserve(std::string_view(texts[i]).size() / 4 + 16);  // ~4 bytes per token in English
        impl.encode(texts[i], add, st, {&result[i], nullptr});
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  });
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return result;
}

}  // namespace

std::vector<std::vector<TokenId>> Tokenizer::encode_batch(const std::vector<std::string>& texts, int num_threads,
                                                          bool add_special_tokens) const {
  return encode_many(*impl_, texts, num_threads, add_special_tokens);
}

std::vector<std::vector<TokenId>> Tokenizer::encode_batch(const std::vector<std::string_view>& texts, int num_threads,
                                                          bool add_special_tokens) const {
  return encode_many(*impl_, texts, num_threads, add_special_tokens);
}

std::string Tokenizer::decode(const std::vector<TokenId>& ids, const DecodeOptions& options) const {
  return impl_->decode(ids.data(), ids.size(), options);
}

std::string Tokenizer::decode(const TokenId* ids, std::size_t n, const DecodeOptions& options) const {
  return impl_->decode(ids, n, options);
}

std::size_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<TokenId> Tokenizer::token_to_id(std::string_view token) const {
  Id a = impl_->added_by_content.find(token);
  if (a >= 0) return impl_->added[a].id;
  Id id = impl_->bpe.vocab.find(token);
  if (id >= 0) return id;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::id_to_token(TokenId id) const {
  if (id < 0) return std::nullopt;
  auto u = static_cast<std::size_t>(id);
  if (u < impl_->added_by_id.size() && impl_->added_by_id[u] >= 0) return impl_->added_surface[impl_->added_by_id[u]];
  if (u < impl_->bpe.has_id.size() && impl_->bpe.has_id[u]) return impl_->bpe.id_to_token[u];
  return std::nullopt;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

bool Tokenizer::is_special(TokenId id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= impl_->added_by_id.size()) return false;
  int a = impl_->added_by_id[id];
  return a >= 0 && impl_->added[a].special;
}

std::optional<TokenId> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<TokenId> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<TokenId> Tokenizer::unk_id() const {
  if (impl_->bpe.unk_id >= 0) return impl_->bpe.unk_id;
  return std::nullopt;
}
const std::string& Tokenizer::fingerprint() const { return impl_->fingerprint; }
std::string Tokenizer::describe() const { return impl_->description; }

}  // namespace levanter::data
