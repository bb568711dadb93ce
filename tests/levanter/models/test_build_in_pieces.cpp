// Every model family built as one process's pieces (haliax::CreatePiecesScope, what the trainer does under FSDP and
// tensor parallelism) is its whole initialisation cut with haliax::shard, bit for bit, on every process of a
// (data 2, model 2) mesh, and never holds more than about its pieces; built for its shapes alone
// (haliax::EvalShapeScope) it holds no data at all.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "haliax/nn/module.h"
#include "haliax/partitioning.h"
#include "levanter/models/backpack/backpack.h"
#include "levanter/models/gpt2/gpt2.h"
#include "levanter/models/llama/llama.h"
#include "levanter/runtime/cpu_allocator.h"

namespace models = levanter::models;
namespace nn = haliax::nn;
namespace rt = levanter::runtime;

namespace {

struct Family {
  std::string name;
  std::function<std::unique_ptr<models::LmHeadModel>()> build;
};

std::vector<Family> families(int64_t hidden, int64_t layers, int64_t vocab) {
  const haliax::Axis Vocab("vocab", vocab);
  const haliax::random::Key key(11);
  models::Gpt2Config g;
  g.seq_len = 32;
  g.hidden_dim = hidden;
  g.num_layers = layers;
  g.num_heads = 4;
  models::LlamaConfig l;
  l.seq_len = 32;
  l.hidden_dim = hidden;
  l.intermediate_dim = 2 * hidden;
  l.num_layers = layers;
  l.num_heads = 4;
  l.num_kv_heads = 2;
  models::BackpackConfig b;
  b.gpt2 = g;
  b.num_senses = 4;
  return {{"gpt2", [=] { return g.build(Vocab, key); }},
          {"llama", [=] { return l.build(Vocab, key); }},
          {"backpack", [=] { return b.build(Vocab, key); }}};
}

double tensor_bytes(models::LmHeadModel& m) {
  double n = 0;
  for (const auto& [info, p] : nn::named_parameters(m)) n += static_cast<double>(p.array().nbytes());
  return n;
}

}  // namespace

TEST(BuildInPieces, EveryFamilyBuiltInPiecesIsItsWholeInitialisationCut) {
  const haliax::Mesh mesh({{"data", 2}, {"model", 2}});
  // FSDP's {embed: data} with tensor parallelism's {heads, kv_heads, mlp: model}.
  const haliax::AxisMapping mapping{{"embed", "data"}, {"heads", "model"}, {"kv_heads", "model"}, {"mlp", "model"}};
  for (const Family& f : families(32, 2, 101)) {
    std::unique_ptr<models::LmHeadModel> whole = f.build();
    std::unique_ptr<models::LmHeadModel> shapes;
    {
      haliax::EvalShapeScope shapes_only;
      shapes = f.build();
    }
    const auto w = nn::named_parameters(*whole), s = nn::named_parameters(*shapes);
    ASSERT_EQ(w.size(), s.size()) << f.name;
    int64_t split = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      EXPECT_EQ(s[i].first.path, w[i].first.path) << f.name;
      EXPECT_EQ(s[i].second.axes(), w[i].second.axes()) << f.name << " " << w[i].first.path;
      EXPECT_EQ(s[i].second.dtype(), w[i].second.dtype()) << f.name << " " << w[i].first.path;
      EXPECT_TRUE(s[i].second.array().is_meta()) << f.name << " " << w[i].first.path;
    }
    for (int64_t rank = 0; rank < mesh.size(); ++rank) {
      haliax::CreatePieces pieces;
      for (const auto& [axis, physical] : mapping) pieces.split[axis] = {2, mesh.coordinate(rank, physical)};
      std::unique_ptr<models::LmHeadModel> made;
      {
        haliax::CreatePiecesScope scope(pieces);
        made = f.build();
      }
      const auto m = nn::named_parameters(*made);
      ASSERT_EQ(m.size(), w.size()) << f.name;
      for (size_t i = 0; i < w.size(); ++i) {
        const std::string what = f.name + " rank " + std::to_string(rank) + " " + w[i].first.path;
        const haliax::NamedArray expected = haliax::shard(w[i].second, mapping, mesh, rank, w[i].first.path);
        ASSERT_EQ(m[i].second.axes(), expected.axes()) << what;
        EXPECT_TRUE(at::equal(m[i].second.array(), expected.array())) << what;
        if (rank == 0 && expected.array().numel() < w[i].second.array().numel()) ++split;
      }
    }
    EXPECT_GT(split, 5) << f.name << ": most parameters have an axis of the mapping";
  }
}

// The largest this process holds while building its pieces stays near the pieces themselves (each layer is copied
// into the stack as it is built), far under the whole model, which building whole must hold at least once.
TEST(BuildInPieces, BuildingInPiecesNeverHoldsTheWholeModel) {
  ASSERT_TRUE(rt::install_caching_cpu_allocator());
  for (const Family& f : families(256, 4, 4000)) {
    const size_t base = rt::cpu_allocator_stats().in_use_bytes;
    rt::reset_cpu_allocator_peak();
    std::unique_ptr<models::LmHeadModel> whole = f.build();
    const double whole_peak = static_cast<double>(rt::cpu_allocator_stats().peak_in_use_bytes - base);
    const double whole_bytes = tensor_bytes(*whole);
    whole.reset();
    haliax::CreatePieces pieces;
    pieces.split["embed"] = {4, 3};
    rt::reset_cpu_allocator_peak();
    std::unique_ptr<models::LmHeadModel> made;
    {
      haliax::CreatePiecesScope scope(pieces);
      made = f.build();
    }
    const double pieces_peak = static_cast<double>(rt::cpu_allocator_stats().peak_in_use_bytes - base);
    const double pieces_bytes = tensor_bytes(*made);
    EXPECT_GE(whole_peak, whole_bytes) << f.name;
    EXPECT_NEAR(pieces_bytes / whole_bytes, 0.25, 0.01) << f.name;  // every large parameter has `embed`
    // 1.1-1.25 times the pieces (the stack, one layer, a draw's temporaries): bounded at 1.5 times.
    EXPECT_LT(pieces_peak, 1.5 * pieces_bytes) << f.name << ": peak " << pieces_peak << " of " << whole_bytes;
  }
}
