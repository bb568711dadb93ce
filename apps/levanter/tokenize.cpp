// `levanter tokenize [--tokenizer PATH] IN OUT`: token ids for a JSONL corpus, one {"ids":[...]} line per
// document, in input order. The same contract as shared/tools/reftok/reftok.js: the ids are exactly
// encode(text) (no BOS/EOS unless --bos/--eos), blank lines are skipped, .gz/.zst are handled, "-" is
// stdin/stdout. Reading, tokenizing (on --threads threads) and writing overlap; the output is written to a
// temporary file and renamed into place at the end, so a failed run leaves no partial OUT.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <iostream>
#include <thread>

#include "command.h"
#include "levanter/data/jsonl_reader.h"
#include "levanter/data/text.h"
#include "levanter/data/text_writer.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/runtime/thread_pool.h"

namespace {

namespace fs = std::filesystem;
using levanter::data::DataError;
using levanter::data::TokenId;
using levanter::data::Tokenizer;

// --tokenizer: a path is used as given (its errors name it); a bare name ("gpt2", the default) is a bundled
// tokenizer, data/<name>/tokenizer.json, found as the data config finds it (resolve_tokenizer_path:
// $LEVANTER_DATA_DIR, beside the executable, the working directory and their parents), else in the source
// tree this binary was built from.
std::string tokenizer_path(const std::string& arg) {
  std::string name = arg.empty() ? "gpt2" : arg;
  std::error_code ec;
  bool bare = name.find('/') == std::string::npos && fs::path(name).extension() != ".json" && !fs::exists(name, ec);
  if (!bare) return name;
  try {
    return levanter::data::resolve_tokenizer_path(name);
  } catch (const DataError&) {
    fs::path p = fs::path(LEVANTER_SOURCE_DIR) / "data" / name / "tokenizer.json";
    if (fs::exists(p, ec)) return p.string();
    throw;
  }
}

struct Options {
  std::string tokenizer, input, output, text_key = "text";
  int threads = 0;
  std::int64_t max_document_bytes = std::int64_t{64} << 20;
  bool skip_bad_lines = false, bos = false, eos = false;
};

struct Line {
  std::string text;
  std::uint64_t number;
};

struct Batch {
  std::vector<Line> lines;
  std::size_t bytes = 0;
};

struct BatchResult {
  std::string out;  // the JSONL of the good documents, in order
  std::uint64_t documents = 0, tokens = 0, text_bytes = 0;
  std::vector<std::pair<std::uint64_t, std::string>> errors;  // (line, message)
};

Batch read_batch(levanter::data::LineReader& reader) {
  constexpr std::size_t kMaxBytes = 4 << 20, kMaxLines = 16384;
  Batch b;
  std::string_view line;
  while (b.bytes < kMaxBytes && b.lines.size() < kMaxLines && reader.next(line)) {
    if (levanter::data::is_blank(line)) continue;
    b.lines.push_back({std::string(line), reader.line_number()});
    b.bytes += line.size();
  }
  return b;
}

void append_ids(std::string& out, const std::vector<TokenId>& ids) {
  out += "{\"ids\":[";
  char buf[16];
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ',';
    auto r = std::to_chars(buf, buf + sizeof buf, ids[i]);
    out.append(buf, r.ptr);
  }
  out += "]}\n";
}

BatchResult process(const Batch& batch, const Tokenizer& tok, const Options& o, const std::string& source,
                    int threads) {
  const std::size_t n = batch.lines.size();
  std::vector<std::string> outs(n);
  std::vector<std::string> errors(n);
  std::vector<std::uint64_t> tokens(n, 0), bytes(n, 0);
  // Documents in chunks of 8 on the shared pool (the caller works too); each index writes only its own slots.
  levanter::runtime::ThreadPool::ForOptions fo;
  fo.chunk = 8;
  fo.max_participants = static_cast<std::size_t>(threads);
  levanter::runtime::compute_pool().parallel_for(n, fo, [&](std::size_t begin, std::size_t end, int) {
    std::vector<TokenId> ids;
    for (std::size_t i = begin; i < end; ++i) {
      try {
        std::string text =
            levanter::data::jsonl_text_field(batch.lines[i].text, o.text_key, source, batch.lines[i].number);
        ids.clear();
        if (o.bos) ids.push_back(*tok.bos_id());
        tok.encode_into(text, ids);
        if (o.eos) ids.push_back(*tok.eos_id());
        append_ids(outs[i], ids);
        tokens[i] = ids.size();
        bytes[i] = text.size();
      } catch (const DataError& e) {
        errors[i] = e.what();
      } catch (const levanter::data::InvalidUtf8Error& e) {
        errors[i] = source + ":" + std::to_string(batch.lines[i].number) + ": text: " + e.what();
      }
    }
  });
  BatchResult r;
  for (std::size_t i = 0; i < n; ++i) {
    if (!errors[i].empty()) {
      r.errors.emplace_back(batch.lines[i].number, std::move(errors[i]));
      continue;
    }
    r.out += outs[i];
    ++r.documents;
    r.tokens += tokens[i];
    r.text_bytes += bytes[i];
  }
  return r;
}

