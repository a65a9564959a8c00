"""Task families: n objectives (or physics variants) of one environment, built by name.

Layout:

- :mod:`~pgx_jax.families.base`: :class:`TaskFamily` (Brax, stepped in JAX), :class:`TaskState`,
  :class:`FamilySpec` and the checks every family makes of its tasks;
- :mod:`~pgx_jax.families.locomotion`: ``reacher-goals``, ``cheetah-vel``, ``ant-dir`` (rewards);
- :mod:`~pgx_jax.families.physics`: ``pendulum-physics``, ``cheetah-gravity`` (dynamics);
- :mod:`~pgx_jax.families.weightings`: ``hopper-mo``, ``walker-mo`` (objective weightings);
- :mod:`~pgx_jax.families.gymnax_envs`: :func:`gymnax_family`, any gymnax environment (one
  ``env_params`` per task), stepped in JAX like the Brax families;
- :mod:`~pgx_jax.families.spaces`: the one map from the policy's actions to an action space;
- :mod:`~pgx_jax.families.host`: :class:`HostFamily`, any gymnasium-API environment;
- :mod:`~pgx_jax.families.host_benchmarks`: the paper's benchmarks through it (optional extras);
- :mod:`~pgx_jax.families.layouts`: layouts drawn at random per family (:func:`random_layout`);
- :mod:`~pgx_jax.families.registry`: :func:`make_family`, the registry and task-file validation.

A family says what steps it (``family.simulator``); the stages never ask, they call
:func:`pgx_jax.simulators.simulator`.
"""

from pgx_jax.families.base import FamilySpec, TaskFamily, TaskState, check_family, custom_family, range_validator
from pgx_jax.families.gymnax_envs import gymnax_family
from pgx_jax.families.host import EnvBatch, HostFamily, gymnasium_family, with_workers
from pgx_jax.families.host_benchmarks import HOST_FAMILIES, MissingExtraError, installed
from pgx_jax.families.layouts import LAYOUTS, group_sizes, layout_families, parse_layout, random_layout
from pgx_jax.families.registry import (
    DEFAULT_FAMILY,
    FAMILIES,
    draw_tasks,
    family_catalog,
    family_names,
    load_tasks_file,
    make_family,
    meta_rl_families,
    task_entries,
    validate_tasks,
)

__all__ = [
    "DEFAULT_FAMILY",
    "EnvBatch",
    "FAMILIES",
    "FamilySpec",
    "HOST_FAMILIES",
    "HostFamily",
    "gymnasium_family",
    "gymnax_family",
    "with_workers",
    "LAYOUTS",
    "MissingExtraError",
    "TaskFamily",
    "TaskState",
    "check_family",
    "draw_tasks",
    "custom_family",
    "family_catalog",
    "family_names",
    "group_sizes",
    "installed",
    "layout_families",
    "load_tasks_file",
    "make_family",
    "meta_rl_families",
    "parse_layout",
    "random_layout",
    "range_validator",
    "task_entries",
    "validate_tasks",
]
