// Reading tokenizer.json into Tokenizer::Impl, refusing what is outside the supported subset, and the
// canonical form behind the fingerprint.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>

#include "levanter/data/tokenizer/sha256.h"
#include "levanter/data/tokenizer/tokenizer_impl.h"
#include "levanter/data/tokenizer/unicode.h"

namespace levanter::data {
namespace {

using nlohmann::json;
using namespace detail;

class Loader {
 public:
  Loader(const std::string& source, Tokenizer::Impl& impl) : source_(source), impl_(impl) {}

  [[noreturn]] void fail(const std::string& what) const { throw TokenizerError(source_ + ": " + what); }

  // A token id from the file: an integer in [0, kMaxTokenId). Read as the JSON number it is (4e9 is not "negative")
  // and bounded before anything is sized by it (an id near 2^31 would allocate gigabytes of empty vocabulary).
  TokenId token_id(const json& v, const std::string& where) const {
    if (!v.is_number_integer()) fail(where + ": a token id must be an integer, got " + v.dump());
    const bool negative = v.is_number_integer() && !v.is_number_unsigned() && v.get<std::int64_t>() < 0;
    if (negative || v.get<std::uint64_t>() >= static_cast<std::uint64_t>(kMaxTokenId)) {
      fail(where + ": token id " + v.dump() + " is out of range: ids must lie in [0, " + std::to_string(kMaxTokenId) +
           ") (the largest vocabularies in use have about 256K tokens)");
    }
    return static_cast<TokenId>(v.get<std::int64_t>());
  }

  void unsupported(const std::string& component, const std::string& type, const std::string& supported) const {
    fail("unsupported " + component + " type '" + type + "' (levanter supports: " + supported + ")");
  }

  static bool is_null(const json& root, const char* key) { return !root.contains(key) || root.at(key).is_null(); }

  std::string get_string(const json& obj, const char* key, const std::string& where, const std::string& dflt = "",
                         bool required = false) const {
    if (!obj.contains(key) || obj.at(key).is_null()) {
      if (required) fail(where + ": missing \"" + key + "\"");
      return dflt;
    }
    if (!obj.at(key).is_string()) fail(where + ": \"" + key + "\" must be a string");
    return obj.at(key).get<std::string>();
  }

  bool get_bool(const json& obj, const char* key, const std::string& where, bool dflt) const {
    if (!obj.contains(key) || obj.at(key).is_null()) return dflt;
    if (!obj.at(key).is_boolean()) fail(where + ": \"" + key + "\" must be true or false");
    return obj.at(key).get<bool>();
  }

  std::string type_of(const json& obj, const std::string& component) const {
    if (!obj.is_object()) fail(component + " must be an object or null");
    return get_string(obj, "type", component, "", true);
  }

  // Replace patterns are {"String": "..."} (supported) or {"Regex": "..."} (not).
  std::string string_pattern(const json& obj, const std::string& where) const {
    if (!obj.contains("pattern") || !obj.at("pattern").is_object()) fail(where + ": missing \"pattern\"");
    const json& p = obj.at("pattern");
    if (p.contains("String") && p.at("String").is_string()) return p.at("String").get<std::string>();
    if (p.contains("Regex")) fail(where + ": Regex patterns are not supported (only {\"String\": ...})");
    fail(where + ": bad \"pattern\"");
  }

  PrependScheme prepend_scheme(const json& obj, const std::string& where) const {
    if (obj.contains("prepend_scheme") && !obj.at("prepend_scheme").is_null()) {
      std::string s = get_string(obj, "prepend_scheme", where);
      if (s == "always") return PrependScheme::kAlways;
      if (s == "first") return PrependScheme::kFirst;
      if (s == "never") return PrependScheme::kNever;
      fail(where + ": unknown prepend_scheme '" + s + "'");
    }
    // Older files: add_prefix_space (default true).
    return get_bool(obj, "add_prefix_space", where, true) ? PrependScheme::kAlways : PrependScheme::kNever;
  }

