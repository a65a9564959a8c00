"""Task layouts drawn at random: a seeded generator per family with planted structure.

A family's default layout is one example, and settings chosen on it prove nothing about the
next user's tasks. :func:`random_layout` draws a new layout of the same family from a seed:

- the number of planted groups k from those the family allows (one motor polarity per group
  where that is the structure: k = 2), then the number of tasks n from the family's range;
- the group sizes as a random composition of n into k parts of at least two tasks each
  (uniform over the compositions, so uneven sizes are the rule, balanced ones the exception);
- each task's physics or reward parameters within the family's ranges, around its group's
  centre (a motor polarity, a velocity or gravity band, a walking direction, a goal region, a
  dominant objective);
- the task order, shuffled (a name is the task's position and its parameters).

Each entry carries its planted ``group``; the entries pass :func:`pgx_jax.families.registry.validate_tasks` of their
family. From the CLI: ``--layout random:SEED`` (the drawn tasks are written to the run's output
as ``tasks.json``); from Python: ``make_family(name, random_layout(name, seed))``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

GRAVITY_RANGE = (1.62, 19.6)  # the Moon's to twice Earth's (m/s^2), as the default layouts span


@dataclasses.dataclass(frozen=True)
class LayoutSpec:
    """How one family's layouts are drawn.

    Attributes:
        tasks: (min, max) number of tasks n, inclusive.
        groups: the numbers of planted groups k a layout may have.
        draw: ``(rng, sizes) -> entries`` without names, group ``g`` holding ``sizes[g]`` tasks,
            each entry with the family's fields and its ``group``.
        planted: one line: what the planted groups are.
    """

    tasks: tuple[int, int]
    groups: tuple[int, ...]
    draw: Callable[[np.random.Generator, list[int]], list[dict]]
    planted: str


def _centres(rng: np.random.Generator, k: int, lo: float, hi: float, gap: float, *, circular: bool = False):
    """k sorted centres in [lo, hi) at least ``gap`` apart (on a circle of circumference hi - lo
    when ``circular``), drawn uniformly among such sets by rejection."""
    span = hi - lo
    for _ in range(10_000):
        c = np.sort(rng.uniform(lo, hi, k))
        d = np.diff(c)
        if circular and k > 1:
            d = np.append(d, span - (c[-1] - c[0]))
        if k == 1 or d.min() >= gap:
            return c
    raise RuntimeError(f"no {k} centres {gap} apart in [{lo}, {hi}]")  # ranges below make this unreachable


def _motor_poles(fields: dict[str, tuple[float, float, bool]]):
    """A draw for motor-polarity families: group 0 wired forward (+1), group 1 reversed (-1);
    every other field uniform in its (lo, hi), in the logarithm where the flag says so."""

    def draw(rng, sizes):
        out = []
        for group, size in enumerate(sizes):
            for _ in range(size):
                entry = {}
                for name, (lo, hi, log) in fields.items():
                    x = np.exp(rng.uniform(np.log(lo), np.log(hi))) if log else rng.uniform(lo, hi)
                    entry[name] = round(float(x), 4)
                out.append(dict(entry, motor=1.0 if group == 0 else -1.0, group=group))
        return out

    return draw


def _cheetah_velocities(rng, sizes):
    """Target-velocity bands: centres in [-1.75, 3.25] m/s at least 1.5 apart, members within
    +-0.25 of their centre (the default range is -2 to 3.5)."""
    centres = _centres(rng, len(sizes), -1.75, 3.25, 1.5)
    return [
        {"velocity": round(float(c + rng.uniform(-0.25, 0.25)), 3), "group": g}
        for g, (c, size) in enumerate(zip(centres, sizes, strict=True))
        for _ in range(size)
    ]


def _gravity_worlds(rng, sizes):
    """Gravity bands: centres in log g across the Moon's to twice Earth's at least a factor 2.2
    apart, members within a factor 1.15 of their centre; torso mass x0.7-1.5."""
    lo, hi = np.log(GRAVITY_RANGE[0] * 1.15), np.log(GRAVITY_RANGE[1] / 1.15)
    centres = _centres(rng, len(sizes), lo, hi, np.log(2.2))
    out = []
    for g, (c, size) in enumerate(zip(centres, sizes, strict=True)):
        for _ in range(size):
            gravity = float(np.exp(c + rng.uniform(-np.log(1.15), np.log(1.15))))
            out.append({"gravity": round(gravity, 3), "torso_mass": round(float(rng.uniform(0.7, 1.5)), 3), "group": g})
    return out


def _directions(rng, sizes):
    """Walking directions: centres on the circle at least 75 degrees apart, members within +-12
    degrees of their centre (radians in (-pi, pi])."""
    centres = _centres(rng, len(sizes), 0.0, 360.0, 75.0, circular=True)
    out = []
    for g, (c, size) in enumerate(zip(centres, sizes, strict=True)):
        for _ in range(size):
            deg = (c + rng.uniform(-12.0, 12.0) + 180.0) % 360.0 - 180.0
            out.append({"angle": round(math.radians(deg), 6), "group": g})
    return out


def _goal_regions(rng, sizes):
    """Goal regions of the reachable disc: centre angles at least 75 degrees apart, members within
    +-15 degrees of their region's angle at radius 0.1-0.19 m."""
    centres = _centres(rng, len(sizes), 0.0, 360.0, 75.0, circular=True)
    out = []
    for g, (c, size) in enumerate(zip(centres, sizes, strict=True)):
        for _ in range(size):
            a, r = math.radians(c + rng.uniform(-15.0, 15.0)), rng.uniform(0.10, 0.19)
            out.append({"goal": [round(r * math.cos(a), 4), round(r * math.sin(a), 4)], "group": g})
    return out


