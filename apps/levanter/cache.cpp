// `levanter cache --config FILE [--data.key value ...]`: build (or resume, or check) the token caches of a
// config's data section ahead of training, with a progress bar on stderr. Reads only the `data:` section,
// so it works on a full training config.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "command.h"
#include "levanter/config/config.h"
#include "levanter/data/text.h"
#include "levanter/runtime/format.h"

namespace {

using namespace levanter::data;
using levanter::runtime::format_bytes;
using levanter::runtime::format_count;
using levanter::runtime::format_duration;

// "train  [#########.........]  45%  1.2k docs  3.40M tokens  2.1 MB/s  ETA 15s"
std::string progress_line(const std::string& label, const CacheBuildProgress& p) {
  double frac = p.input_bytes_total > 0 ? static_cast<double>(p.input_bytes_done) / p.input_bytes_total : 1.0;
  if (p.done && !p.failed) frac = 1.0;
  const int width = 24;
  int filled = static_cast<int>(frac * width);
  std::string bar(filled, '#');
  bar += std::string(width - filled, '.');
  double rate = p.elapsed_seconds > 0 ? p.bytes_read_this_run / p.elapsed_seconds : 0;
  double eta = rate > 0 ? (p.input_bytes_total - p.input_bytes_done) / rate : -1;
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s [%s] %3.0f%%  %s docs  %s tokens  %s/s  %s %s", label.c_str(), bar.c_str(),
                frac * 100, format_count(p.documents).c_str(), format_count(p.tokens).c_str(),
                format_bytes(rate).c_str(), p.done ? "in" : "ETA",
                format_duration(p.done ? p.elapsed_seconds : eta).c_str());
  return buf;
}

std::function<int()> setup(CLI::App& app) {
  auto config_file = std::make_shared<std::string>();
  auto rebuild = std::make_shared<bool>(false);
  auto threads = std::make_shared<int>(-1);
  auto split = std::make_shared<std::string>("all");
  app.add_option("--config", *config_file, "Config file (YAML); only its data: section is read")->required();
  app.add_flag("--rebuild", *rebuild, "Rebuild caches made with another tokenizer, settings or input files");
  app.add_option("--threads", *threads, "Tokenizer threads (default: data.cache_options.num_threads)");
  app.add_option("--split", *split, "Which caches: train, validation or all")
      ->check(CLI::IsMember({"train", "validation", "all"}));
  app.allow_extras();
  app.footer("Overrides: --data.key value (e.g. --data.cache_dir /tmp/cache --data.skip_bad_lines true)");
  CLI::App* self = &app;
  return [=] {
    auto includes = std::make_shared<levanter::config::IncludeMap>();
    YAML::Node root = levanter::config::load_yaml_file(*config_file, includes.get());
    levanter::config::apply_overrides(root, self->remaining());
    DataConfig cfg;
    YAML::Node data = root["data"];
    if (!data.IsDefined() || data.IsNull()) throw levanter::config::ConfigError(*config_file + ": no data: section");
    levanter::config::parse_value(data, levanter::config::Context{*config_file, "", includes}.child("data"), cfg);
    if (*rebuild) cfg.rebuild_cache = true;
    if (*threads >= 0) cfg.cache_options.num_threads = *threads;

    TextData text(cfg);
    std::vector<Split> splits;
    if (*split != "validation") splits.push_back(Split::kTrain);
    if (*split != "train") splits.push_back(Split::kValidation);
    const bool tty = ::isatty(STDERR_FILENO);
    int built = 0;
    for (const std::string& source : text.source_names()) {
      for (Split sp : splits) {
        if (text.urls(source, sp).empty()) continue;
        std::string label = (source.empty() ? std::string() : source + "/") + split_name(sp);
        auto cache = text.cache(source, sp);
        ++built;
        if (CacheBuilder* b = cache->builder()) {
          auto last_line = std::chrono::steady_clock::now();
          while (!b->progress().done) {
            std::this_thread::sleep_for(std::chrono::milliseconds(tty ? 250 : 1000));
            auto now = std::chrono::steady_clock::now();
            if (tty) {
              std::cerr << "\r" << progress_line(label, b->progress()) << "\033[K" << std::flush;
            } else if (now - last_line > std::chrono::seconds(10)) {
              std::cerr << progress_line(label, b->progress()) << "\n";
              last_line = now;
            }
          }
          CacheBuildProgress p = b->progress();
          std::cerr << (tty ? "\r" : "") << progress_line(label, p) << (tty ? "\033[K" : "") << "\n";
          b->wait();  // rethrows a failed build's error
        }
        cache->wait_finished();
        cache->verify_all();  // every block's checksum and token ids, not only those a run happens to read
        const CacheManifest& m0 = cache->manifest();
        CacheManifest m = read_manifest(cache->dir()).value_or(m0);
        std::cout << label << ": " << cache->dir() << ": " << m.rows << " documents, " << m.tokens << " tokens, "
                  << m.files.size() << (m.files.size() == 1 ? " shard" : " shards");
        if (m.bad_lines > 0) std::cout << ", " << m.bad_lines << " bad lines skipped";
        std::cout << " (complete, verified)\n";
      }
    }
    if (built == 0) std::cerr << "warning: the data section names no files (train_urls / validation_urls)\n";
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(cache, "cache", "Build the token caches of a config's data section (resumable; progress on stderr)",
                 setup);
