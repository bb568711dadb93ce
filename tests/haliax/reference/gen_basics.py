# Expected values for tests/haliax/test_reference.cpp: operations haliax already had, checked against the
# original. Run through scripts/haliax_ref_env --regenerate.
from emit import Emitter, hax, jnp

em = Emitter("basics")
B, C = hax.Axis("b", 2), hax.Axis("c", 3)
x = em.array("x", hax.arange((B, C)).astype(jnp.float64) - 2.5)
em.array("cumsum_c", hax.cumsum(x, C))
em.array("positive", x > 0)
em.array("argmax_c", hax.argmax(x, C))
em.array("sum_all", hax.sum(x))
em.array("sum_b", hax.sum(x, B))
em.write()
