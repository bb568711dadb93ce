// Partitioning by name: which piece of a named array each process of a mesh holds (haliax/partitioning.h).
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "haliax/error.h"
#include "haliax/partitioning.h"
#include "testing.h"

using namespace haliax;

TEST(Partitioning, MeshCoordinatesAreRowMajor) {
  Mesh mesh({{"replica", 1}, {"data", 2}, {"model", 3}});
  EXPECT_EQ(mesh.size(), 6);
  EXPECT_EQ(mesh.axis_size("model"), 3);
  EXPECT_TRUE(mesh.has_axis("data"));
  EXPECT_FALSE(mesh.has_axis("fsdp"));
  // rank = data * 3 + model
  for (int64_t r = 0; r < 6; ++r) {
    EXPECT_EQ(mesh.coordinate(r, "data"), r / 3) << r;
    EXPECT_EQ(mesh.coordinate(r, "model"), r % 3) << r;
    EXPECT_EQ(mesh.coordinate(r, "replica"), 0) << r;
  }
  EXPECT_VALUE_ERROR(mesh.axis_size("fsdp"), "no mesh axis 'fsdp' in the mesh {replica: 1, data: 2, model: 3}");
  EXPECT_VALUE_ERROR(mesh.coordinate(6, "data"), "rank 6 is outside the mesh");
  EXPECT_VALUE_ERROR(Mesh({{"data", 2}, {"data", 1}}), "mesh axis 'data' appears twice");
  EXPECT_VALUE_ERROR(Mesh({{"data", 0}}), "mesh axis 'data' has size 0");
}

TEST(Partitioning, PhysicalAxisNameAndSizeFollowTheMapping) {
  Mesh mesh({{"data", 4}, {"model", 2}});
  AxisMapping params{{"embed", "data"}, {"mlp", "model"}};
  EXPECT_EQ(physical_axis_name("embed", params), "data");
  EXPECT_FALSE(physical_axis_name("vocab", params));
  EXPECT_EQ(physical_axis_size("embed", params, mesh), 4);
  EXPECT_EQ(physical_axis_size("mlp", params, mesh), 2);
  EXPECT_EQ(physical_axis_size("vocab", params, mesh), 1);
}

TEST(Partitioning, PspecNamesTheMeshAxisOfEachSplitAxis) {
  Mesh mesh({{"data", 2}, {"model", 2}});
  AxisMapping params{{"embed", "data"}, {"mlp", "model"}};
  auto spec = pspec_for({Axis("layers", 3), Axis("embed", 8), Axis("mlp", 4)}, params, mesh);
  ASSERT_EQ(spec.size(), 3u);
  EXPECT_FALSE(spec[0]);
  EXPECT_EQ(spec[1], "data");
  EXPECT_EQ(spec[2], "model");
  EXPECT_EQ(local_axes({Axis("layers", 3), Axis("embed", 8), Axis("mlp", 4)}, params, mesh),
            (AxisSpec{Axis("layers", 3), Axis("embed", 4), Axis("mlp", 2)}));
}

TEST(Partitioning, ErrorsNameTheAxisTheMeshAxisAndBothSizes) {
  Mesh mesh({{"data", 4}});
  EXPECT_VALUE_ERROR(pspec_for({Axis("embed", 6)}, {{"embed", "data"}}, mesh, "transformer.h.attn.c_proj.weight"),
                     "transformer.h.attn.c_proj.weight: axis 'embed' of size 6 does not divide evenly over mesh "
                     "axis 'data' of size 4");
  EXPECT_VALUE_ERROR(pspec_for({Axis("embed", 8), Axis("mlp", 8)}, {{"embed", "data"}, {"mlp", "data"}}, mesh),
                     "axes 'embed' and 'mlp' are both mapped to mesh axis 'data'");
  EXPECT_VALUE_ERROR(pspec_for({Axis("embed", 8)}, {{"embed", "fsdp"}}, mesh), "no mesh axis 'fsdp'");
}

// The pieces of all processes, put back together in coordinate order, are the array; each is a copy of its own.
TEST(Partitioning, ShardsTileTheArray) {
  Mesh mesh({{"data", 2}, {"model", 2}});
  AxisMapping mapping{{"embed", "data"}, {"mlp", "model"}};
  NamedArray x(at::arange(3 * 4 * 6, at::kFloat).reshape({3, 4, 6}),
               {Axis("layers", 3), Axis("mlp", 4), Axis("embed", 6)});
  std::vector<at::Tensor> rows;
  for (int64_t d = 0; d < 2; ++d) {
    std::vector<at::Tensor> cols;
    for (int64_t m = 0; m < 2; ++m) {
      const int64_t rank = d * 2 + m;
      NamedArray piece = shard(x, mapping, mesh, rank);
      EXPECT_EQ(piece.axes(), (AxisSpec{Axis("layers", 3), Axis("mlp", 2), Axis("embed", 3)}));
      EXPECT_TRUE(piece.array().is_contiguous());
      EXPECT_NE(piece.array().data_ptr(), x.array().data_ptr());
      EXPECT_TRUE(at::equal(piece.array(), x.array().narrow(1, m * 2, 2).narrow(2, d * 3, 3))) << rank;
      cols.push_back(piece.array());
    }
    rows.push_back(at::cat(cols, 1));
  }
  EXPECT_TRUE(at::equal(at::cat(rows, 2), x.array()));
  // Nothing mapped: the array itself.
  NamedArray same = shard(x, {{"heads", "model"}}, mesh, 3);
  EXPECT_EQ(same.array().data_ptr(), x.array().data_ptr());
}