def _dominant_objectives(rng, sizes):
    """Weightings of (forward, backward, height, energy): each group is dominated by one of the
    first three objectives (k of them, drawn), weight 0.7-1.5; each other of the three gets up to
    0.2 with probability 1/2; energy 0.001-0.05."""
    dominant = rng.permutation(3)[: len(sizes)]
    out = []
    for g, (d, size) in enumerate(zip(dominant, sizes, strict=True)):
        for _ in range(size):
            w = [float(rng.uniform(0.0, 0.2)) if rng.random() < 0.5 else 0.0 for _ in range(3)]
            w[d] = float(rng.uniform(0.7, 1.5))
            out.append({"weights": [round(x, 3) for x in w] + [round(float(rng.uniform(0.001, 0.05)), 4)], "group": g})
    return out


def _two_bands(field: str, bands: tuple[tuple[float, float], tuple[float, float]]):
    """A draw of one scalar field, uniform in group g's band."""

    def draw(rng, sizes):
        return [
            {field: round(float(rng.uniform(*bands[g])), 3), "group": g}
            for g, size in enumerate(sizes)
            for _ in range(size)
        ]

    return draw


LAYOUTS: dict[str, LayoutSpec] = {
    "pendulum-physics": LayoutSpec(
        (8, 12),
        (2,),
        _motor_poles(
            {"gravity": (*GRAVITY_RANGE, False), "pole_mass": (0.5, 2.0, False), "pole_length": (0.5, 1.5, False)}
        ),
        "motor polarity (forward / reversed)",
    ),
    "cartpole-physics": LayoutSpec(
        (8, 12),
        (2,),
        _motor_poles({"gravity": (*GRAVITY_RANGE, False), "masspole": (0.05, 0.3, True), "length": (0.25, 1.0, True)}),
        "motor polarity (forward / reversed)",
    ),
    "cheetah-vel": LayoutSpec((6, 9), (2, 3), _cheetah_velocities, "target-velocity bands"),
    "cheetah-gravity": LayoutSpec((6, 9), (2, 3), _gravity_worlds, "gravity bands"),
    "ant-dir": LayoutSpec((6, 10), (2, 3, 4), _directions, "walking-direction clusters"),
    "reacher-goals": LayoutSpec((6, 12), (2, 3, 4), _goal_regions, "goal regions"),
    "hopper-mo": LayoutSpec((6, 9), (2, 3), _dominant_objectives, "dominant objective (forward / backward / height)"),
    "walker-mo": LayoutSpec((6, 9), (2, 3), _dominant_objectives, "dominant objective (forward / backward / height)"),
    "lunarlander-gravity": LayoutSpec(
        (8, 12), (2,), _two_bands("gravity", ((-5.5, -1.5), (-11.5, -7.5))), "weak / strong gravity"
    ),
    "highway-density": LayoutSpec(
        (8, 12), (2,), _two_bands("density", ((0.5, 1.5), (2.0, 3.0))), "light / dense traffic"
    ),
}