  std::string one_char(const json& obj, const char* key, const std::string& where, const std::string& dflt) const {
    std::string s = get_string(obj, key, where, dflt);
    if (s.empty() || unicode::find_invalid_utf8(s) != std::string_view::npos ||
        static_cast<std::size_t>(unicode::utf8_length(static_cast<unsigned char>(s[0]))) != s.size())
      fail(where + ": \"" + key + "\" must be one character");
    return s;
  }

  void load_model(const json& root) {
    if (!root.contains("model") || !root.at("model").is_object()) fail("missing \"model\"");
    const json& m = root.at("model");
    std::string type = m.contains("type") ? get_string(m, "type", "model") : (m.contains("merges") ? "BPE" : "");
    if (type != "BPE") unsupported("model", type.empty() ? "(none)" : type, "BPE");
    if (m.contains("dropout") && !m.at("dropout").is_null() &&
        !(m.at("dropout").is_number() && m.at("dropout").get<double>() == 0.0))
      fail("BPE dropout is not supported (it makes tokenization random); set \"dropout\": null");
    BpeModel& b = impl_.bpe;
    b.has_unk = m.contains("unk_token") && !m.at("unk_token").is_null();
    b.unk_token = get_string(m, "unk_token", "model");
    b.fuse_unk = get_bool(m, "fuse_unk", "model", false);
    b.byte_fallback = get_bool(m, "byte_fallback", "model", false);
    b.ignore_merges = get_bool(m, "ignore_merges", "model", false);
    b.prefix = get_string(m, "continuing_subword_prefix", "model");
    b.suffix = get_string(m, "end_of_word_suffix", "model");

    if (!m.contains("vocab") || !m.at("vocab").is_object()) fail("model: missing \"vocab\" object");
    const json& vocab = m.at("vocab");
    b.vocab.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      auto id = static_cast<Id>(token_id(it.value(), "model.vocab: '" + it.key() + "'"));
      b.vocab.insert(it.key(), id);
      if (static_cast<std::size_t>(id) >= b.id_to_token.size()) {
        b.id_to_token.resize(id + 1);
        b.has_id.resize(id + 1, false);
      }
      b.id_to_token[id] = it.key();
      b.has_id[id] = true;
    }

    if (!m.contains("merges") || !m.at("merges").is_array()) fail("model: missing \"merges\" array");
    const json& merges = m.at("merges");
    b.merges.reserve(merges.size());
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const json& mg = merges[rank];
      std::string left, right;
      if (mg.is_string()) {  // "a b" (older files)
        const std::string& s = mg.get_ref<const std::string&>();
        std::size_t sp = s.find(' ');
        if (sp == std::string::npos)
          fail("model.merges[" + std::to_string(rank) + "]: \"" + s + "\" is not \"left right\"");
        left = s.substr(0, sp);
        right = s.substr(sp + 1);
      } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {  // ["a", "b"]
        left = mg[0].get<std::string>();
        right = mg[1].get<std::string>();
      } else {
        fail("model.merges[" + std::to_string(rank) + "]: a merge is \"left right\" or [\"left\", \"right\"]");
      }
      Id l = b.vocab.find(left), r = b.vocab.find(right), merged = b.vocab.find(left + right);
      if (l < 0 || r < 0 || merged < 0) {
        std::string missing = l < 0 ? left : r < 0 ? right : left + right;
        fail("model.merges[" + std::to_string(rank) + "]: token '" + missing + "' is not in the vocabulary");
      }
      b.merges.insert(l, r, static_cast<std::int32_t>(rank), merged);
      canon_merges_.push_back({left, right});
    }
    b.finish();
  }

  void load_normalizer(const json& n) {
    std::string type = type_of(n, "normalizer");
    if (type == "Sequence") {
      if (!n.contains("normalizers") || !n.at("normalizers").is_array())
        fail("normalizer Sequence: missing \"normalizers\"");
      for (const json& sub : n.at("normalizers")) load_normalizer(sub);
    } else if (type == "Prepend") {
      impl_.normalizer.push_back(
          {NormalizerStep::kPrepend, "", get_string(n, "prepend", "normalizer Prepend", "", true)});
    } else if (type == "Replace") {
      std::string pattern = string_pattern(n, "normalizer Replace");
      if (pattern.empty()) fail("normalizer Replace: empty pattern");
      impl_.normalizer.push_back(
          {NormalizerStep::kReplace, pattern, get_string(n, "content", "normalizer Replace", "", true)});
    } else {
      unsupported("normalizer", type, "Sequence, Prepend, Replace with a String pattern");
    }
  }