int run(const Options& opts) {
  Options o = opts;
  o.tokenizer = tokenizer_path(o.tokenizer);
  const Tokenizer tok = Tokenizer::from_file(o.tokenizer);
  if (o.bos && !tok.bos_id()) throw std::runtime_error(o.tokenizer + ": --bos: the tokenizer has no BOS token");
  if (o.eos && !tok.eos_id()) throw std::runtime_error(o.tokenizer + ": --eos: the tokenizer has no EOS token");
  // At most one participant per pool thread (the shared pool has one per core, counting the caller).
  const int pool_threads = static_cast<int>(levanter::runtime::compute_pool().size()) + 1;
  int threads = o.threads > 0 ? std::min(o.threads, pool_threads) : pool_threads;

  auto reader =
      levanter::data::open_lines(o.input, static_cast<std::size_t>(o.max_document_bytes), "--max-document-bytes");
  const std::string source = reader->name();
  auto writer = levanter::data::open_text_writer(o.output);

  auto t0 = std::chrono::steady_clock::now();
  std::uint64_t documents = 0, tokens = 0, text_bytes = 0, skipped = 0;
  std::string first_error;
  std::future<void> writing;
  Batch batch = read_batch(*reader);
  while (!batch.lines.empty()) {
    auto reading = std::async(std::launch::async, [&] { return read_batch(*reader); });
    BatchResult r;
    try {
      r = process(batch, tok, o, source, threads);
    } catch (...) {
      reading.wait();
      throw;
    }
    if (!r.errors.empty()) {
      if (!o.skip_bad_lines) {
        reading.wait();
        if (writing.valid()) writing.wait();
        throw std::runtime_error(r.errors.front().second + " (use --skip-bad-lines to skip bad lines)");
      }
      if (first_error.empty()) first_error = r.errors.front().second;
      skipped += r.errors.size();
    }
    documents += r.documents;
    tokens += r.tokens;
    text_bytes += r.text_bytes;
    if (writing.valid()) writing.get();
    writing = std::async(std::launch::async, [&writer, out = std::move(r.out)] { writer->write(out); });
    batch = reading.get();
  }
  if (writing.valid()) writing.get();
  if (documents == 0 && skipped == 0)
    throw levanter::data::DataSourceError(source, 0, "no documents (the input is empty)");
  writer->commit();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr,
               "tokenize: %llu documents, %llu tokens, %.2f MB of text in %.2f s (%.1f MB/s, %d threads) -> %s\n",
               static_cast<unsigned long long>(documents), static_cast<unsigned long long>(tokens), text_bytes / 1e6,
               seconds, text_bytes / 1e6 / std::max(seconds, 1e-9), threads, writer->name().c_str());
  if (skipped > 0)
    std::fprintf(stderr, "tokenize: skipped %llu bad lines (first: %s)\n", static_cast<unsigned long long>(skipped),
                 first_error.c_str());
  return 0;
}

std::function<int()> setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("input", o->input, "JSONL input (.jsonl, .jsonl.gz, .jsonl.zst; - for stdin)")->required();
  app.add_option("output", o->output, "JSONL output of {\"ids\":[...]} lines (.gz/.zst compress; - for stdout)")
      ->required();
  app.add_option("--tokenizer", o->tokenizer,
                 "tokenizer.json path, or a bundled name (default gpt2: data/gpt2/tokenizer.json)");
  app.add_option("--text-key", o->text_key, "the JSON field that holds the text")->capture_default_str();
  app.add_option("--threads", o->threads, "tokenizer threads (0: one per core)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-document-bytes", o->max_document_bytes,
                 "the longest line read; a longer one is an error naming its line")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("--skip-bad-lines", o->skip_bad_lines,
               "skip (and count) malformed lines instead of stopping at the first");
  app.add_flag("--bos", o->bos, "prepend the tokenizer's BOS id to every document");
  app.add_flag("--eos", o->eos, "append the tokenizer's EOS id to every document");
  return [o] { return run(*o); };
}

}  // namespace

LEVANTER_COMMAND(tokenize, "tokenize",
                 "Tokenize a JSONL corpus into {\"ids\":[...]} lines (Hugging Face tokenizer.json)", setup);
