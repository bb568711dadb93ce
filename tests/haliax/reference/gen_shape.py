# Expected values for tests/haliax/test_shape_ops.cpp: construction and shape ops (tile, repeat, tril/triu,
# *_like with dtype, arange, pad, roll, flip, top_k, sort/argsort, cumsum/cumprod dtypes, clip broadcasting).
# Run through scripts/haliax_ref_env --regenerate.
from emit import Emitter, hax, jnp

em = Emitter("shape")
B, C, R, K = hax.Axis("b", 2), hax.Axis("c", 3), hax.Axis("r", 3), hax.Axis("k", 4)
x = em.array("x", hax.arange((B, C)).astype(jnp.float64) * 1.5 - 2.0)

# tile: existing axes grow, new ones go in front with size = reps
em.array("tile_c2_new3", hax.tile(x, {C: 2, "n": 3}))
em.array("tile_b3", hax.tile(x, {"b": 3}))
em.array("repeat_c2", hax.repeat(x, 2, C))

# tril/triu: the two axes go last, in the order given
m = em.array("m", hax.arange((B, R, K)).astype(jnp.float64) + 1.0)
em.array("tril_r_k", hax.tril(m, R, K))
em.array("tril_k_r_1", hax.tril(m, K, R, k=1))
em.array("triu_r_k_m1", hax.triu(m, R, K, k=-1))
em.array("triu_b_k", hax.triu(m, B, K))
em.error("tril_missing", lambda: hax.tril(m, R, "d"))

# creation with a dtype; arange over several axes, dtype from start/step
em.array("zeros_like_int", hax.zeros_like(x, dtype=jnp.int32))
em.array("ones_like_bool", hax.ones_like(x, dtype=jnp.bool_))
em.array("full_like_int", hax.full_like(x, 7.9, dtype=jnp.int64))
em.array("full_like_keep", hax.full_like(x, 7.25))
em.array("arange_bc_int", hax.arange((B, C), start=1, step=2))
em.array("arange_bc_float", hax.arange((B, C), start=0.5, step=0.25))
em.array("arange_c_halfstep", hax.arange(C, start=1, step=0.5))
em.array("arange_c_dtype", hax.arange(C, start=2, step=3, dtype=jnp.float64))

# pad: constant (the only mode Haliax's pad accepts), other modes as jnp.pad computes them
em.array("pad_c_1_2", hax.pad(x, {C: (1, 2)}, constant_values=-1.0))
em.array("pad_b_c", hax.pad(x, {"b": (0, 1), "c": (2, 0)}))
em.array("pad_ignores_missing", hax.pad(x, {"d": (1, 1), C: (0, 1)}))
em.error("pad_negative", lambda: hax.pad(x, {C: (-1, 0)}))
em.error("pad_reflect_in_haliax", lambda: hax.pad(x, {C: (1, 1)}, mode="reflect"))
for mode in ["edge", "reflect", "symmetric", "wrap"]:
    em.array(f"jnp_pad_{mode}", hax.named(jnp.pad(x.array, ((1, 0), (4, 5)), mode=mode), ("b", "c")))
em.array("pad_left_c5", hax.pad_left(x, C, C.resize(5), 9.0))
em.error("pad_left_shrink", lambda: hax.pad_left(x, C, C.resize(2)))

# roll: one shift for all axes, or one per axis
em.array("roll_c1", hax.roll(x, 1, C))
em.array("roll_b1_c2", hax.roll(x, (1, 2), (B, C)))
em.array("roll_both_m1", hax.roll(x, -1, (B, C)))
em.array("roll_named_shift", hax.roll(x, hax.named(jnp.array(2), ()), "c"))
em.error("roll_missing", lambda: hax.roll(x, 1, "d"))
em.array("jnp_flip_c", hax.named(jnp.flip(x.array, axis=1), ("b", "c")))
em.array("jnp_flip_bc", hax.named(jnp.flip(x.array, axis=(0, 1)), ("b", "c")))

# top_k, sort, argsort with ties (ties: lower index first)
t = em.array("t", hax.named(jnp.array([[3.0, 1.0, 3.0, 2.0], [0.0, 5.0, 5.0, 5.0]]), (B, K)))
v, i = hax.top_k(t, K, 2)
em.array("top_k_values", v)
em.array("top_k_indices", i)
v, i = hax.top_k(t, "k", 3, new_axis="top")
em.array("top_k_new_values", v)
em.array("top_k_new_indices", i)
em.error("top_k_too_many", lambda: hax.top_k(t, K, 5))
em.error("top_k_missing", lambda: hax.top_k(t, "d", 1))
em.array("sort_k", hax.sort(t, K))
em.array("argsort_k_stable", hax.argsort(t, K, stable=True))

# scans keep integer dtypes; bool counts as int
ints = em.array("ints", hax.arange((B, C), start=1).astype(jnp.int32))
em.array("cumsum_int", hax.cumsum(ints, C))
em.array("cumprod_int", hax.cumprod(ints, "c"))
em.array("cumsum_bool", hax.cumsum(x > 0, C))
em.array("cumsum_float_dtype", hax.cumsum(ints, B, dtype=jnp.float64))

# clip: the three operands broadcast together
lo = em.array("lo", hax.named(jnp.array([-1.0, 0.0, 1.0]), (C,)))
em.array("clip_lo_named", hax.clip(x, lo, 2.0))
xb = em.array("xb", hax.named(jnp.array([-3.0, 3.0]), (B,)))
hi = em.array("hi", hax.arange((B, C)).astype(jnp.float64))
em.array("clip_three_way", hax.clip(xb, lo, hi))
em.array("clip_upper_only", hax.clip(x, None, 0.5))
em.error("clip_no_subset", lambda: hax.clip(x, hax.arange(hax.Axis("d", 2)).astype(jnp.float64), 3.0))

em.write()
