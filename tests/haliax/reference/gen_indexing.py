# Expected values for tests/haliax/test_at.cpp: selection by name (numpy's advanced-index placement as Haliax
# computes it), dslice reads and writes, x.at[...] updates with repeated and out-of-range positions (values
# and gradients) and updated_slice with per-row starts. Run through scripts/haliax_ref_env --regenerate.
import jax

from emit import Emitter, hax, jnp

em = Emitter("indexing")
A, B, C = hax.Axis("a", 2), hax.Axis("b", 3), hax.Axis("c", 5)
K, M = hax.Axis("k", 4), hax.Axis("m", 3)
x = em.array("x", hax.arange((A, B, C)).astype(jnp.float64) * 1.5 - 7.0)
ik = em.array("ik", hax.named(jnp.array([1, 0, 1, 1]), K))  # positions along a
jk = em.array("jk", hax.named(jnp.array([4, 0, 2, 4]), K))  # along c, with a repeat
jm = em.array("jm", hax.named(jnp.array([3, 1, 0]), M))
jb = em.array("jb", hax.named(jnp.array([4, 2, 0]), B))  # along c, one per b
start = em.array("start", jnp.array(3))

# --- reads: placement of advanced-index axes -----------------------------------------------------------
em.array("int_and_slice", x[{"b": 1, "c": slice(0, 2)}])
em.array("adv_contiguous", x[{"b": 2, "c": jk}])  # int + array next to each other: in place
em.array("adv_separated", x[{"a": ik, "c": jk}])  # separated by the kept b: broadcast axes first
em.array("adv_int_separated", x[{"a": 1, "c": jk}])
em.array("adv_two_axes", x[{"a": ik, "c": jm}])  # k and m broadcast to a grid, then b
em.array("adv_shares_kept_axis", x[{"c": jb}])  # b is matched (an arange), not duplicated
em.array("step_slice", x[{"c": slice(None, None, 2), "a": -1}])

# --- dslice reads: past either end reads 0, negative positions count from the end -------------------------
em.array("ds_read", x[{"c": hax.ds(1, 3)}])
em.array("ds_read_past_end", x[{"c": hax.ds(3, 4)}])
em.array("ds_read_negative", x[{"c": hax.ds(-2, 4)}])
em.array("ds_read_before_start", x[{"c": hax.ds(-7, 4)}])
em.array("ds_read_array_start", x[{"c": hax.ds(start, 2)}])
em.array("ds_read_with_int", x[{"a": 1, "c": hax.ds(1, 2)}])  # a dslice is advanced: its axis goes first
em.array("ds_block", x[{"b": hax.dblock(1, 2)}])

# --- at: get -------------------------------------------------------------------------------------------
em.array("get_default_clamps", x.at[{"c": hax.ds(3, 4)}].get())
em.array("get_fill_nan", x.at[{"c": hax.ds(3, 4)}].get(mode="fill"))
em.array("get_fill_value", x.at[{"c": hax.ds(3, 4)}].get(mode="fill", fill_value=-1.0))
xi = em.array("xi", hax.arange((A, C), dtype=jnp.int32))
em.array("get_fill_int", xi.at[{"c": hax.ds(3, 4)}].get(mode="fill"))  # the lowest int32
oob = em.array("oob", hax.named(jnp.array([0, 7, -1, -9]), K))
em.array("get_oob_array", x.at[{"a": 0, "b": 0, "c": oob}].get())

