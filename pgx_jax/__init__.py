"""pgx_jax: PolicyGradEx in JAX: find which RL objectives should be trained together.

Public API (each stage a pure function; see the module docstrings):

- task families: :func:`make_family`, :func:`custom_family`, :func:`load_tasks_file`,
  :class:`TaskFamily`, :data:`FAMILIES`
- configuration: :class:`PPOConfig`, :class:`NetworkConfig`, :func:`budget_config`, :data:`BUDGETS`
- training: :func:`train` (pure, vmappable), :func:`train_many` (S trainings, one call),
  :func:`train_chunked` (with host-side progress)
- evaluation: :func:`evaluate`, :func:`evaluate_metrics`, :func:`random_policy_returns`
- checkpoints: :func:`save_policy`, :func:`load_policy`
"""

from pgx_jax.checkpoint import load_policy, save_policy
from pgx_jax.config import BUDGETS, NetworkConfig, PPOConfig, budget_config
from pgx_jax.evaluate import evaluate, evaluate_metrics, random_policy_metrics, random_policy_returns
from pgx_jax.networks import AgentParams, init_agent
from pgx_jax.ppo import check_finite, train, train_chunked, train_many
from pgx_jax.tasks import FAMILIES, TaskFamily, TaskState, custom_family, load_tasks_file, make_family

__version__ = "0.1.0"

__all__ = [
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
    "load_tasks_file",
    "make_family",
    "random_policy_metrics",
    "random_policy_returns",
    "save_policy",
    "train",
    "train_chunked",
    "train_many",
]
