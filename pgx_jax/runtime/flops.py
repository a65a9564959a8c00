"""FLOP counts of jitted calls that respect loop trip counts.

XLA's cost analysis (``jax.jit(f).lower(*args).compile().cost_analysis()``) counts the body of
every loop once, whatever its trip count: a 100-step ``lax.scan`` costs the same as a 1-step
one (measured: jaxlib 0.10.2, CPU). PPO training and the surrogate solves are loops of loops,
so that number says nothing about them. :func:`count_flops` walks the jaxpr instead:

- ``dot_general``: 2 x (batch) x (free lhs) x (free rhs) x (contracted) multiply-adds;
- elementwise arithmetic and transcendental ops: one per output element;
- reductions and cumulative ops: one per input element;
- ``cholesky`` of [..., n, n]: n^3 / 3 per matrix; ``triangular_solve``: n^2 per right-hand side;
- data movement (reshape, gather, slice, select, broadcast, ...) and random bits: zero;
- ``scan`` bodies times their length; ``cond``: the most expensive branch; ``while`` bodies
  (data-dependent trip counts, e.g. a line search) times ``while_trips``, a number the caller
  states (measured or bounded) and reports next to the count.

:func:`xla_flops` returns XLA's own figure for reference.
"""

from __future__ import annotations

import dataclasses
import math

import jax

_ELEMENTWISE = frozenset(
    """add sub mul div rem pow integer_pow max min neg abs sign floor ceil round exp exp2 log log1p
    expm1 tanh logistic sin cos tan asin acos atan atan2 sinh cosh asinh acosh atanh sqrt rsqrt cbrt
    erf erfc erf_inv lgamma digamma square reciprocal nextafter""".split()
)
_REDUCTIONS = frozenset(
    "reduce_sum reduce_max reduce_min reduce_prod argmax argmin cumsum cumprod cummax cummin cumlogsumexp".split()
)


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """``flops``: the total; ``while_loops``: how many data-dependent loops were met (each body
    counted ``while_trips`` times); ``while_flops``: the part of ``flops`` inside them."""

    flops: float
    while_loops: int
    while_flops: float
    while_trips: float


def _size(aval) -> int:
    return math.prod(getattr(aval, "shape", ()))


def _dot_flops(eqn) -> float:
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    contracted = math.prod(lhs[d] for d in lhs_contracting)
    # output = batch x free lhs x free rhs; each output element costs `contracted` multiply-adds
    return 2.0 * _size(eqn.outvars[0].aval) * contracted


def _jaxpr_flops(jaxpr, while_trips: float) -> tuple[float, int, float]:
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # ClosedJaxpr -> Jaxpr
    total = whiles = in_while = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        p = eqn.params
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name in _ELEMENTWISE:
            total += _size(eqn.outvars[0].aval)
        elif name in _REDUCTIONS:
            total += _size(eqn.invars[0].aval)
        elif name == "cholesky":
            total += _size(eqn.invars[0].aval) * eqn.invars[0].aval.shape[-1] / 3
        elif name == "triangular_solve":  # a [..., n, n], b [..., n, k] (or [..., k, n])
            total += _size(eqn.invars[1].aval) * eqn.invars[0].aval.shape[-1]
        elif name == "scan":
            f, w, iw = _jaxpr_flops(p["jaxpr"], while_trips)
            total += p["length"] * f
            whiles += w
            in_while += p["length"] * iw
        elif name == "while":
            fb, wb, iwb = _jaxpr_flops(p["body_jaxpr"], while_trips)
            fc, wc, iwc = _jaxpr_flops(p["cond_jaxpr"], while_trips)
            f = while_trips * (fb + fc)
            total += f
            whiles += 1 + wb + wc
            in_while += f
        elif name == "cond":
            costs = [_jaxpr_flops(b, while_trips) for b in p["branches"]]
            best = max(costs, key=lambda c: c[0])
            total += best[0]
            whiles += best[1]
            in_while += best[2]
        else:
            sub = p.get("jaxpr") or p.get("call_jaxpr") or p.get("fun_jaxpr")
            if sub is not None and not callable(sub):
                f, w, iw = _jaxpr_flops(sub, while_trips)
                total += f
                whiles += w
                in_while += iw
    return total, int(whiles), in_while


def count_flops(fn, *args, while_trips: float = 1.0, **kwargs) -> FlopCount:
    """FLOPs of one call ``fn(*args, **kwargs)`` (traced, not run), loops counted by trip count.

    Args:
        fn: any JAX-traceable function (static arguments bound beforehand, e.g. with
            ``functools.partial``).
        while_trips: iterations assumed for each data-dependent ``while`` loop.

    Returns:
        :class:`FlopCount`.
    """
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    flops, whiles, in_while = _jaxpr_flops(closed.jaxpr, while_trips)
    return FlopCount(float(flops), whiles, float(in_while), float(while_trips))


def xla_flops(compiled) -> float:
    """XLA's own cost-analysis FLOPs of a compiled call (each loop body counted once)."""
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return float((ca or {}).get("flops", float("nan")))
