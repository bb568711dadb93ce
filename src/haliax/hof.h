// Higher-order functions over named axes (Haliax's hof.py): scan, fold, map and vmap.
//
//   auto [carry, ys] = scan(f, "layers")(init, xs...);   // carry, y = f(carry, x_slices...) along "layers"
//   NamedArray total = fold(g, Pos)(zeros({Embed}), x);     // carry = g(carry, x_slices...)
//   NamedArray out = map(h, Batch)(x);                      // h(x_slice) for every slice, stacked on Batch
//   NamedArray out = vmap(h, {Batch, Beam})(x, weights);    // h sees arguments without Batch and Beam
//
// Each function is curried as in Haliax: it takes the function and the axis, and returns a callable that takes the
// arguments. Every argument, carry and output is a "tree" of NamedArrays: a NamedArray, or a std::vector,
// std::pair or std::tuple of trees (std::tuple<> plays Python's None). Each NamedArray leaf of the inputs that has
// the axis is sliced along it (one unbind per leaf, whose backward is one stack); a leaf without it is passed
// unchanged to every step. Outputs get the axis back as their FIRST axis (Haliax's scan, map and vmap all put it
// there), each output leaf stacked once at the end.
//
// Differences from Haliax, all because this is a loop over libtorch eager ops rather than a traced JAX program:
//  - Everything is a loop over the slices (libtorch 1.13 has no vmap in C++): vmap costs what map costs, and
//    vmap over {A, B} calls f A.size * B.size times.
//  - Leaves are NamedArrays only; values that are not arrays (flags, sizes, keys) are captured by f instead.
//  - An Axis whose size differs from an input's axis of that name is an error ("Found axis with same name but
//    different size", as Haliax's vmap says); Haliax's scan would pass such an input through unsliced.
//  - With gradient_checkpointing, f is called again in backward: it must capture by value, and only its arguments
//    (carry and inputs) receive gradients; tensors that f captures get none. JAX traces f and has neither rule.
//  - No unroll, no nested (sqrt-N) remat and no named save/offload policies: gradient_checkpointing is Haliax's
//    `remat=True` (keep each step's inputs, recompute the rest).
//  - Errors are haliax::ValueError. Haliax's own texts are kept ("scan got `length` argument of 4 but some inputs
//    had different leading axis sizes: xs[1] has leading dimension 5", naming inputs as if f were f(carry, *xs));
//    of JAX's vmap size message only the first line is; where Haliax fails without a message of its own (a name
//    no input has, an axis of size 0) ours says what is wrong. The carry check (same structure, axes in order and
//    dtype at every step) is jax.lax.scan's rule, made at each step instead of at trace time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "haliax/axis.h"
#include "haliax/named_array.h"