  void load_pre_tokenizer(const json& p) {
    std::string type = type_of(p, "pre_tokenizer");
    if (!impl_.pre_tokenizer.empty() && impl_.pre_tokenizer.back().kind == PreTokenizerStep::kByteLevel)
      fail("pre_tokenizer: ByteLevel must be the last pre-tokenizer of a Sequence");
    if (type == "Sequence") {
      if (!p.contains("pretokenizers") || !p.at("pretokenizers").is_array())
        fail("pre_tokenizer Sequence: missing \"pretokenizers\"");
      for (const json& sub : p.at("pretokenizers")) load_pre_tokenizer(sub);
    } else if (type == "ByteLevel") {
      PreTokenizerStep s{PreTokenizerStep::kByteLevel};
      s.add_prefix_space = get_bool(p, "add_prefix_space", "pre_tokenizer ByteLevel", true);
      s.use_regex = get_bool(p, "use_regex", "pre_tokenizer ByteLevel", true);
      impl_.pre_tokenizer.push_back(s);
    } else if (type == "Metaspace") {
      PreTokenizerStep s{PreTokenizerStep::kMetaspace};
      s.replacement = one_char(p, "replacement", "pre_tokenizer Metaspace", "\xE2\x96\x81");
      s.scheme = prepend_scheme(p, "pre_tokenizer Metaspace");
      s.split = get_bool(p, "split", "pre_tokenizer Metaspace", true);
      impl_.pre_tokenizer.push_back(s);
    } else {
      unsupported("pre_tokenizer", type, "ByteLevel, Metaspace, Sequence");
    }
  }

  // Returns the ids of a template's special token by name.
  std::vector<TokenId> template_special(const json& specials, const std::string& name) const {
    if (!specials.is_object() || !specials.contains(name))
      fail("post_processor: special token '" + name + "' is not defined");
    const json& s = specials.at(name);
    if (!s.contains("ids") || !s.at("ids").is_array()) fail("post_processor: special token '" + name + "' has no ids");
    std::vector<TokenId> ids;
    for (const json& id : s.at("ids")) {
      ids.push_back(token_id(id, "post_processor: special token '" + name + "'"));
    }
    return ids;
  }

  void set_template(std::vector<std::vector<TokenId>> items) {
    if (impl_.has_template) fail("post_processor: more than one template processor");
    impl_.has_template = true;
    impl_.template_items = std::move(items);
  }

  void load_post_processor(const json& p) {
    std::string type = type_of(p, "post_processor");
    if (type == "Sequence") {
      if (!p.contains("processors") || !p.at("processors").is_array())
        fail("post_processor Sequence: missing \"processors\"");
      for (const json& sub : p.at("processors")) load_post_processor(sub);
    } else if (type == "ByteLevel") {
      // Changes offsets only (trim_offsets); ids are unchanged.
    } else if (type == "TemplateProcessing") {
      if (!p.contains("single") || !p.at("single").is_array())
        fail("post_processor TemplateProcessing: missing \"single\"");
      std::vector<std::vector<TokenId>> items;
      bool seen_sequence = false;
      for (const json& item : p.at("single")) {
        if (item.contains("Sequence")) {
          if (get_string(item.at("Sequence"), "id", "TemplateProcessing Sequence", "A") != "A")
            fail("post_processor TemplateProcessing: the single template must use sequence A");
          if (seen_sequence) fail("post_processor TemplateProcessing: sequence A twice");
          seen_sequence = true;
          items.emplace_back();
        } else if (item.contains("SpecialToken")) {
          auto ids =
              template_special(p.contains("special_tokens") ? p.at("special_tokens") : json(),
                               get_string(item.at("SpecialToken"), "id", "TemplateProcessing SpecialToken", "", true));
          if (ids.empty()) fail("post_processor TemplateProcessing: a special token with no ids");
          items.push_back(ids);
        } else {
          fail("post_processor TemplateProcessing: unknown template item " + item.dump());
        }
      }
      set_template(std::move(items));
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      auto token = [&](const char* key) {
        if (!p.contains(key) || !p.at(key).is_array() || p.at(key).size() != 2)
          fail("post_processor " + type + ": \"" + key + "\" must be [token, id]");
        return std::vector<TokenId>{token_id(p.at(key)[1], "post_processor " + type + ": \"" + key + "\"")};
      };
      set_template({token("cls"), {}, token("sep")});
    } else {
      unsupported("post_processor", type, "ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing, Sequence");
    }
  }