// Under a TensorParallelScope a contraction over a split axis is summed over the processes (here a stand-in that
// counts and doubles, as two processes holding equal halves would), unless every operand holds the axis whole, which
// the scope can tell only when it knows the whole size.
TEST(Partitioning, AContractionOverAPieceIsSummedAndOneOverTheWholeAxisIsNot) {
  const Axis Batch("batch", 3), Mlp("mlp", 8);
  const NamedArray a = haliax::random::normal(haliax::random::Key(0), {Batch, Mlp});
  const NamedArray b = haliax::random::normal(haliax::random::Key(1), {Mlp});
  const at::Tensor plain = haliax::dot(a, b, Mlp).array();
  int sums = 0;
  auto tp = std::make_shared<TensorParallel>();
  tp->split = {{"mlp", {2, 0}}};
  tp->all_reduce = [&sums](at::Tensor& t) {
    ++sums;
    t.mul_(2);
  };
  {
    TensorParallelScope scope(tp);
    // Whole size unknown: 8 is taken for this process's piece of 16.
    EXPECT_TRUE(at::allclose(haliax::dot(a, b, Mlp).array(), plain * 2));
    EXPECT_EQ(sums, 1);
  }
  tp->whole = {{"mlp", 8}};
  {
    TensorParallelScope scope(tp);
    EXPECT_TRUE(at::allclose(haliax::dot(a, b, Mlp).array(), plain));  // whole on every side: nothing to sum
    EXPECT_EQ(sums, 1);
    // One operand whole, the other a piece: the whole one is cut to block 0, and the partial products summed.
    const NamedArray half = haliax::shard(b, {{"mlp", "model"}}, Mesh({{"model", 2}}), 0);
    const at::Tensor expected = haliax::dot(a, b, Mlp).array();  // (still whole: no sum)
    EXPECT_TRUE(at::allclose(haliax::dot(a, half, Mlp).array(),
                             2 * at::matmul(a.array().narrow(1, 0, 4), b.array().narrow(0, 0, 4))));
    EXPECT_EQ(sums, 2);
    EXPECT_TRUE(at::allclose(expected, plain));
  }
}