namespace haliax {

// Options of scan, fold and map (Haliax's keyword arguments).
struct ScanOptions {
  bool reverse = false;                 // run the steps from the last slice to the first; outputs stay in place
  bool gradient_checkpointing = false;  // Haliax's remat=True: recompute each step's activations in backward
};

namespace hof_detail {

// How a tree is flattened to its NamedArray leaves (in order) and rebuilt from them. `like` gives the structure
// (vector lengths); its leaves are not read.
template <typename T, typename = void>
struct Tree {
  static_assert(sizeof(T) == 0,
                "haliax scan/fold/map/vmap: arguments, carries and outputs must be NamedArray, or std::vector, "
                "std::pair or std::tuple of them; capture other values in the function instead");
};

template <>
struct Tree<NamedArray> {
  static void flatten(const NamedArray& a, std::vector<NamedArray>& out) { out.push_back(a); }
  static void paths(const NamedArray&, const std::string& path, std::vector<std::string>& out) { out.push_back(path); }
  static NamedArray rebuild(const NamedArray&, const std::vector<NamedArray>& leaves, size_t& pos) {
    return leaves.at(pos++);
  }
};

template <typename T>
struct Tree<std::vector<T>> {
  static void flatten(const std::vector<T>& v, std::vector<NamedArray>& out) {
    for (const T& e : v) Tree<T>::flatten(e, out);
  }
  static void paths(const std::vector<T>& v, const std::string& path, std::vector<std::string>& out) {
    for (size_t i = 0; i < v.size(); ++i) Tree<T>::paths(v[i], path + "[" + std::to_string(i) + "]", out);
  }
  static std::vector<T> rebuild(const std::vector<T>& like, const std::vector<NamedArray>& leaves, size_t& pos) {
    std::vector<T> out;
    out.reserve(like.size());
    for (const T& e : like) out.push_back(Tree<T>::rebuild(e, leaves, pos));
    return out;
  }
};

template <typename... Ts>
struct Tree<std::tuple<Ts...>> {
  using Self = std::tuple<Ts...>;
  static void flatten(const Self& t, std::vector<NamedArray>& out) {
    std::apply([&](const Ts&... e) { (Tree<Ts>::flatten(e, out), ...); }, t);
  }
  static void paths(const Self& t, const std::string& path, std::vector<std::string>& out) {
    size_t i = 0;
    std::apply([&](const Ts&... e) { (Tree<Ts>::paths(e, path + "[" + std::to_string(i++) + "]", out), ...); }, t);
    (void)i;  // unused for the empty tuple
  }
  static Self rebuild(const Self& like, const std::vector<NamedArray>& leaves, size_t& pos) {
    // Braced initialisation evaluates left to right, so the leaves are consumed in order.
    return std::apply([&](const Ts&... e) { return Self{Tree<Ts>::rebuild(e, leaves, pos)...}; }, like);
  }
};

template <typename A, typename B>
struct Tree<std::pair<A, B>> {
  using Self = std::pair<A, B>;
  static void flatten(const Self& p, std::vector<NamedArray>& out) {
    Tree<A>::flatten(p.first, out);
    Tree<B>::flatten(p.second, out);
  }
  static void paths(const Self& p, const std::string& path, std::vector<std::string>& out) {
    Tree<A>::paths(p.first, path + "[0]", out);
    Tree<B>::paths(p.second, path + "[1]", out);
  }
  static Self rebuild(const Self& like, const std::vector<NamedArray>& leaves, size_t& pos) {
    A a = Tree<A>::rebuild(like.first, leaves, pos);
    B b = Tree<B>::rebuild(like.second, leaves, pos);
    return Self(std::move(a), std::move(b));
  }
};

template <typename T>
std::vector<NamedArray> leaves(const T& t) {
  std::vector<NamedArray> out;
  Tree<T>::flatten(t, out);
  return out;
}

template <typename T>
T rebuild(const T& like, const std::vector<NamedArray>& leaves) {
  size_t pos = 0;
  T out = Tree<T>::rebuild(like, leaves, pos);
  if (pos != leaves.size()) throw std::logic_error("haliax hof: tree rebuilt from the wrong number of leaves");
  return out;
}

// The structure of `t` without its arrays (leaves undefined): what a checkpointed step keeps until backward.
template <typename T>
T skeleton(const T& t) {
  return rebuild(t, std::vector<NamedArray>(leaves(t).size()));
}

// Which input leaves are sliced along the axis, and the axis with its size. `op` and `paths` (one per leaf, e.g.
// "xs[1][0]") name things in errors. Throws Haliax's "scan got `length` argument of ..." when sliced leaves
// disagree on the size, and ValueError when a named axis appears in no input.
struct SlicePlan {
  Axis axis;
  std::vector<bool> sliced;
};
SlicePlan plan_slices(const std::string& op, const AxisSelector& axis, const std::vector<NamedArray>& leaves,
                      const std::vector<std::string>& paths);

// The per-step leaves: slice i of each sliced leaf (one unbind per leaf), the leaf itself otherwise.
class StepInputs {
 public:
  StepInputs(const SlicePlan& plan, const std::vector<NamedArray>& leaves);
  std::vector<NamedArray> at(int64_t step) const;