  void load_decoder(const json& d) {
    std::string type = type_of(d, "decoder");
    DecoderStep s{DecoderStep::kFuse};
    if (type == "Sequence") {
      if (!d.contains("decoders") || !d.at("decoders").is_array()) fail("decoder Sequence: missing \"decoders\"");
      for (const json& sub : d.at("decoders")) load_decoder(sub);
      return;
    } else if (type == "ByteLevel") {
      s.kind = DecoderStep::kByteLevel;
    } else if (type == "Metaspace") {
      s.kind = DecoderStep::kMetaspace;
      s.pattern = one_char(d, "replacement", "decoder Metaspace", "\xE2\x96\x81");
      s.scheme = prepend_scheme(d, "decoder Metaspace");
    } else if (type == "Replace") {
      s.kind = DecoderStep::kReplace;
      s.pattern = string_pattern(d, "decoder Replace");
      if (s.pattern.empty()) fail("decoder Replace: empty pattern");
      s.content = get_string(d, "content", "decoder Replace", "", true);
    } else if (type == "ByteFallback") {
      s.kind = DecoderStep::kByteFallback;
    } else if (type == "Fuse") {
      s.kind = DecoderStep::kFuse;
    } else if (type == "Strip") {
      s.kind = DecoderStep::kStrip;
      s.content = one_char(d, "content", "decoder Strip", " ");
      auto count = [&](const char* key) {
        if (!d.contains(key)) return 0;
        if (!d.at(key).is_number_unsigned()) fail(std::string("decoder Strip: \"") + key + "\" must be a count");
        return d.at(key).get<int>();
      };
      s.start = count("start");
      s.stop = count("stop");
    } else {
      unsupported("decoder", type,
                  "ByteLevel, Metaspace, Replace with a String pattern, ByteFallback, Fuse, Strip, Sequence");
    }
    impl_.decoders.push_back(s);
  }

  void load_added_tokens(const json& root) {
    if (is_null(root, "added_tokens")) return;
    if (!root.at("added_tokens").is_array()) fail("\"added_tokens\" must be an array");
    for (const json& t : root.at("added_tokens")) {
      if (!t.is_object() || !t.contains("id") || !t.at("id").is_number_integer())
        fail("added_tokens: each needs an integer \"id\"");
      AddedToken a;
      a.content = get_string(t, "content", "added_tokens", "", true);
      // HF gives a token that the model already knows the model's id.
      Id model_id = impl_.bpe.vocab.find(a.content);
      a.id = model_id >= 0 ? model_id : token_id(t.at("id"), "added_tokens: '" + a.content + "'");
      a.special = get_bool(t, "special", "added_tokens", false);
      a.normalized = get_bool(t, "normalized", "added_tokens", !a.special);
      a.lstrip = get_bool(t, "lstrip", "added_tokens", false);
      a.rstrip = get_bool(t, "rstrip", "added_tokens", false);
      a.single_word = get_bool(t, "single_word", "added_tokens", false);
      if (impl_.added_by_content.find(a.content) >= 0) continue;  // the same content twice: HF keeps one
      impl_.added_by_content.insert(a.content, static_cast<Id>(impl_.added.size()));
      impl_.added.push_back(a);
    }
  }