# --- at: updates ---------------------------------------------------------------------------------------
v_ac = em.array("v_ac", hax.named(jnp.array([[10.0, 20.0], [30.0, 40.0]]), (A, C.resize(2))))
em.array("set_int_slice", x.at[{"b": 1, "c": slice(0, 2)}].set(v_ac))
em.array("set_scalar", x.at[{"b": 1, "c": slice(0, 2)}].set(0.5))
v_c = em.array("v_c", hax.named(jnp.array([2.0, -3.0]), C.resize(2)))
em.array("add_broadcast", x.at[{"b": 1, "c": slice(0, 2)}].add(v_c))  # broadcast over a by name
vk = em.array("vk", hax.named(jnp.array([10.0, 20.0, 30.0, 40.0]), K))
sel = {"a": 0, "b": 0, "c": jk}
em.array("set_dup", x.at[sel].set(vk))
em.array("add_dup", x.at[sel].add(vk))
em.array("multiply_dup", x.at[sel].multiply(vk))
em.array("divide_dup", x.at[sel].divide(vk))
em.array("min_dup", x.at[sel].min(hax.named(jnp.array([-1.0, -20.0, 0.0, -30.0]), K)))
em.array("max_dup", x.at[sel].max(vk))
em.array("power_dup", x.at[sel].power(hax.named(jnp.array([2.0, 3.0, 3.0, 2.0]), K)))
em.array("apply_dup", x.at[sel].apply(lambda t: t * 2.0 + 3.0))  # applied twice where c=4 repeats
em.array("set_separated", x.at[{"a": ik, "c": jk}].set(hax.named(jnp.arange(12.0).reshape(4, 3), (K, B))))
em.array("set_shares_kept_axis", x.at[{"c": jb}].set(100.0))
em.array("set_ds_past_end", x.at[{"c": hax.ds(3, 4)}].set(-1.0))
em.array("set_ds_negative", x.at[{"c": hax.ds(-2, 4)}].set(-1.0))
em.array("add_ds_array_start", x.at[{"c": hax.ds(start, 3)}].add(1.0))
em.array("set_oob_dropped", x.at[{"a": 0, "b": 0, "c": oob}].set(vk))
em.array("set_oob_clip", x.at[{"a": 0, "b": 0, "c": oob}].set(vk, mode="clip"))

# Gradients of sum(w * result) with respect to x and the update.
w = em.array("w", hax.named(jnp.linspace(-1.0, 2.0, 30).reshape(2, 3, 5), (A, B, C)))


def grads(name, f, upd):
    gx, gu = jax.grad(lambda xx, uu: hax.sum(w * f(xx, uu)).scalar(), argnums=(0, 1))(x, upd)
    em.array(name + "_dx", gx)
    em.array(name + "_du", gu)


grads("set_dup_grad", lambda xx, uu: xx.at[sel].set(uu), vk)
grads("add_dup_grad", lambda xx, uu: xx.at[sel].add(uu), vk)
ties = em.array("ties", hax.named(jnp.array([-7.0, 5.0, -4.0, -7.0]), K))  # x[0,0,4] = -1, x[0,0,0] = -7
grads("max_tie_grad", lambda xx, uu: xx.at[sel].max(uu), ties)
grads("min_tie_grad", lambda xx, uu: xx.at[sel].min(uu), ties)
grads("set_ds_grad", lambda xx, uu: xx.at[{"c": hax.ds(3, 4)}].set(uu), hax.named(jnp.arange(4.0), C.resize(4)))

# Batched selectors (after Haliax's test_scatter_gather.py): index arrays that share axes with the array.
Bs, Ss, Vs, Xs, Zs, Ys = (hax.Axis(n, s) for n, s in [("batch", 2), ("seq", 3), ("vocab", 5), ("x", 4), ("z", 3), ("y", 5)])
logits = em.array("logits", hax.arange((Bs, Ss, Vs)).astype(jnp.float64))
tok = em.array("tok", hax.named(jnp.array([[4, 0, 2], [1, 1, 3]]), (Bs, Ss)))
em.array("sg_batched_gather", logits[{"vocab": tok}])
em.array("sg_batched_add", logits.at[{"vocab": tok}].add(hax.ones((Bs, Ss), dtype=jnp.float64)))
em.array("sg_batched_set", logits.at[{"vocab": tok}].set(-1.0))
grid = em.array("grid", hax.arange((Bs, Xs, Zs, Ys)).astype(jnp.float64))
ix = em.array("ix", hax.named(jnp.array([3, 1]), Bs))
iy = em.array("iy", hax.named(jnp.array([0, 4]), Bs))
em.array("sg_noncontiguous", grid[{"x": ix, "y": iy}])  # batch matched, then z
tok3 = em.array("tok3", tok % 3)
em.array("sg_dslice_then_select", logits[{"vocab": hax.ds(1, 3)}][{"vocab": tok3}])