 private:
  std::vector<NamedArray> whole_;                // the leaves passed unchanged (undefined where sliced)
  std::vector<std::vector<NamedArray>> slices_;  // per leaf: its slices (empty where passed unchanged)
};

// Throws unless the carry kept its number of leaves, and each leaf its axes (names, sizes, order) and dtype, as
// jax.lax.scan requires.
void check_carry(const std::string& op, const std::vector<NamedArray>& before, const std::vector<NamedArray>& after,
                 int64_t step);

// Stacks leaf k of every step along `axis` (first), for every k.
std::vector<NamedArray> stack_steps(const std::string& op, const Axis& axis,
                                    const std::vector<std::vector<NamedArray>>& per_step);

// Whether a scan with these options checkpoints on this thread (nn::checkpointing_enabled() can turn it off).
bool checkpointing(const ScanOptions& options);

// outputs = fn(inputs) through nn::checkpoint: only `inputs` are kept for backward, fn runs again there.
using LeavesFn = std::function<std::vector<NamedArray>(const std::vector<NamedArray>&)>;
std::vector<NamedArray> checkpointed(const LeavesFn& fn, const std::vector<NamedArray>& inputs);

// One step through checkpointed(): the carry's leaves and the step inputs go in, the (carry, y) leaves come out.
template <typename Step, typename Carry>
auto checkpointed_step(const std::shared_ptr<Step>& step, const Carry& carry, int64_t i,
                       const std::vector<NamedArray>& inputs) {
  using Result = std::decay_t<decltype((*step)(carry, i, inputs))>;
  std::vector<NamedArray> flat = leaves(carry);
  const size_t n_carry = flat.size();
  flat.insert(flat.end(), inputs.begin(), inputs.end());
  auto result_like = std::make_shared<std::optional<Result>>();
  LeavesFn fn = [step, carry_like = skeleton(carry), n_carry, i, result_like](const std::vector<NamedArray>& in) {
    std::vector<NamedArray> carry_leaves(in.begin(), in.begin() + static_cast<long>(n_carry));
    std::vector<NamedArray> rest(in.begin() + static_cast<long>(n_carry), in.end());
    Result r = (*step)(rebuild(carry_like, carry_leaves), i, rest);
    if (!*result_like) *result_like = skeleton(r);  // only the structure: backward's recompute must not be kept
    return leaves(r);
  };
  std::vector<NamedArray> out = checkpointed(fn, flat);
  return rebuild(**result_like, out);
}

[[noreturn]] void throw_empty_axis(const std::string& op, const Axis& axis);

// The loop behind scan, fold, map and vmap (and Stacked::scan): (carry, y_i) = step(carry, i, inputs_at(i)) for
// i = 0..n-1 (n-1..0 with reverse), returning the last carry and the y_i stacked on `axis` at position i.
// step returns std::pair<Carry, Y>; with checkpointing it is copied and kept for backward.
template <typename Carry, typename InputsAt, typename Step>
auto scan_loop(const std::string& op, const Axis& axis, const ScanOptions& options, Carry carry,
               const InputsAt& inputs_at, const Step& step) {
  using Result = std::decay_t<decltype(step(carry, int64_t{0}, inputs_at(0)))>;
  using Y = typename Result::second_type;
  const int64_t n = axis.size;
  const bool ckpt = checkpointing(options);
  std::shared_ptr<Step> shared_step = ckpt ? std::make_shared<Step>(step) : nullptr;
  std::vector<std::vector<NamedArray>> y_leaves(static_cast<size_t>(n));
  std::optional<Y> y_like;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = options.reverse ? n - 1 - k : k;
    Result r = ckpt ? checkpointed_step(shared_step, carry, i, inputs_at(i)) : step(carry, i, inputs_at(i));
    check_carry(op, leaves(carry), leaves(r.first), i);
    y_leaves[static_cast<size_t>(i)] = leaves(r.second);
    if (!y_like) y_like = skeleton(r.second);
    carry = std::move(r.first);
  }
  if (!y_like) {
    if constexpr (std::is_default_constructible_v<Y>) {
      if (leaves(Y{}).empty()) return std::pair<Carry, Y>(std::move(carry), Y{});  // fold: nothing to stack
    }
    throw_empty_axis(op, axis);
  }
  return std::pair<Carry, Y>(std::move(carry), rebuild(*y_like, stack_steps(op, axis, y_leaves)));
}

// The argument trees as one list of leaves, with paths "<name>[k]..." (or `single_name` for a lone argument).
template <typename... Xs>
void flatten_args(const std::string& name, const std::string& single_name, std::vector<NamedArray>& leaves_out,
                  std::vector<std::string>& paths_out, const Xs&... xs) {
  size_t k = 0;
  auto one = [&](const auto& x) {
    using X = std::decay_t<decltype(x)>;
    Tree<X>::flatten(x, leaves_out);
    std::string path = sizeof...(Xs) == 1 && !single_name.empty() ? single_name : name + "[" + std::to_string(k) + "]";
    Tree<X>::paths(x, path, paths_out);
    ++k;
  };
  (one(xs), ...);
  (void)one;  // unused when there are no arguments
}

// Runs the loop for f(carry, x_slices...) -> (carry, y) over the given argument trees.
template <typename Carry, typename F, typename... Xs>
auto scan_args(const std::string& op, const std::string& arg_name, const std::string& single_name, const F& f,
               const AxisSelector& axis, const ScanOptions& options, const Carry& init, const Xs&... xs) {
  std::vector<NamedArray> flat;
  std::vector<std::string> paths;
  flatten_args(arg_name, single_name, flat, paths, xs...);
  SlicePlan plan = plan_slices(op, axis, flat, paths);
  StepInputs inputs(plan, flat);
  auto inputs_at = [&inputs](int64_t i) { return inputs.at(i); };
  auto step = [f, like = std::make_tuple(skeleton(xs)...)](const Carry& c, int64_t, const std::vector<NamedArray>& in) {
    return std::apply([&](const auto&... x) { return f(c, x...); }, rebuild(like, in));
  };
  return scan_loop(op, plan.axis, options, init, inputs_at, step);
}

template <typename T>
struct IsPairLike : std::false_type {};
template <typename A, typename B>
struct IsPairLike<std::pair<A, B>> : std::true_type {};
template <typename A, typename B>
struct IsPairLike<std::tuple<A, B>> : std::true_type {};

}  // namespace hof_detail