// Every elementwise draw and zeros/ones/full, made under a CreatePiecesScope, is the same block of the whole array that
// shard() cuts, bit for bit, on every process of a (data 2, model 3) mesh; under an EvalShapeScope only its shape and
// dtype exist.
TEST(Partitioning, ArraysCreatedInPiecesAreTheBlocksOfTheWholeArrays) {
  const Mesh mesh({{"data", 2}, {"model", 3}});
  const AxisMapping mapping{{"embed", "data"}, {"mlp", "model"}};
  const Axis L("layers", 2), E("embed", 4), M("mlp", 6), H("head", 5);
  const random::Key key(7);
  using Make = std::function<NamedArray(const AxisSpec&)>;
  const std::vector<std::pair<std::string, Make>> makes = {
      {"bits", [&](const AxisSpec& s) { return random::bits(key, s); }},
      {"bits64", [&](const AxisSpec& s) { return random::bits(key, s, 64); }},
      {"uniform", [&](const AxisSpec& s) { return random::uniform(key, s, at::kFloat, -2.0, 3.0); }},
      {"uniform f64", [&](const AxisSpec& s) { return random::uniform(key, s, at::kDouble); }},
      {"uniform bf16", [&](const AxisSpec& s) { return random::uniform(key, s, at::kBFloat16); }},
      {"normal", [&](const AxisSpec& s) { return random::normal(key, s); }},
      {"truncated_normal", [&](const AxisSpec& s) { return random::truncated_normal(key, s, -2.0, 2.0); }},
      {"truncated_normal f64", [&](const AxisSpec& s) { return random::truncated_normal(key, s, -2, 2, at::kDouble); }},
      {"bernoulli", [&](const AxisSpec& s) { return random::bernoulli(key, s, 0.3); }},
      {"randint", [&](const AxisSpec& s) { return random::randint(key, s, -5, 1000); }},
      {"randint i32", [&](const AxisSpec& s) { return random::randint(key, s, 0, 7, at::kInt); }},
      {"exponential", [&](const AxisSpec& s) { return random::exponential(key, s); }},
      {"laplace", [&](const AxisSpec& s) { return random::laplace(key, s); }},
      {"logistic", [&](const AxisSpec& s) { return random::logistic(key, s); }},
      {"cauchy", [&](const AxisSpec& s) { return random::cauchy(key, s); }},
      {"rademacher", [&](const AxisSpec& s) { return random::rademacher(key, s); }},
      {"gumbel", [&](const AxisSpec& s) { return random::gumbel(key, s); }},
      {"zeros", [&](const AxisSpec& s) { return zeros(s); }},
      {"ones bf16", [&](const AxisSpec& s) { return ones(s, at::kBFloat16); }},
      {"full", [&](const AxisSpec& s) { return full(s, 2.5); }},
  };
  for (const AxisSpec& shape : std::vector<AxisSpec>{{L, E, M}, {M, H, E}, {H, M}, {E}, {H}}) {
    for (const auto& [name, make] : makes) {
      const NamedArray whole = make(shape);
      for (int64_t rank = 0; rank < mesh.size(); ++rank) {
        CreatePieces pieces;
        pieces.split["embed"] = {2, mesh.coordinate(rank, "data")};
        pieces.split["mlp"] = {3, mesh.coordinate(rank, "model")};
        pieces.split["vocab"] = {1, 0};  // one piece: the whole axis
        NamedArray piece;
        {
          CreatePiecesScope scope(pieces);
          piece = make(shape);
        }
        const NamedArray expected = shard(whole, mapping, mesh, rank);
        const std::string what = name + " " + to_string(shape) + " rank " + std::to_string(rank);
        EXPECT_EQ(piece.axes(), expected.axes()) << what;
        EXPECT_TRUE(at::equal(piece.array(), expected.array())) << what;
        {
          EvalShapeScope shapes_only;
          const NamedArray meta = make(shape);
          EXPECT_TRUE(meta.array().is_meta()) << what;
          EXPECT_EQ(meta.axes(), whole.axes()) << what;
          EXPECT_EQ(meta.dtype(), whole.dtype()) << what;
          CreatePiecesScope scope(pieces);
          const NamedArray meta_piece = make(shape);
          EXPECT_TRUE(meta_piece.array().is_meta()) << what;
          EXPECT_EQ(meta_piece.axes(), expected.axes()) << what;
        }
      }
    }
  }
  // The scopes end with their blocks: the same call makes the whole array again, with real data.
  EXPECT_FALSE(random::normal(key, {E}).array().is_meta());
  EXPECT_EQ(random::normal(key, {E, M}).axes(), (AxisSpec{E, M}));
  // Draws that are not made from a shape alone are whole under the scope: a permutation, and draws shaped by an
  // existing array.
  const NamedArray permutation_whole = random::permutation(key, E);
  const NamedArray logits = random::normal(random::Key(1), {E, M}), p = full({E, M}, 0.3);
  const NamedArray categorical_whole = random::categorical(key, logits, "mlp");
  const NamedArray bernoulli_whole = random::bernoulli(key, {E, M}, p);
  {
    CreatePieces pieces;
    pieces.split["embed"] = {2, 1};
    CreatePiecesScope scope(pieces);
    EXPECT_TRUE(at::equal(random::permutation(key, E).array(), permutation_whole.array()));
    EXPECT_TRUE(at::equal(random::categorical(key, logits, "mlp").array(), categorical_whole.array()));
    EXPECT_TRUE(at::equal(random::bernoulli(key, {E, M}, p).array(), bernoulli_whole.array()));
    {
      EvalShapeScope shapes_only;
      EXPECT_FALSE(random::categorical(key, logits, "mlp").array().is_meta());
    }
    // An axis that does not divide is refused by name.
    EXPECT_VALUE_ERROR(random::normal(key, {Axis("embed", 5)}),
                       "creating in pieces: axis 'embed' of size 5 does not split evenly into 2 pieces");
    EXPECT_VALUE_ERROR(zeros({Axis("embed", 3)}), "axis 'embed' of size 3 does not split evenly into 2 pieces");
  }
  CreatePieces bad;
  bad.split["embed"] = {2, 2};
  EXPECT_VALUE_ERROR(CreatePiecesScope{bad}, "creating in pieces: axis 'embed': block 2 of 2");
  {
    // A refused scope leaves the enclosing one installed.
    CreatePieces outer;
    outer.split["embed"] = {2, 1};
    CreatePiecesScope scope(outer);
    EXPECT_VALUE_ERROR(CreatePiecesScope{bad}, "block 2 of 2");
    EXPECT_EQ(zeros({E}).axes(), (AxisSpec{Axis("embed", 2)}));
  }
  EXPECT_EQ(zeros({E}).axes(), (AxisSpec{E}));
}