# --- updated_slice -------------------------------------------------------------------------------------
P, Bt, E = hax.Axis("pos", 6), hax.Axis("batch", 3), hax.Axis("e", 2)
cache = em.array("cache", hax.arange((P, Bt)).astype(jnp.float64))
row_start = em.array("row_start", hax.named(jnp.array([0, 2, 5]), Bt))  # 5 is clamped to 4
u_pos = em.array("u_pos", hax.named(jnp.array([100.0, 200.0]), P.resize(2)))
em.array("us_per_row_shared_update", hax.updated_slice(cache, {"pos": row_start}, u_pos))
u_rows = em.array("u_rows", hax.arange((Bt, P.resize(2))).astype(jnp.float64) * -1.0 - 1.0)
em.array("us_per_row_update", hax.updated_slice(cache, {"pos": row_start}, u_rows))
u_tok = em.array("u_tok", hax.named(jnp.array([7.0, 8.0, 9.0]), Bt))
neg_rows = em.array("neg_rows", hax.named(jnp.array([-1, -6, 2]), Bt))  # 5 -> clamped to 4, 0, 2
em.array("us_negative_row_start", hax.updated_slice(cache, {"pos": neg_rows}, u_pos))
em.array("us_per_row_one_token", hax.updated_slice(cache, {"pos": row_start}, u_tok))
cache3 = em.array("cache3", hax.arange((E, P, Bt)).astype(jnp.float64))
e_start = em.array("e_start", hax.named(jnp.array([[1, 3, 0], [4, 4, 2]]), (E, Bt)))
em.array("us_two_mapped_axes", hax.updated_slice(cache3, {"pos": e_start}, u_pos))
plain = em.array("plain", hax.zeros((P, E), dtype=jnp.float64))
em.array("us_missing_axis_broadcasts", hax.updated_slice(plain, {"pos": 1, "e": 1}, u_pos))
em.array("us_negative_start", hax.updated_slice(plain, {"pos": -3}, u_pos))
em.array("us_scalar_1d", hax.updated_slice(hax.zeros(P, dtype=jnp.float64), {"pos": 2}, hax.named(jnp.array(5.0), ())))
em.array("us_0d_start", hax.updated_slice(plain, {"pos": start}, u_pos))

# slice with a runtime start (jax.lax.dynamic_slice): negative counts from the end, then clamped.
em.array("slice_negative_start", hax.slice(x, "c", start=jnp.array(-2), length=2))
em.array("slice_start_clamped", hax.slice(x, "c", start=jnp.array(4), length=2))

# --- errors --------------------------------------------------------------------------------------------
em.error("err_axis_not_found", lambda: x[{"d": 0}])
em.error("err_at_extra_axes", lambda: x.at[{"b": 1}].set(hax.named(jnp.zeros((2, 4)), (A, K))))
em.array("adv_kept_axis_matched", x[{"a": hax.named(jnp.array([0, 1, 0]), B)}])  # b kept, also named by the index
em.error("err_us_start_axis", lambda: hax.updated_slice(plain, {"pos": row_start}, u_pos))
em.error("err_us_unknown_axis", lambda: hax.updated_slice(plain, {"pos": 0, "extra": 0}, u_pos))
em.error("err_us_too_large", lambda: hax.updated_slice(plain, {"pos": 5}, u_pos))
em.write()