// scan(f, axis, options)(init, xs...) -> std::pair(carry, ys): carry, y = f(carry, x_slices...) for each position
// of `axis` (a name or an Axis); inputs without the axis pass through; ys get the axis first. f returns a
// std::pair or 2-tuple (carry, y); the carry must keep its structure, axes and dtype. Haliax: hax.scan(f, axis,
// reverse=, remat=)(init, *xs). An Axis with no input carrying it runs axis.size steps.
template <typename F>
class Scan {
 public:
  Scan(F f, AxisSelector axis, ScanOptions options) : f_(std::move(f)), axis_(std::move(axis)), options_(options) {}

  template <typename Carry, typename... Xs>
  auto operator()(const Carry& init, const Xs&... xs) const {
    using R = std::decay_t<std::invoke_result_t<const F&, const Carry&, const Xs&...>>;
    static_assert(hof_detail::IsPairLike<R>::value, "scan: f must return std::pair or std::tuple (carry, y)");
    using Y = std::decay_t<std::tuple_element_t<1, R>>;
    auto pair_f = [f = f_](const Carry& c, const Xs&... x) {
      R r = f(c, x...);
      return std::pair<Carry, Y>(std::get<0>(std::move(r)), std::get<1>(std::move(r)));
    };
    return hof_detail::scan_args("scan", "xs", "", pair_f, axis_, options_, init, xs...);
  }

 private:
  F f_;
  AxisSelector axis_;
  ScanOptions options_;
};

