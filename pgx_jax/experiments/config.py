"""PolicyGradEx's configuration: :class:`PipelineConfig` (PPO, features, surrogate, affinity,
clustering, evaluator, theta*'s early stop) and :func:`pipeline_config`, the named budgets' table of
gradient features and the checks of a config against a family.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pgx_jax.core.budgets as budgets
from pgx_jax import simulators
from pgx_jax.core.config import PPOConfig, budget_config
from pgx_jax.core.types import Family
from pgx_jax.estimation import cluster as cluster_mod
from pgx_jax.estimation.affinity import AffinityConfig
from pgx_jax.estimation.evaluators import EVALUATORS, NEEDS_HOLDOUT_SAMPLES
from pgx_jax.estimation.features import FeatureConfig
from pgx_jax.estimation.hessian import HessianConfig
from pgx_jax.estimation.surrogate import SurrogateConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Everything :func:`pgx_jax.policygradex` needs.

    Attributes:
        ppo: meta-training and group training (groups get the same per-task env steps).
        meta_policy: which theta* to expand around: ``"full"`` (meta-training for ``ppo``'s whole
            budget), ``"early-F"`` (stopped after the fraction F of it, 0 < F <= 1, at least one
            PPO update: a theta* that has not yet committed to one group's solution) or
            ``"entropy-C"`` (the whole budget with a finite entropy bonus C >= 0). Measured on
            task-agnostic pendulum-physics (demo): the full theta* balances one motor polarity
            only and the estimate's groups are chance; stopped at 5% it sits between them and
            the estimate finds the motor split (``benchmarks/results/meta_policy*.md``).
        features, surrogate, affinity: the estimation stages.
        evaluator: ``"rollout"`` (returns of theta_S; the default), ``"loss"`` (held-out
            surrogate loss) or ``"gain"`` (the step's first-order improvement of each task's
            held-out surrogate objective; rollout-free) or ``"alignment"`` (the first-order change of
            each task's objective under a unit gradient step on the subset's); how each agrees with the truth:
            benchmarks/RESULTS.md.
        groups: number of groups k, or ``"auto"``.
        k_rule: how ``"auto"`` chooses k: ``"silhouette"`` or ``"eigengap"``
            (:func:`pgx_jax.estimation.cluster.cluster_tasks`).
        cluster_method: ``"sdp"`` or ``"spectral"``.
        eval_episodes: episodes per task for rollout scores, the truths and final evaluation
            (every episode keyed by task and episode: common random numbers).
        train_groups: train one policy per group at the end (the costly part).
        subset_chunk: subsets per compiled solve / evaluation call. More subsets than this go
            through the same compiled call chunk by chunk (padded), with progress between
            chunks; memory stays that of one chunk.
    """

    ppo: PPOConfig
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    surrogate: SurrogateConfig = dataclasses.field(default_factory=SurrogateConfig)
    affinity: AffinityConfig = dataclasses.field(default_factory=AffinityConfig)
    evaluator: str = "rollout"
    meta_policy: str = "full"
    groups: int | str = "auto"
    k_rule: str = "silhouette"
    cluster_method: str = "sdp"
    eval_episodes: int = 8
    train_groups: bool = True
    subset_chunk: int = 1024

    def __post_init__(self):
        if self.evaluator not in EVALUATORS:
            raise ValueError(f"unknown evaluator {self.evaluator!r}; known: {list(EVALUATORS)}")
        if self.k_rule not in cluster_mod.K_RULES:
            raise ValueError(f"unknown k rule {self.k_rule!r}; known: {list(cluster_mod.K_RULES)}")
        if self.cluster_method not in cluster_mod.METHODS:
            raise ValueError(f"unknown clustering method {self.cluster_method!r}; known: {list(cluster_mod.METHODS)}")
        if self.groups != "auto" and (
            isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1
        ):
            raise ValueError(f"groups must be a positive integer or 'auto', got {self.groups!r}")
        if self.eval_episodes < 1:
            raise ValueError(f"eval_episodes must be >= 1, got {self.eval_episodes}")
        if self.subset_chunk < 1:
            raise ValueError(f"subset_chunk must be >= 1, got {self.subset_chunk}")
        self.meta_ppo()  # a malformed meta_policy fails here, before any work

    def meta_ppo(self) -> PPOConfig:
        """The PPO config theta* is meta-trained with (:attr:`meta_policy` applied to ``ppo``)."""
        kind, _, value = self.meta_policy.partition("-")
        try:
            number = float(value) if value else None
        except ValueError:
            number = None
        if kind == "full" and not value:
            return self.ppo
        if kind == "early" and number is not None and 0 < number <= 1:
            return dataclasses.replace(self.ppo, total_env_steps=max(1, int(self.ppo.total_env_steps * number)))
        if kind == "entropy" and number is not None and 0 <= number < math.inf:
            return dataclasses.replace(self.ppo, entropy_coef=number)
        raise ValueError(
            f"unknown meta_policy {self.meta_policy!r}; known: 'full', 'early-F' (0 < F <= 1, e.g. 'early-0.05'), "
            "'entropy-C' (C >= 0, e.g. 'entropy-0.01')"
        )

    @property
    def theta_star_is_multitask(self) -> bool:
        """Whether theta* is the multitask policy with the groups' budget (``meta_policy`` leaves
        ``ppo`` as it is); otherwise that policy is trained apart to measure grouping against."""
        return self.meta_ppo() == self.ppo

    def check_for(self, family: Family) -> None:
        """Raise ``ValueError`` before any work if this config cannot run on ``family``."""
        n = family.n_tasks
        self.ppo.check_for(n, family.episode_length)
        if self.groups != "auto" and self.groups > n:
            raise ValueError(f"groups k = {self.groups} exceeds the number of tasks n = {n}")
        self.affinity.check_for(n)

    def feature_config(self) -> FeatureConfig:
        """``features`` as the estimation collects them: the held-out transitions' per-sample
        gradients only where the evaluator reads them (``loss``); every other evaluator is
        served by their mean (:attr:`FeatureConfig.holdout_samples`)."""
        needed = self.features.holdout_samples or self.evaluator in NEEDS_HOLDOUT_SAMPLES
        return dataclasses.replace(self.features, holdout_samples=needed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def budget_features(budget: str) -> FeatureConfig:
    """The :class:`FeatureConfig` of a named budget (``ValueError`` for an unknown one); what
    :func:`pipeline_config` starts from before the family's simulator adjusts it."""
    if budget not in budgets.FEATURES:
        raise ValueError(f"unknown budget {budget!r}; known budgets: {list(budgets.FEATURES)}")
    return FeatureConfig(**budgets.FEATURES[budget])


#: The theta* each conditioning expands around unless told otherwise. Without the task id the
#: fully trained theta* can commit to one group's solution (task-agnostic pendulum-physics: it
#: balances one motor polarity, and every estimate is chance), so theta* is stopped early: at 2%,
#: the fraction benchmarks/generalisation.py chose on development layouts it had not been tuned
#: on (benchmarks/RESULTS.md, issue 29). With the task id the full theta* is what every earlier
#: figure used (no layout study yet).
DEFAULT_META_POLICY = {"task_id": "full", "none": "early-0.02"}


def pipeline_config(
    budget: str, family: Family, *, conditioning: str | None = None, **overrides: Any
) -> PipelineConfig:
    """The :class:`PipelineConfig` of a named budget for ``family`` (``ppo`` from :func:`budget_config`).

    ``conditioning`` (``"task_id"`` or ``"none"``; default: the network's, ``"task_id"``) sets
    what every policy of the pipeline is told about the task; ``overrides`` replace fields. Unless
    overridden (or given as ``"auto"``), ``meta_policy`` is the conditioning's
    :data:`DEFAULT_META_POLICY`.
    """
    ppo_config = budget_config(budget, family.name, family.n_tasks)  # raises on an unknown budget
    features = budget_features(budget)
    sim = simulators.simulator(family)
    if budget != "smoke" and sim.gradient_transitions is not None:
        # b_i from a larger sample than the features' (why, and why not for host families:
        # the simulators' ``gradient_transitions``)
        features = dataclasses.replace(features, gradient_transitions=sim.gradient_transitions)
    fields: dict[str, Any] = {
        "ppo": ppo_config,
        "features": features,
        # demo / full: steps of a mean KL of 0.01 nats (about one PPO update). At the paper's 1% of
        # ||theta*|| the step moved the policy by KL 2e-4 and the rollout estimate missed the
        # cheetah-vel clusters split (NMI 0.19); at KL 0.01 it found it (1.00; RESULTS, issue 13).
        "surrogate": SurrogateConfig(iterations=20)
        if budget == "smoke"
        else SurrogateConfig(step="kl", step_size=0.01),
        # the simulator's (32 for JAX families: a fine-tune truth's standard error a fifth of its
        # spread over subsets on pendulum-physics; 8 for host families, which step in Python)
        "eval_episodes": 2 if budget == "smoke" else sim.eval_episodes,
    }
    fields.update(overrides)
    if conditioning is not None:  # also on an overriding ppo's network
        network = dataclasses.replace(fields["ppo"].network, conditioning=conditioning)  # NetworkConfig checks it
        fields["ppo"] = dataclasses.replace(fields["ppo"], network=network)
    if fields.get("meta_policy", "auto") == "auto":
        fields["meta_policy"] = DEFAULT_META_POLICY[fields["ppo"].network.conditioning]
    return PipelineConfig(**fields)


APPROX_SIZES = (0.001, 0.005, 0.01, 0.05)


TRUTHS = ("full", "finetune", "both")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ValidateConfig:
    """What :func:`pgx_jax.experiments.validate.validate` does beyond the pipeline's own config.

    Attributes:
        truth: the reference the estimate is checked against. ``"full"``: every sampled subset
            trained from scratch with the per-task env-step budget ``compare`` gives a group of
            that size (the paper's ground truth); ``"finetune"``: PPO fine-tuning from theta* for
            ``finetune_fraction`` of the meta-training steps, theta*'s observation normaliser
            frozen; ``"both"``: each, reported side by side (``full`` first: it is the primary).
        finetune_fraction: env steps of each subset's fine-tuning, as a fraction of the
            meta-training steps (0.1: 300k steps per subset on reacher-goals at the demo budget).
        replicates: run every truth this many times (independent keys); with 2 or more, each
            truth's ``replicates`` say how well it agrees with itself: the ceiling of any
            estimate's agreement with it.
        directions: surrogate directions (those of the first sampled subsets) and as many
            random directions for the first-order check.
        approx_transitions: fresh on-policy transitions per task for the first-order check and
            the KL of each estimated policy.
        sizes: relative step sizes of the first-order check.
        hessian: the Hessian-trace generalisation analysis of the estimated policies
            (:mod:`pgx_jax.estimation.hessian`), or None (default) to skip it.
    """

    truth: str = "full"
    finetune_fraction: float = 0.1
    replicates: int = 1
    directions: int = 3
    approx_transitions: int = 256
    sizes: tuple[float, ...] = APPROX_SIZES
    hessian: HessianConfig | None = None

    def __post_init__(self):
        if self.truth not in TRUTHS:
            raise ValueError(f"unknown truth {self.truth!r}; known: {list(TRUTHS)}")
        if not 0 < self.finetune_fraction:
            raise ValueError(f"finetune_fraction must be > 0, got {self.finetune_fraction!r}")
        for name in ("replicates", "directions", "approx_transitions"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.sizes or any(not r > 0 for r in self.sizes):
            raise ValueError(f"sizes must be positive relative step sizes, got {self.sizes!r}")
        if self.hessian is not None and not isinstance(self.hessian, HessianConfig):
            raise ValueError(f"hessian must be a HessianConfig or None, got {self.hessian!r}")

    def check(self, config) -> None:
        """Refuse, before any work, what this config cannot do with the pipeline's ``config``."""
        if self.hessian is not None and config.feature_config().holdout < 1:
            raise ValueError(
                "validate --hessian needs held-out transitions for the observed gap: features holdout "
                f"{config.feature_config().holdout}; allowed: >= 1"
            )

    @property
    def kinds(self) -> tuple[str, ...]:
        """The truths to run, the primary first."""
        return ("full", "finetune") if self.truth == "both" else (self.truth,)

    def finetune(self, meta: PPOConfig, episode_length: int) -> PPOConfig:
        """The PPO config of each subset's fine-tuning: ``meta`` with a fraction of its steps
        (at least one update) and the observation normaliser frozen at theta*'s statistics
        (fine-tuning would otherwise shift every task's inputs towards the subset's
        observations: a change no estimate made at theta* can model)."""
        per_update = meta.num_envs * meta.unroll(episode_length)
        steps = max(per_update, round(self.finetune_fraction * meta.total_env_steps))
        return dataclasses.replace(meta, total_env_steps=int(steps), normalize_observations=False)