def layout_families() -> list[str]:
    """The families :func:`random_layout` draws layouts for (those with planted structure)."""
    return sorted(LAYOUTS)


def group_sizes(rng: np.random.Generator, n: int, k: int, minimum: int = 2) -> list[int]:
    """A composition of n into k parts of at least ``minimum``, uniform over all such compositions
    (stars and bars: k - 1 distinct cut points among the n - k (minimum - 1) - 1 gaps)."""
    free = n - k * (minimum - 1)
    if k < 1 or free < k:
        raise ValueError(f"cannot split {n} tasks into {k} groups of at least {minimum}")
    cuts = np.sort(rng.choice(np.arange(1, free), size=k - 1, replace=False)) if k > 1 else np.array([], int)
    parts = np.diff(np.concatenate([[0], cuts, [free]]))
    return [int(p) + minimum - 1 for p in parts]


def parse_layout(spec: str | None) -> int | None:
    """``--layout``: None or ``"default"`` (the family's own layout: None) or ``"random:SEED"``
    with SEED a non-negative integer (returned). ``ValueError`` naming the value otherwise."""
    if spec is None or spec == "default":
        return None
    kind, sep, seed = spec.partition(":")
    if kind == "random" and sep and seed.isdigit():
        return int(seed)
    raise ValueError(f"--layout {spec!r}: allowed 'default' or 'random:SEED' with SEED an integer >= 0 (e.g. random:7)")


def random_layout(family: str, seed: int, n_tasks: int | None = None) -> list[dict]:
    """A layout of ``family`` drawn with ``seed`` (see the module docstring): task entries with
    their planted ``group``, in shuffled order, named ``tNN_<what varies>``; the same seed gives
    the same layout. ``n_tasks`` fixes n beyond the family's range (scale studies: at least two
    tasks per planted group); None draws it. ``ValueError`` for a family without a generator, a
    negative seed or too few tasks."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"layout seed must be an integer >= 0, got {seed!r}")
    spec = LAYOUTS.get(family)
    if spec is None:
        raise ValueError(f"family {family!r} has no layout generator; those with one: {layout_families()}")
    rng = np.random.default_rng([int(seed), _family_salt(family)])
    k = int(rng.choice(spec.groups))
    n = int(rng.integers(max(spec.tasks[0], 2 * k), spec.tasks[1] + 1))  # drawn either way: same stream
    if n_tasks is not None:
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, (int, np.integer)) or n_tasks < 2 * k:
            raise ValueError(f"n_tasks must be an integer >= {2 * k} (two per planted group), got {n_tasks!r}")
        n = int(n_tasks)
    entries = spec.draw(rng, group_sizes(rng, n, k))
    order = rng.permutation(len(entries))
    return [_named(i, entries[j]) for i, j in enumerate(order)]


def _family_salt(family: str) -> int:
    """A fixed integer per family, so seed s of two families are unrelated draws."""
    return int.from_bytes(family.encode(), "little") % (2**31 - 1)


def _named(position: int, entry: dict) -> dict:
    parts = []
    for field, value in entry.items():
        if field == "group":
            continue
        short = "".join(word[0] for word in field.split("_"))  # pole_mass: pm
        if field == "motor":
            parts.append("rev" if value < 0 else "fwd")
        elif isinstance(value, list):
            parts.append(short + "_".join(f"{v:.3g}" for v in value))
        else:
            parts.append(f"{short}{value:.3g}")
    return {"name": f"t{position:02d}_" + "_".join(parts), **entry}