  void build_added_matchers() {
    std::size_t max_id = 0;
    for (const AddedToken& a : impl_.added) max_id = std::max<std::size_t>(max_id, a.id);
    impl_.added_by_id.assign(impl_.added.empty() ? 0 : max_id + 1, -1);
    for (std::size_t i = 0; i < impl_.added.size(); ++i) {
      const AddedToken& a = impl_.added[i];
      impl_.added_by_id[a.id] = static_cast<int>(i);
      impl_.added_surface.push_back(a.content);
      if (a.content.empty()) continue;
      if (!a.normalized) {
        impl_.raw_matcher.add(a.content, static_cast<int>(i));
      } else {
        Piece p;
        p.text = a.content;
        p.orig_begin.assign(p.text.size(), 0);
        p.orig_end.assign(p.text.size(), 0);
        impl_.normalize(p);
        impl_.added_surface.back() = p.text;
        if (!p.text.empty()) impl_.normalized_matcher.add(p.text, static_cast<int>(i));
      }
    }
    impl_.raw_matcher.finish();
    impl_.normalized_matcher.finish();
  }

  void find_roles() {
    auto special_named = [&](std::initializer_list<const char*> names) -> std::optional<TokenId> {
      for (const char* n : names) {
        Id i = impl_.added_by_content.find(n);
        if (i >= 0) return impl_.added[i].id;
      }
      return std::nullopt;
    };
    if (impl_.has_template) {
      const auto& items = impl_.template_items;
      auto seq = std::find_if(items.begin(), items.end(), [](const auto& v) { return v.empty(); });
      if (seq != items.begin() && seq != items.end()) impl_.bos = items.front().front();
      if (seq != items.end() && seq + 1 != items.end()) impl_.eos = items.back().back();
    }
    if (!impl_.bos) impl_.bos = special_named({"<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"});
    if (!impl_.eos) impl_.eos = special_named({"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"});
  }

  json canonical() const {
    const BpeModel& b = impl_.bpe;
    json vocab = json::array();
    for (std::size_t id = 0; id < b.id_to_token.size(); ++id)
      if (b.has_id[id]) vocab.push_back(json::array({b.id_to_token[id], id}));
    json merges = json::array();
    for (const auto& [l, r] : canon_merges_) merges.push_back(json::array({l, r}));
    json model = {{"type", "BPE"},
                  {"vocab", vocab},
                  {"merges", merges},
                  {"unk_token", b.has_unk ? json(b.unk_token) : json()},
                  {"fuse_unk", b.fuse_unk},
                  {"byte_fallback", b.byte_fallback},
                  {"ignore_merges", b.ignore_merges},
                  {"continuing_subword_prefix", b.prefix},
                  {"end_of_word_suffix", b.suffix}};
    json added = json::array();
    for (const AddedToken& a : impl_.added)
      added.push_back({{"id", a.id},
                       {"content", a.content},
                       {"special", a.special},
                       {"normalized", a.normalized},
                       {"lstrip", a.lstrip},
                       {"rstrip", a.rstrip},
                       {"single_word", a.single_word}});
    json norm = json::array();
    for (const NormalizerStep& s : impl_.normalizer)
      norm.push_back(s.kind == NormalizerStep::kPrepend ? json{{"Prepend", s.content}}
                                                        : json{{"Replace", {s.pattern, s.content}}});
    json pre = json::array();
    for (const PreTokenizerStep& s : impl_.pre_tokenizer) {
      if (s.kind == PreTokenizerStep::kByteLevel)
        pre.push_back({{"ByteLevel", {{"add_prefix_space", s.add_prefix_space}, {"use_regex", s.use_regex}}}});
      else
        pre.push_back(
            {{"Metaspace",
              {{"replacement", s.replacement}, {"prepend_scheme", static_cast<int>(s.scheme)}, {"split", s.split}}}});
    }
    json dec = json::array();
    for (const DecoderStep& s : impl_.decoders)
      dec.push_back({{"kind", static_cast<int>(s.kind)},
                     {"pattern", s.pattern},
                     {"content", s.content},
                     {"scheme", static_cast<int>(s.scheme)},
                     {"start", s.start},
                     {"stop", s.stop}});
    return {{"format", "levanter-cpp tokenizer canonical form 1"},
            {"model", model},
            {"added_tokens", added},
            {"normalizer", norm},
            {"pre_tokenizer", pre},
            {"template", impl_.has_template ? json(impl_.template_items) : json()},
            {"decoder", impl_.has_decoder ? dec : json()}};
  }

