"""What the trainings of :mod:`pgx_jax.rl.ppo` and :mod:`pgx_jax.rl.maml` share: the clipped Adam
step, the starting parameters, and the gate that lets runs of different lengths share one vmapped
call (a run past its own length keeps its state while the others go on)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

import pgx_jax.rl.networks as networks
from pgx_jax.core.config import NetworkConfig
from pgx_jax.core.types import PRNGKey, PyTree
from pgx_jax.rl.networks import AgentParams

Metrics = dict[str, jax.Array]


def clipped_adam(max_grad_norm: float, learning_rate: float) -> optax.GradientTransformation:
    """Adam (optax's defaults but the learning rate) on gradients rescaled to global norm at most
    ``max_grad_norm``: ``chain(clip_by_global_norm, adam)``."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))


def initial_params(net: NetworkConfig, family, key: PRNGKey, init_params: AgentParams | None = None) -> AgentParams:
    """``init_params`` where given, else fresh parameters of ``net`` for ``family``'s observation
    and action sizes drawn from ``key``."""
    if init_params is None:
        return networks.init_agent(net, family.obs_size, family.action_size, key)
    return init_params


def gate(active, old: PyTree, new: PyTree, metrics: Metrics, fills: Mapping[str, Any]) -> tuple[PyTree, Metrics]:
    """One step of a run, kept or dropped by ``active`` (bool [], may be traced).

    Active: ``(new, metrics)`` unchanged. Inactive: ``old`` in place of ``new`` (leaf by leaf; the
    two pytrees have one structure), every metric named in ``fills`` replaced by its fill value
    (e.g. NaN for a return, 0 for a count) and ``metrics["finite"]`` (bool) True.
    """
    state = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)
    kept = {name: jnp.where(active, metrics[name], fill) for name, fill in fills.items()}
    return state, dict(metrics, **kept, finite=metrics["finite"] | ~active)
