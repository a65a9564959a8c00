"""pgx_jax: PolicyGradEx in JAX: find which RL objectives should be trained together.

Public API (each stage a pure function; see the module docstrings):

- task families (:mod:`pgx_jax.families`): :func:`make_family`, :func:`custom_family`,
  :func:`load_tasks_file`, :class:`TaskFamily` (Brax), :func:`gymnax_family` (gymnax, one
  ``env_params`` per task), :class:`HostFamily` and :func:`gymnasium_family` (gymnasium API), :data:`FAMILIES`
- simulators (:mod:`pgx_jax.simulators`): :func:`simulator` gives a family's :class:`Simulator`;
  the functions below work for every family through it
- configuration: :class:`PPOConfig`, :class:`NetworkConfig`, :func:`budget_config`, :data:`BUDGETS`
- training: :func:`train` (pure, vmappable; JAX families), :func:`train_many` (S trainings, one
  call), :func:`train_one`, :func:`train_chunked` (with host-side progress)
- evaluation: :func:`evaluate`, :func:`evaluate_metrics`, :func:`random_policy_returns`,
  :func:`policies_on_subsets`
- checkpoints: :func:`save_policy`, :func:`load_policy`; a run's group policies
  :func:`save_groups`, :func:`load_groups`; a policy as a function :func:`make_policy`
- PolicyGradEx stages: :func:`gradient_features`, :func:`solve_subsets`, :func:`sample_subsets`,
  :func:`affinity_matrix`, :func:`cluster_tasks`, :func:`train_groups`; end to end :func:`policygradex`
- meta-RL (:mod:`pgx_jax.rl.maml`, :mod:`pgx_jax.experiments.meta_rl`): :class:`MAMLConfig`, :func:`maml_config`,
  :func:`meta_train` (pure, vmappable), :func:`adaptation_curve`, :func:`draw_tasks`; the paper's
  protocol end to end ``pgx_jax.experiments.meta_rl.meta_rl``
"""

import os as _os

# XLA:CPU's concurrency-optimised scheduler deadlocks intermittently on our vmapped PPO
# programs (jaxlib 0.10.2, measured here: a 3-run vmapped training hung at the first call in
# 2 of 2 processes with it, 0 hangs in 100 calls without it). The flag only affects the CPU
# backend and must be set before JAX initialises it, i.e. before the first computation.
_XLA_FIX = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "xla_cpu_enable_concurrency_optimized_scheduler" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " " + _XLA_FIX).strip()

from pgx_jax.core.config import BUDGETS, NetworkConfig, PPOConfig, budget_config
from pgx_jax.estimation.affinity import AffinityConfig, affinity_matrix, sample_subsets
from pgx_jax.estimation.cluster import cluster_tasks
from pgx_jax.estimation.evaluators import gain_scores, loss_scores, rollout_scores
from pgx_jax.estimation.features import FeatureConfig, Features
from pgx_jax.estimation.surrogate import Solutions, SurrogateConfig, TaskStats, solve, solve_subsets, task_stats
from pgx_jax.experiments.config import PipelineConfig, pipeline_config
from pgx_jax.experiments.estimate import estimate
from pgx_jax.experiments.groups import train_groups
from pgx_jax.experiments.pipeline import Result, policygradex
from pgx_jax.families import (
    FAMILIES,
    HostFamily,
    TaskFamily,
    TaskState,
    custom_family,
    draw_tasks,
    gymnasium_family,
    gymnax_family,
    load_tasks_file,
    make_family,
)
from pgx_jax.rl.checkpoint import load_groups, load_policy, save_groups, save_policy
from pgx_jax.rl.maml import MAMLConfig, adaptation_curve, maml_config, meta_train
from pgx_jax.rl.networks import AgentParams, init_agent, make_policy
from pgx_jax.rl.ppo import check_finite, train
from pgx_jax.simulators import (
    Simulator,
    evaluate,
    evaluate_metrics,
    gradient_features,
    policies_on_subsets,
    random_policy_metrics,
    random_policy_returns,
    simulator,
    train_chunked,
    train_many,
    train_one,
)

__version__ = "0.1.0"

__all__ = [
    "MAMLConfig",
    "adaptation_curve",
    "draw_tasks",
    "maml_config",
    "meta_train",
    "AffinityConfig",
    "FeatureConfig",
    "Features",
    "PipelineConfig",
    "Result",
    "SurrogateConfig",
    "affinity_matrix",
    "cluster_tasks",
    "estimate",
    "gradient_features",
    "loss_scores",
    "rollout_scores",
    "pipeline_config",
    "policygradex",
    "sample_subsets",
    "solve",
    "solve_subsets",
    "Solutions",
    "TaskStats",
    "task_stats",
    "gain_scores",
    "train_groups",
    "AgentParams",
    "BUDGETS",
    "FAMILIES",
    "NetworkConfig",
    "PPOConfig",
    "TaskFamily",
    "TaskState",
    "budget_config",
    "check_finite",
    "custom_family",
    "evaluate",
    "evaluate_metrics",
    "init_agent",
    "load_policy",
    "load_groups",
    "save_groups",
    "make_policy",
    "load_tasks_file",
    "make_family",
    "random_policy_metrics",
    "random_policy_returns",
    "save_policy",
    "train",
    "train_chunked",
    "train_many",
    "train_one",
    "HostFamily",
    "gymnasium_family",
    "gymnax_family",
    "Simulator",
    "simulator",
    "policies_on_subsets",
]