  void load(std::string_view text) {
    json root;
    try {
      root = json::parse(text.begin(), text.end());
    } catch (const json::exception& e) {  // parse_error, or out_of_range for a number such as 1e400
      fail(std::string("not valid JSON: ") + e.what());
    }
    if (!root.is_object()) fail("not a tokenizer.json (the top level is not an object)");
    if (!is_null(root, "truncation"))
      fail("truncation is not supported; set \"truncation\": null (levanter packs sequences itself)");
    if (!is_null(root, "padding"))
      fail("padding is not supported; set \"padding\": null (levanter packs sequences itself)");
    load_model(root);
    if (!is_null(root, "normalizer")) load_normalizer(root.at("normalizer"));
    if (!is_null(root, "pre_tokenizer")) load_pre_tokenizer(root.at("pre_tokenizer"));
    if (!is_null(root, "post_processor")) load_post_processor(root.at("post_processor"));
    if (!is_null(root, "decoder")) {
      impl_.has_decoder = true;
      load_decoder(root.at("decoder"));
    }
    load_added_tokens(root);
    build_added_matchers();
    // The ids the post-processor adds must be tokens: encode() would otherwise give ids at or past vocab_size(),
    // which the token cache refuses long after loading (or an embedding cannot look up).
    for (const auto& item : impl_.template_items)
      for (TokenId id : item) {
        const bool in_model = static_cast<std::size_t>(id) < impl_.bpe.has_id.size() && impl_.bpe.has_id[id];
        const bool added = static_cast<std::size_t>(id) < impl_.added_by_id.size() && impl_.added_by_id[id] >= 0;
        if (!in_model && !added)
          fail("post_processor: token id " + std::to_string(id) + " is neither in model.vocab nor in added_tokens");
      }

    impl_.byte_level = !impl_.pre_tokenizer.empty() && impl_.pre_tokenizer.back().kind == PreTokenizerStep::kByteLevel;
    impl_.gpt2_fast = impl_.normalizer.empty() && impl_.pre_tokenizer.size() == 1 && impl_.byte_level &&
                      impl_.pre_tokenizer[0].use_regex && !impl_.pre_tokenizer[0].add_prefix_space;
    std::size_t size = impl_.bpe.id_to_token.size();
    for (const AddedToken& a : impl_.added) size = std::max<std::size_t>(size, static_cast<std::size_t>(a.id) + 1);
    impl_.vocab_size = size;
    find_roles();
    impl_.fingerprint = "sha256:" + sha256_hex(canonical().dump());

    auto names = [](auto& steps, auto name) {
      std::string s;
      for (const auto& st : steps) s += (s.empty() ? "" : "+") + name(st);
      return s.empty() ? std::string("none") : s;
    };
    impl_.description =
        "BPE vocab_size=" + std::to_string(impl_.vocab_size) + " merges=" + std::to_string(impl_.bpe.merges.size()) +
        " added_tokens=" + std::to_string(impl_.added.size()) + (impl_.bpe.byte_fallback ? " byte_fallback" : "") +
        " normalizer=" +
        names(impl_.normalizer,
              [](const NormalizerStep& s) {
                return std::string(s.kind == NormalizerStep::kPrepend ? "Prepend" : "Replace");
              }) +
        " pre_tokenizer=" +
        names(impl_.pre_tokenizer,
              [](const PreTokenizerStep& s) {
                return std::string(s.kind == PreTokenizerStep::kByteLevel ? "ByteLevel" : "Metaspace");
              }) +
        (impl_.gpt2_fast ? " (gpt2 fast path)" : "") + " template=" + (impl_.has_template ? "yes" : "none");
  }

 private:
  std::string source_;
  Tokenizer::Impl& impl_;
  std::vector<std::pair<std::string, std::string>> canon_merges_;
};

}  // namespace

std::shared_ptr<Tokenizer::Impl> load_tokenizer_impl(std::string_view json_text, const std::string& source) {
  auto impl = std::make_shared<Tokenizer::Impl>();
  Loader(source, *impl).load(json_text);
  return impl;
}

}  // namespace levanter::data
