"""The :class:`Simulator` protocol: everything the stages ask of a family's simulator.

:class:`pgx_jax.simulators.jitted.JaxSimulator` and :class:`pgx_jax.simulators.host.HostSimulator`
implement it; :func:`pgx_jax.simulators.simulator` returns the one a family names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import jax
import numpy as np

from pgx_jax.core.config import PPOConfig
from pgx_jax.core.types import Family, PRNGKey, PyTree
from pgx_jax.estimation.features import FeatureConfig, Features
from pgx_jax.rl.networks import AgentParams
from pgx_jax.rl.training import Metrics

Stats = dict[str, np.ndarray]


class Simulator(Protocol):
    """Everything the stages ask of a family's simulator (shapes as in :mod:`pgx_jax.core.types`).

    Inputs are validated by the module-level doors before they get here.
    """

    family: Family
    #: the programs are traced end to end: compiled ahead, FLOPs counted (None otherwise)
    counts_flops: bool
    #: evaluation episodes per task at the ``demo`` / ``full`` budgets
    eval_episodes: int
    #: transitions per task for the mean policy gradients b_i beyond ``smoke`` (None: the features')
    gradient_transitions: int | None

    def train_many(
        self,
        config: PPOConfig,
        masks: np.ndarray,
        keys: jax.Array,
        init_params: AgentParams | None,
        active_updates: jax.Array | None,
        *,
        on_update: Callable[[int, int], None] | None = None,
        block: int | None = None,
    ) -> tuple[AgentParams, Metrics]:
        """S PPO runs, masks bool [S, N], keys [S]: params and metrics with leading [S]; with
        ``block``, S is a multiple of it and the runs train ``block`` at a time."""

    def train_many_timed(
        self, config: PPOConfig, masks: np.ndarray, keys: jax.Array, init_params, active_updates
    ) -> tuple[AgentParams, Metrics, dict]:
        """:meth:`train_many` with ``compile_s``, ``train_s``, ``flops_train`` and
        ``xla_flops_train`` (the last two None where FLOPs are not counted)."""

    def train_chunked(
        self,
        config: PPOConfig,
        mask: np.ndarray,
        key: PRNGKey,
        init_params: AgentParams | None,
        *,
        max_chunks: int,
        on_chunk: Callable[[int, int], None] | None,
        timings: dict | None,
        checkpoint: Callable | None = None,
        start=None,
        on_metrics: Callable[[int, Metrics], None] | None = None,
    ) -> tuple[AgentParams, Metrics]:
        """One run (mask bool [N]) with ``on_chunk(updates_done, total)`` between calls and
        ``on_metrics(updates_done, metrics of the updates since the last call [U', ...], on the
        host)``; where :attr:`resumable_training`, ``checkpoint(state, metrics so far, updates
        done)`` after every chunk and ``start`` (what it was given) continues a run from there."""

    #: whether :meth:`train_chunked` can checkpoint its state and continue from it
    resumable_training: bool = False

    def train_one(self, config: PPOConfig, mask: np.ndarray, key: PRNGKey, init_params) -> tuple[AgentParams, Metrics]:
        """One run (mask bool [N]); for JAX families one cached compiled program."""

    def train_timed(self, config: PPOConfig, mask, key: PRNGKey) -> tuple[AgentParams, Metrics, float, float]:
        """One run from fresh parameters: ``(params, metrics, train_s, compile_s)``."""

    def features_xla_flops(self, ppo_config: PPOConfig, cfg: FeatureConfig, params, key: PRNGKey) -> float | None:
        """XLA's cost-analysis FLOPs of the compiled features program (None where not counted)."""

    def collect(self, ppo_config: PPOConfig, cfg: FeatureConfig, params: AgentParams, key: PRNGKey) -> PyTree:
        """pi_params rolled out on every task: :func:`pgx_jax.estimation.features.collect`'s output."""

    def gradient_features(
        self, ppo_config: PPOConfig, cfg: FeatureConfig, params: AgentParams, key: PRNGKey
    ) -> Features:
        """:func:`pgx_jax.estimation.features.gradient_features` at ``params``."""

    def evaluate(
        self, params: AgentParams | None, task_ids, key: PRNGKey, episodes: int, *, network, deterministic
    ) -> Stats:
        """One policy (None: uniform random) on tasks int [K]: ``return``, ``return_se`` [K] and
        the family's metric; every episode keyed by its (task, episode). JAX families: pure and
        traceable (vmap it over stacked policies, compile it with :meth:`compile`)."""

    def compile(self, fn: Callable) -> Callable:
        """``fn`` (a function of this family's rollouts, e.g. of :meth:`evaluate`) compiled where
        the simulator can trace it (``jax.jit``), else ``fn`` itself (host rollouts run eagerly)."""

    def policies_on_subsets(
        self,
        params: AgentParams,
        masks: np.ndarray,
        key: PRNGKey,
        *,
        network,
        episodes: int,
        batch: int,
        max_subset_size: int | None = None,
    ) -> Stats:
        """Policy s (params leading [S]) on the tasks of mask s: stats [S, N], NaN outside; every
        policy's tasks padded to ``max_subset_size`` (default: the largest mask)."""

    def policies_on_subsets_timed(
        self, params: AgentParams, masks: np.ndarray, key: PRNGKey, *, network, episodes: int, batch: int
    ) -> tuple[Stats, dict]:
        """:meth:`policies_on_subsets` with ``evaluate_s`` (compilation apart) and ``flops_evaluate``."""

    def estimates_on_subsets(
        self, theta_star, feats: Features, betas, scales, masks, key, *, network, episodes, batch, kmax, devices
    ) -> Stats:
        """The rollout evaluator: theta_S = theta* + c_S P beta_S on the tasks of S, [S, N]."""

    def meta_train_many(
        self, mconfig, masks: jax.Array, keys: jax.Array, num_iterations: int, active_iterations, init_params
    ) -> tuple[AgentParams, Metrics]:
        """G MAML meta-trainings from ``init_params``: :func:`pgx_jax.rl.maml.meta_train_vmapped`'s contract
        (masks bool [G, N], keys [G], active_iterations int32 [G]; params [G], metrics [G, I, ...])."""

    def meta_probe(self, mconfig, params: AgentParams, task_ids, key: PRNGKey) -> jax.Array:
        """Mean return of every meta-policy (leading [G]) on a batch of every task (int32 [m]) before
        adaptation: float32 [G, m], a task's episodes keyed by the task alone."""

    def meta_adapt(self, mconfig, params: AgentParams, task_ids, key: PRNGKey) -> jax.Array:
        """Every meta-policy adapted to every task: float32 [G, m, A + 1]
        (:func:`pgx_jax.rl.maml.adaptation_curves`)."""