// fold(f, axis, options)(init, xs...) -> carry: carry = f(carry, x_slices...) along `axis`. Haliax: hax.fold.
template <typename F>
class Fold {
 public:
  Fold(F f, AxisSelector axis, ScanOptions options) : f_(std::move(f)), axis_(std::move(axis)), options_(options) {}

  template <typename Carry, typename... Xs>
  Carry operator()(const Carry& init, const Xs&... xs) const {
    auto pair_f = [f = f_](const Carry& c, const Xs&... x) {
      return std::pair<Carry, std::tuple<>>(f(c, x...), std::tuple<>{});
    };
    return hof_detail::scan_args("fold", "args", "", pair_f, axis_, options_, init, xs...).first;
  }

 private:
  F f_;
  AxisSelector axis_;
  ScanOptions options_;
};

// map(f, axis, options)(xs...) -> ys: f(x_slices...) for each position of `axis`, stacked on it (first).
// Haliax: hax.map(f, axis)(x), which takes one argument (a tree); several are accepted here.
template <typename F>
class Map {
 public:
  Map(F f, AxisSelector axis, ScanOptions options) : f_(std::move(f)), axis_(std::move(axis)), options_(options) {}

  template <typename... Xs>
  auto operator()(const Xs&... xs) const {
    using Y = std::decay_t<std::invoke_result_t<const F&, const Xs&...>>;
    auto pair_f = [f = f_](const std::tuple<>&, const Xs&... x) {
      return std::pair<std::tuple<>, Y>(std::tuple<>{}, f(x...));
    };
    return hof_detail::scan_args("map", "xs", "x", pair_f, axis_, options_, std::tuple<>{}, xs...).second;
  }

 private:
  F f_;
  AxisSelector axis_;
  ScanOptions options_;
};

// vmap(f, axes)(args...) -> outputs: f sees every argument without the axes (arguments lacking them pass through
// unchanged) and its outputs get them back first, in the order given (vmap over {A, B} gives (A, B, ...)), as
// Haliax's hax.vmap(f, axis)(*args). A loop over the slices, not a vectorising transform (see the file comment).
template <typename F>
class Vmap {
 public:
  Vmap(F f, AxisSelection axes) : f_(std::move(f)), axes_(std::move(axes)) {}

  template <typename... Args>
  std::decay_t<std::invoke_result_t<const F&, const Args&...>> operator()(const Args&... args) const {
    using Y = std::decay_t<std::invoke_result_t<const F&, const Args&...>>;
    if (axes_.empty()) return f_(args...);
    // The first axis is the outermost loop, so it ends up first in the outputs.
    std::vector<AxisSelector> rest(axes_.begin() + 1, axes_.end());
    Vmap inner(f_, AxisSelection(rest));
    auto pair_f = [inner](const std::tuple<>&, const Args&... a) {
      return std::pair<std::tuple<>, Y>(std::tuple<>{}, inner(a...));
    };
    return hof_detail::scan_args("vmap", "args", "", pair_f, axes_[0], ScanOptions{}, std::tuple<>{}, args...).second;
  }

 private:
  F f_;
  AxisSelection axes_;
};

template <typename F>
Scan<std::decay_t<F>> scan(F&& f, const AxisSelector& axis, ScanOptions options = {}) {
  return Scan<std::decay_t<F>>(std::forward<F>(f), axis, options);
}
template <typename F>
Fold<std::decay_t<F>> fold(F&& f, const AxisSelector& axis, ScanOptions options = {}) {
  return Fold<std::decay_t<F>>(std::forward<F>(f), axis, options);
}
template <typename F>
Map<std::decay_t<F>> map(F&& f, const AxisSelector& axis, ScanOptions options = {}) {
  return Map<std::decay_t<F>>(std::forward<F>(f), axis, options);
}
template <typename F>
Vmap<std::decay_t<F>> vmap(F&& f, const AxisSelection& axes) {
  return Vmap<std::decay_t<F>>(std::forward<F>(f), axes);
}

}  // namespace haliax
