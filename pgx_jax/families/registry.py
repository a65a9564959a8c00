"""The family registry: every named family (Brax and host-stepped), task-file validation and
:func:`make_family`.

Families are built by name (:func:`make_family`), from user task parameters given in Python
or in a JSON tasks file (:func:`load_tasks_file`), or from any Brax environment plus a reward
function of ``(state, action, task parameters)`` (:func:`pgx_jax.families.custom_family`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from brax import envs as brax_envs

import pgx_jax.families.locomotion as locomotion
import pgx_jax.families.mt10_family as mt10_family
import pgx_jax.families.physics as physics
import pgx_jax.families.weightings as weightings
from pgx_jax.families.base import FamilySpec, TaskFamily, planted_summary
from pgx_jax.families.host_benchmarks import HOST_FAMILIES, catalog_rows, make_host_family
from pgx_jax.families.layouts import parse_layout, random_layout

#: the Brax families by name (the host-stepped ones are :data:`HOST_FAMILIES`)
FAMILIES: dict[str, FamilySpec] = {**locomotion.SPECS, **physics.SPECS, **weightings.SPECS}
#: JAX families built by their own function from an optional package's content
JAX_BUILT_FAMILIES = {"metaworld-mt10-mjx": mt10_family.SPEC}

DEFAULT_FAMILY = "reacher-goals"


def family_names() -> list[str]:
    """Every family :func:`make_family` builds: the Brax ones and the host-stepped ones."""
    return sorted([*FAMILIES, *HOST_FAMILIES, *JAX_BUILT_FAMILIES])


def _spec(name: str):
    spec = FAMILIES.get(name) or HOST_FAMILIES.get(name) or JAX_BUILT_FAMILIES.get(name)
    if spec is None:
        raise ValueError(f"unknown family {name!r}; known families: {family_names()}")
    return spec


def validate_tasks(family_name: str, tasks: Any, *, source: str = "tasks") -> list[dict]:
    """Check user task entries for a named family; return them normalised.

    Each entry is a mapping with ``name``, the family's parameter fields and optionally
    ``group`` (int). Raises ``ValueError`` naming the bad entry.
    """
    spec = _spec(family_name)
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise ValueError(f"{source}: expected a non-empty JSON list of task objects, got {type(tasks).__name__}")
    out, names = [], set()
    with_group = [isinstance(t, Mapping) and "group" in t for t in tasks]
    if any(with_group) and not all(with_group):
        raise ValueError(f"{source}: either every task has a 'group' or none does")
    for i, t in enumerate(tasks):
        where = f"{source}[{i}]"
        if not isinstance(t, Mapping):
            raise ValueError(f"{where}: expected an object, got {t!r}")
        allowed = {"name", "group", *spec.fields}
        extra = set(t) - allowed
        if extra:
            raise ValueError(f"{where}: unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: 'name' must be a non-empty string, got {name!r}")
        if name in names:
            raise ValueError(f"{where}: duplicate task name {name!r}")
        names.add(name)
        where = f"{source}[{i}] ({name!r})"
        entry = {"name": name}
        for field, shape in spec.fields.items():
            if field not in t:
                raise ValueError(f"{where}: missing '{field}' (family {family_name!r} needs {sorted(spec.fields)})")
            try:
                value = np.asarray(t[field], dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: '{field}' must be numeric, got {t[field]!r}") from None
            if value.shape != shape:
                want = "a number" if shape == () else f"a list of {shape[0]} numbers"
                raise ValueError(f"{where}: '{field}' must be {want}, got {t[field]!r}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{where}: '{field}' must be finite, got {t[field]!r}")
            problem = spec.validate(field, value)
            if problem:
                raise ValueError(f"{where}: {problem}")
            entry[field] = value.tolist()
        if "group" in t:
            g = t["group"]
            if isinstance(g, bool) or not isinstance(g, int) or g < 0:
                raise ValueError(f"{where}: 'group' must be a non-negative integer, got {g!r}")
            entry["group"] = g
        out.append(entry)
    return out


def load_tasks_file(family_name: str, path: str | os.PathLike) -> list[dict]:
    """Read and validate a JSON tasks file for a named family (see :func:`validate_tasks`)."""
    _spec(family_name)
    try:
        with open(path) as f:
            tasks = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"tasks file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"tasks file {str(path)!r} is not valid JSON: {e}") from None
    return validate_tasks(family_name, tasks, source=str(path))


def task_entries(name: str, tasks_file: str | os.PathLike | None = None, layout: str | None = None) -> list[dict]:
    """The validated task entries of a named family: its default layout, a JSON tasks file, or
    a drawn layout (``layout="random:SEED"``, :func:`pgx_jax.families.layouts.random_layout`).
    ``ValueError`` for both a file and a drawn layout, or a malformed ``layout``."""
    seed = parse_layout(layout)
    if tasks_file is not None and seed is not None:
        raise ValueError(f"give either a tasks file ({str(tasks_file)!r}) or --layout {layout!r}, not both")
    if tasks_file is not None:
        return load_tasks_file(name, tasks_file)
    if seed is not None:
        _spec(name)  # an unknown family is named as such, not as one without a generator
        return validate_tasks(name, random_layout(name, seed), source=f"{name} layout {layout}")
    return validate_tasks(name, _spec(name).default_tasks())


def meta_rl_families() -> list[str]:
    """The families that declare a distribution of unseen tasks (what ``pgx-jax meta-rl``
    accepts), JAX-stepped and host-stepped."""
    specs = {**FAMILIES, **HOST_FAMILIES}
    return sorted(name for name, spec in specs.items() if getattr(spec, "task_distribution", None) is not None)


def draw_tasks(name: str, sources: Sequence[Mapping], m: int, seed: int) -> list[dict]:
    """``m`` unseen tasks of family ``name`` drawn from its declared distribution with ``seed``.

    None equals a source task in every field (such a draw is replaced by another); names are
    ``test00``, ``test01``, ... and must not clash with a source's. Raises ``ValueError`` for a
    family without a distribution, ``m < 1`` or a name clash.
    """
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"the number of test tasks must be a positive integer, got {m!r}")
    spec = _spec(name)
    if getattr(spec, "task_distribution", None) is None:
        have = meta_rl_families()
        raise ValueError(f"family {name!r} declares no distribution of unseen tasks; those that do: {have}")
    fields = list(spec.fields)
    seen = {tuple(np.ravel([s[f] for f in fields]).tolist()) for s in sources}
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for _ in range(100):  # continuous draws never hit a source in practice; the loop is the guarantee
        for entry in spec.task_distribution(rng, m - len(out)):
            if tuple(np.ravel([entry[f] for f in fields]).tolist()) not in seen:
                out.append(entry)
        if len(out) == m:
            break
    else:
        raise ValueError(f"family {name!r}: could not draw {m} tasks that differ from the sources")
    out = [dict(e, name=f"test{i:02d}") for i, e in enumerate(out)]
    clash = sorted({e["name"] for e in out} & {s["name"] for s in sources})
    if clash:
        raise ValueError(f"source task names {clash} clash with the test tasks' names; rename them")
    return validate_tasks(name, out, source=f"{name} test tasks")


@functools.cache
def _brax_env(env_name: str, backend: str, kwargs: tuple) -> Any:
    return brax_envs.get_environment(env_name, backend=backend, **dict(kwargs))


def make_family(
    name: str = DEFAULT_FAMILY,
    tasks: Sequence[Mapping] | None = None,
    *,
    tasks_file: str | os.PathLike | None = None,
    backend: str | None = None,
    episode_length: int | None = None,
) -> TaskFamily:
    """Build a named family with its default layout, user ``tasks`` or a JSON ``tasks_file``.

    Args:
        name: one of :data:`FAMILIES` (``reacher-goals``, ``cheetah-vel``, ``ant-dir``,
            ``pendulum-physics``, ``cheetah-gravity``, ``hopper-mo``, ``walker-mo``), or a
            host-stepped family of :mod:`pgx_jax.families.host_benchmarks` (``cartpole-physics``,
            ``lunarlander-gravity``, ``highway-density``, ``metaworld-mt10``), which returns a
            :class:`pgx_jax.families.HostFamily`, or ``metaworld-mt10-mjx`` (MT10 in MJX,
            :mod:`pgx_jax.families.mt10_family`).
        tasks: task entries ``{"name", <fields>..., "group"?}``; default: the family's layout.
        tasks_file: path of a JSON list of such entries (exclusive with ``tasks``).
        backend: Brax backend (default ``spring``, the cheapest to compile).
        episode_length: steps per episode (default: the family's).

    Raises:
        ValueError: unknown family, malformed tasks, or both ``tasks`` and ``tasks_file``.
    """
    spec = _spec(name)
    if tasks is not None and tasks_file is not None:
        raise ValueError("give either tasks or tasks_file, not both")
    if tasks_file is not None:
        entries = load_tasks_file(name, tasks_file)
    else:
        entries = validate_tasks(name, spec.default_tasks() if tasks is None else tasks)
    if name in JAX_BUILT_FAMILIES:
        if backend not in (None, "mjx"):
            raise ValueError(f"family {name!r} runs on MJX; backend {backend!r} applies to Brax families only")
        return make_host_family(name, entries, episode_length, JAX_BUILT_FAMILIES[name])
    if name not in FAMILIES:  # stepped on the host (pgx_jax.families.host)
        if backend is not None:
            raise ValueError(f"family {name!r} runs on the host; backend {backend!r} applies to Brax families only")
        return make_host_family(name, entries, episode_length)
    backend = backend or spec.backend
    if backend not in ("spring", "positional", "generalized", "mjx"):
        raise ValueError(f"unknown backend {backend!r}; known: ['generalized', 'mjx', 'positional', 'spring']")
    layout = json.dumps(entries, sort_keys=True)
    return _brax_family(name, layout, backend, int(episode_length or spec.episode_length))


@functools.cache
def _brax_family(name: str, layout: str, backend: str, episode_length: int) -> TaskFamily:
    """One object per (family, task layout, backend, episode length). A family is a static
    argument of the compiled calls and hashes by identity, so building the same family again (a
    resumed run, a notebook cell run twice, ``compare`` after ``validate``) reuses every program
    compiled for it instead of compiling them all again."""
    spec = _spec(name)
    entries = json.loads(layout)
    env = _brax_env(spec.env_name, backend, tuple(sorted(spec.env_kwargs.items())))
    params = {f: jnp.asarray(np.asarray([e[f] for e in entries], dtype=np.float32)) for f in spec.fields}
    groups = [e["group"] for e in entries] if "group" in entries[0] else None
    return TaskFamily(
        name=name,
        env=env,
        params=params,
        task_names=tuple(e["name"] for e in entries),
        groups=None if groups is None else tuple(groups),
        reward_fn=spec.reward_fn,
        reset_fn=spec.reset_fn,
        episode_length=episode_length,
        objective=spec.objective,
        metric=spec.metric,
        system_fn=spec.system_fn,
        backend=backend,
    )


def family_catalog() -> list[dict]:
    """One row per built-in family: name, n, environment, backend, what varies, objective,
    planted grouping of its default layout and, for host families, the package they need
    (what ``pgx-jax families`` prints)."""
    return (
        [
            {
                "family": name,
                "n": len(spec.default_tasks()),
                "env": f"brax {spec.env_name}",
                "backend": spec.backend,
                "varies": spec.varies,
                "objective": spec.objective,
                "planted": planted_summary(spec.default_tasks()),
                "extra": "(core)",
            }
            for name, spec in FAMILIES.items()
        ]
        + catalog_rows(JAX_BUILT_FAMILIES)
        + catalog_rows()
    )
