"""MAML for task-agnostic policies, in pure JAX: one meta-policy per group, adapted to a new task
by a few policy-gradient steps (the paper's meta-RL protocol; Finn et al. 2017, arXiv:1703.03400).

A meta-iteration takes M task slots from the group's tasks (round robin, so every task of the
group gets the same number of slots over the run), samples K episodes of each slot's task with
the meta-policy theta, adapts theta to each slot by one policy-gradient step on those episodes
(``theta'_m = theta - alpha grad L_pg(theta; D_m)``), samples K fresh episodes with each
``theta'_m``, and moves theta by ``outer_epochs`` Adam steps on the mean over slots of PPO's
clipped surrogate of the post-adaptation episodes at ``theta'_m(theta)`` (the outer objective of
the PPO variant of MAML-RL). First order by default (the adapted step's dependence on theta is
stopped, FOMAML); ``second_order=True`` differentiates through the inner step on the sampled
episodes: the importance-weighted surrogate is differentiated twice, which gives the per-step
Hessian term of the MAML-RL references, without the cross-time terms of the sampling
distribution's dependence on theta (as they do) and without differentiating the baseline.

Advantages need no critic: the discounted return-to-go minus its mean over the slot's K episodes
at the same time step (a time-dependent baseline), normalised over the slot. The observation
normaliser is updated once per meta-iteration, after the outer steps, from every episode it
sampled; adaptation at test time keeps the meta-policy's normaliser.

Everything is pure and vmappable: :func:`meta_train` over ``task_mask`` and ``key`` trains every
group of every grouping in one compiled call (:func:`meta_train_vmapped`), groups of different
sizes sharing it through ``active_iterations`` as in :func:`pgx_jax.rl.ppo.train`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import pgx_jax.core.budgets as budgets
import pgx_jax.rl.networks as networks
import pgx_jax.rl.training as training
from pgx_jax.core.config import NetworkConfig
from pgx_jax.core.types import PRNGKey
from pgx_jax.families.base import TaskFamily
from pgx_jax.rl.networks import AgentParams
from pgx_jax.rl.rollout import reset_envs, unroll
from pgx_jax.rl.training import Metrics


@dataclasses.dataclass(frozen=True, kw_only=True)
class MAMLConfig:
    """Meta-training and adaptation.

    ``meta_iterations`` is the budget of a group holding every source task; a group of s of the
    n tasks runs ``(meta_iterations // n) * s`` of them (:meth:`group_iterations`), so every
    source task gets the same slots, hence env steps, in every grouping.

    Attributes:
        meta_iterations: meta-iterations of the all-task group.
        meta_batch: task slots M per meta-iteration (the references: 20-40 tasks).
        episodes: episodes K per slot per batch, before and after adaptation (the references: 20).
        inner_lr: alpha of the inner policy-gradient step (SGD; the references: 0.1).
        outer_lr: Adam's learning rate of the outer PPO step.
        outer_epochs: Adam steps per meta-iteration on its whole meta-batch.
        clip_eps: PPO clip of the outer objective.
        discount: gamma of the returns-to-go.
        max_grad_norm: global-norm clip of the outer gradient.
        second_order: differentiate through the inner step (MAML) instead of stopping it (FOMAML).
        adapt_steps: A, policy-gradient steps on a test task, each on ``adapt_episodes`` fresh
            episodes, with the inner rule (alpha, one step per batch).
        adapt_episodes: episodes per adaptation step (and per routing probe).
        network: the policy; meta-RL is task-agnostic, so ``conditioning`` must be ``"none"``.
    """

    meta_iterations: int
    meta_batch: int = 10
    episodes: int = 10
    inner_lr: float = 0.1
    outer_lr: float = 1e-3
    outer_epochs: int = 5
    clip_eps: float = 0.2
    discount: float = 0.99
    max_grad_norm: float = 0.5
    second_order: bool = False
    adapt_steps: int = 10
    adapt_episodes: int = 10
    network: NetworkConfig = dataclasses.field(default_factory=lambda: NetworkConfig(conditioning="none"))

    def __post_init__(self):
        minimum = {"meta_iterations": 1, "meta_batch": 1, "outer_epochs": 1, "adapt_steps": 0}
        minimum.update(episodes=2, adapt_episodes=2)  # the baseline is the mean over the batch's episodes
        for name, least in minimum.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {v!r}")
        for name in ("inner_lr", "outer_lr", "clip_eps", "max_grad_norm"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount!r}")
        if self.network.conditioning != "none":
            raise ValueError(
                f"meta-RL policies are task-agnostic: network conditioning must be 'none', got "
                f"{self.network.conditioning!r}"
            )

    def group_iterations(self, sizes, n_tasks: int) -> np.ndarray:
        """Meta-iterations (int32 [G]) of groups of these sizes out of ``n_tasks`` source tasks."""
        per_task = max(1, self.meta_iterations // n_tasks)
        return (per_task * np.asarray(sizes)).astype(np.int32)

    def env_steps_per_task(self, n_tasks: int, episode_length: int) -> int:
        """Env steps every source task gets in any group: its slots times two batches of K
        episodes (before and after the inner step)."""
        per_task = max(1, self.meta_iterations // n_tasks)
        return per_task * self.meta_batch * 2 * self.episodes * episode_length

    def adapt_env_steps(self, episode_length: int) -> int:
        """Env steps of adapting to one test task: A steps and the final evaluation batch."""
        return (self.adapt_steps + 1) * self.adapt_episodes * episode_length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def maml_config(budget: str, **overrides) -> MAMLConfig:
    """The :class:`MAMLConfig` of a named budget (``smoke``, ``demo``, ``full``) with overrides."""
    if budget not in budgets.MAML:
        raise ValueError(f"unknown budget {budget!r}; known budgets: {list(budgets.MAML)}")
    return MAMLConfig(**{**budgets.MAML[budget], **overrides})


class Episodes(NamedTuple):
    """K episodes of one task (leaves [K, T, ...]; stacked over slots to [M, K, T, ...])."""

    obs: jax.Array  # float32 [K, T, O]
    action: jax.Array  # float32 [K, T, A]
    log_prob: jax.Array  # float32 [K, T], of the policy that sampled them
    reward: jax.Array  # float32 [K, T]
    valid: jax.Array  # float32 [K, T]


def sample(
    net: NetworkConfig, family: TaskFamily, params: AgentParams, task_id, key: PRNGKey, episodes: int
) -> Episodes:
    """``episodes`` whole episodes of task ``task_id`` (int32 []) with the policy ``params``."""
    k_reset, k_roll = jax.random.split(key)
    state = reset_envs(family, k_reset, jnp.full((episodes,), task_id, jnp.int32))
    act = networks.make_act(net, family.action_size, family.n_tasks, params)
    _, tr = unroll(family, act, state, k_roll, family.episode_length)  # [T, K]
    return Episodes(*(jnp.swapaxes(x, 0, 1) for x in (tr.obs, tr.action, tr.log_prob, tr.reward, tr.valid)))


def episode_returns(batch: Episodes) -> jax.Array:
    """float32 [...]: the mean undiscounted return of the batch's episodes (axis -2: K)."""
    return jnp.mean(jnp.sum(batch.reward, -1), -1)


def advantages(batch: Episodes, discount: float) -> jax.Array:
    """float32 [K, T]: discounted return-to-go minus its mean over the K episodes at each step
    (over the episodes still running), normalised over the batch's valid steps."""

    def back(acc, x):
        r, v = x
        acc = r + discount * acc * v
        return acc, acc

    _, rtg = jax.lax.scan(back, jnp.zeros(batch.reward.shape[0]), (batch.reward.T, batch.valid.T), reverse=True)
    rtg = rtg.T  # [K, T]
    w = batch.valid
    baseline = jnp.sum(rtg * w, 0) / jnp.maximum(jnp.sum(w, 0), 1.0)
    adv = (rtg - baseline) * w
    count = jnp.maximum(jnp.sum(w), 1.0)
    mean = jnp.sum(adv) / count
    std = jnp.sqrt(jnp.sum(jnp.square(adv - mean) * w) / count + 1e-8)
    return jax.lax.stop_gradient((adv - mean) / std * w)


def surrogate_loss(
    net: NetworkConfig, n_tasks: int, actor, normalizer, batch: Episodes, adv, clip_eps: float | None = None
) -> jax.Array:
    """Minus the importance-weighted advantage of the batch's actions under ``actor``: at the
    sampling policy its gradient is the policy gradient. ``clip_eps``: PPO's clipped form."""
    obs = networks.net_input(net, normalizer, batch.obs, n_tasks)
    mean, log_std = networks.policy_apply(net, batch.action.shape[-1], actor, obs)
    ratio = jnp.exp(networks.gaussian_log_prob(mean, log_std, batch.action) - batch.log_prob)
    objective = ratio * adv
    if clip_eps is not None:
        objective = jnp.minimum(objective, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    return -jnp.sum(objective * batch.valid) / jnp.maximum(jnp.sum(batch.valid), 1.0)


def inner_step(
    net: NetworkConfig,
    n_tasks: int,
    actor,
    normalizer,
    batch: Episodes,
    *,
    lr: float,
    discount: float,
    second_order: bool = False,
):
    """``actor - lr * grad L_pg(actor; batch)``: one policy-gradient step (SGD) on ``batch``.

    First order (default): the step is a constant of ``actor`` for any outer gradient.
    """
    adv = advantages(batch, discount)
    grads = jax.grad(surrogate_loss, argnums=2)(net, n_tasks, actor, normalizer, batch, adv)
    if not second_order:
        grads = jax.lax.stop_gradient(grads)
    return jax.tree.map(lambda p, g: p - lr * g, actor, grads)


@struct.dataclass
class MetaState:
    """Carry of meta-training: the meta-policy, Adam's state, iterations done, the key."""

    params: AgentParams
    opt_state: Any
    iteration: jax.Array
    key: PRNGKey


def _optimizer(config: MAMLConfig) -> optax.GradientTransformation:
    return training.clipped_adam(config.max_grad_norm, config.outer_lr)


def slot_tasks(task_mask, iteration, meta_batch: int) -> jax.Array:
    """int32 [M]: the tasks of a meta-iteration's slots, round robin over the mask's tasks
    continuing from the previous iteration (every task gets the same slots over s iterations)."""
    n = task_mask.shape[0]
    active = jnp.nonzero(task_mask, size=n, fill_value=0)[0]
    s = jnp.maximum(jnp.sum(task_mask.astype(jnp.int32)), 1)
    return active[(iteration * meta_batch + jnp.arange(meta_batch)) % s].astype(jnp.int32)


def meta_loss(config: MAMLConfig, family: TaskFamily, actor, normalizer, pre: Episodes, post: Episodes, post_adv):
    """Mean over slots of PPO's clipped surrogate of the post-adaptation episodes at the adapted
    policy ``theta'_m(actor)`` (leaves of ``pre``/``post`` [M, K, T, ...])."""
    n, net = family.n_tasks, config.network
    step = dict(lr=config.inner_lr, discount=config.discount, second_order=config.second_order)

    def one(pre_m, post_m, adv_m):
        adapted = inner_step(net, n, actor, normalizer, pre_m, **step)
        return surrogate_loss(net, n, adapted, normalizer, post_m, adv_m, config.clip_eps)

    return jnp.mean(jax.vmap(one)(pre, post, post_adv))


def collect(config: MAMLConfig, family: TaskFamily, params: AgentParams, tasks, key: PRNGKey):
    """A meta-batch: K episodes of each slot's task (int32 [M]) with ``params``, the adapted
    actor of each slot, and K fresh episodes with it.

    Returns:
        ``(pre, post, post_adv)``: :class:`Episodes` with leaves [M, K, T, ...] and the
        post-adaptation advantages float32 [M, K, T].
    """
    n, net, K = family.n_tasks, config.network, config.episodes
    k_pre, k_post = jax.random.split(key)
    pre = jax.vmap(lambda t, k: sample(net, family, params, t, k, K))(tasks, jax.random.split(k_pre, tasks.shape[0]))

    def sample_adapted(actor, t, k):
        return sample(net, family, params.replace(actor=actor), t, k, K)

    adapted = adapt_slots(config, n, params, pre)
    post = jax.vmap(sample_adapted)(adapted, tasks, jax.random.split(k_post, tasks.shape[0]))
    return pre, post, jax.vmap(lambda b: advantages(b, config.discount))(post)


def adapt_slots(config: MAMLConfig, n_tasks: int, params: AgentParams, pre: Episodes):
    """The actor of every slot after the inner step on its episodes (``pre`` leaves [M, K, T, ...]):
    actor leaves with leading [M]."""

    def adapt(batch):
        lr, discount = config.inner_lr, config.discount
        return inner_step(config.network, n_tasks, params.actor, params.normalizer, batch, lr=lr, discount=discount)

    return jax.vmap(adapt)(pre)


def meta_update(
    config: MAMLConfig, family, state: MetaState, key: PRNGKey, tasks, pre: Episodes, post: Episodes
) -> tuple[MetaState, Metrics]:
    """The learning half of a meta-iteration, from its sampled episodes (leaves [M, K, T, ...] of
    the slots' tasks int32 [M]): ``outer_epochs`` Adam steps on :func:`meta_loss`, then the
    normaliser; ``key`` is the state's next key. Only ``family.n_tasks`` is read: the episodes may
    come from any simulator."""
    n = family.n_tasks
    post_adv = jax.vmap(lambda b: advantages(b, config.discount))(post)
    params = state.params
    optimizer = _optimizer(config)
    grad_fn = jax.value_and_grad(meta_loss, argnums=2)

    def outer(carry, _):
        actor, opt_state = carry
        loss, grads = grad_fn(config, family, actor, params.normalizer, pre, post, post_adv)
        updates, opt_state = optimizer.update(grads, opt_state, actor)
        return (optax.apply_updates(actor, updates), opt_state), (loss, optax.tree.norm(grads))

    (actor, opt_state), (loss, grad_norm) = jax.lax.scan(
        outer, (params.actor, state.opt_state), None, length=config.outer_epochs
    )
    # every observation the iteration sampled, once, after the outer steps
    obs = jnp.concatenate([pre.obs, post.obs]).reshape(-1, pre.obs.shape[-1])
    valid = jnp.concatenate([pre.valid, post.valid]).reshape(-1)
    normalizer = networks.normalizer_update(params.normalizer, obs, valid)
    pre_ret, post_ret = episode_returns(pre), episode_returns(post)  # [M]
    count = jax.ops.segment_sum(jnp.ones_like(pre_ret), tasks, n)
    per_task = lambda r: jnp.where(count > 0, jax.ops.segment_sum(r, tasks, n) / jnp.maximum(count, 1), jnp.nan)  # noqa: E731
    finite = jnp.all(jnp.isfinite(jnp.concatenate([loss, grad_norm, pre.reward.reshape(-1), post.reward.reshape(-1)])))
    # env steps actually taken per task (an episode that ends early stops counting)
    steps = jnp.sum(pre.valid, (1, 2)) + jnp.sum(post.valid, (1, 2))  # [M]
    metrics = {
        "pre_return": per_task(pre_ret),
        "post_return": per_task(post_ret),
        "slots": count,
        "env_steps": jax.ops.segment_sum(steps, tasks, n),
        "loss": jnp.mean(loss),
        "grad_norm": jnp.mean(grad_norm),
        "finite": finite,
    }
    params = AgentParams(actor=actor, critic=params.critic, normalizer=normalizer)
    return MetaState(params, opt_state, state.iteration + 1, key), metrics


def meta_iteration(config: MAMLConfig, family: TaskFamily, state: MetaState, task_mask) -> tuple[MetaState, Metrics]:
    """One meta-iteration: sample, adapt every slot, sample again, ``outer_epochs`` Adam steps."""
    key, k_batch = jax.random.split(state.key)
    tasks = slot_tasks(task_mask, state.iteration, config.meta_batch)
    pre, post, _ = collect(config, family, state.params, tasks, k_batch)
    return meta_update(config, family, state, key, tasks, pre, post)


_INACTIVE = dict(pre_return=jnp.nan, post_return=jnp.nan, slots=0.0, env_steps=0.0, loss=jnp.nan, grad_norm=jnp.nan)


def gate(state: MetaState, new: MetaState, metrics: Metrics, active_iterations) -> tuple[MetaState, Metrics]:
    """``new`` if ``state`` is before iteration ``active_iterations``, else ``state`` (its
    iteration counted on) with NaN returns, loss and gradient norm, zero slots and env steps and
    a finite flag (:func:`pgx_jax.rl.training.gate`)."""
    gated, metrics = training.gate(state.iteration < active_iterations, state, new, metrics, _INACTIVE)
    return gated.replace(iteration=state.iteration + 1), metrics


def init_state(config: MAMLConfig, family: TaskFamily, key: PRNGKey, init_params: AgentParams | None = None):
    """The meta-policy (fresh unless ``init_params``) and Adam's state before the first iteration."""
    k_params, k_state = jax.random.split(key)
    init_params = training.initial_params(config.network, family, k_params, init_params)
    return MetaState(init_params, _optimizer(config).init(init_params.actor), jnp.zeros((), jnp.int32), k_state)


def meta_train(
    config: MAMLConfig,
    family: TaskFamily,
    task_mask,
    key: PRNGKey,
    num_iterations: int,
    active_iterations=None,
    init_params: AgentParams | None = None,
) -> tuple[AgentParams, Metrics]:
    """Meta-train one policy on the tasks of ``task_mask`` (bool [N]). Pure; vmappable over
    ``task_mask``, ``key`` and ``active_iterations`` (int32 []: iterations from that index on
    leave the state unchanged and report NaN returns).

    Returns:
        ``(params, metrics)``; metrics have leading axis [I]: ``pre_return`` / ``post_return``
        float32 [I, N] (mean return of the iteration's episodes per task before / after the
        inner step; NaN for tasks without a slot), ``slots`` [I, N], ``env_steps`` [I, N] (the
        valid steps its episodes took: fewer than slots x 2K x T where episodes end early),
        ``loss``, ``grad_norm`` (NaN past ``active_iterations``), ``finite`` [I].
    """
    state = init_state(config, family, key, init_params)
    mask = jnp.asarray(task_mask, bool)

    def body(state, _):
        new, metrics = meta_iteration(config, family, state, mask)
        return (new, metrics) if active_iterations is None else gate(state, new, metrics, active_iterations)

    state, metrics = jax.lax.scan(body, state, None, length=num_iterations)
    return state.params, metrics


def meta_train_vmapped(
    config: MAMLConfig, family: TaskFamily, masks, keys, num_iterations: int, active_iterations, init_params=None
):
    """G meta-trainings (masks bool [G, N], keys [G], active_iterations int32 [G]) in one call;
    ``init_params`` (shared by all, or None: each its own from its key)."""
    fn = lambda m, k, a: meta_train(config, family, m, k, num_iterations, a, init_params)  # noqa: E731
    return jax.vmap(fn)(masks, keys, active_iterations)


def adaptation_curve(config: MAMLConfig, family: TaskFamily, params: AgentParams, task_id, key: PRNGKey) -> jax.Array:
    """float32 [A + 1]: the mean return on task ``task_id`` of the policy after 0, 1, ..., A
    adaptation steps from ``params`` (each step a policy-gradient step on ``adapt_episodes``
    fresh episodes, whose mean return is the curve's point before it; the last point is a fresh
    batch after the A-th step). The keys are folded from ``key`` and the step only, so two
    meta-policies adapted to the same task meet the same start states and noise."""
    n, net, K = family.n_tasks, config.network, config.adapt_episodes

    def body(actor, step):
        batch = sample(net, family, params.replace(actor=actor), task_id, jax.random.fold_in(key, step), K)
        actor = inner_step(net, n, actor, params.normalizer, batch, lr=config.inner_lr, discount=config.discount)
        return actor, episode_returns(batch)

    actor, curve = jax.lax.scan(body, params.actor, jnp.arange(config.adapt_steps))
    last = sample(net, family, params.replace(actor=actor), task_id, jax.random.fold_in(key, config.adapt_steps), K)
    return jnp.concatenate([curve, episode_returns(last)[None]])


def probe_returns(config: MAMLConfig, family: TaskFamily, params: AgentParams, task_ids, key: PRNGKey) -> jax.Array:
    """float32 [G, K]: the mean return of ``adapt_episodes`` episodes of every task of
    ``task_ids`` (int32 [K]) under every meta-policy (params leading [G]), before any adaptation.
    Task t's episodes are keyed by ``fold_in(key, t)`` whichever policy runs them. The routing's
    data: drawn with a key of its own, so the curve a routed policy then reports starts from
    other episodes (a maximum over noisy probes would otherwise be reported as the policy's
    return)."""
    K = config.adapt_episodes

    def one(p, t):
        return episode_returns(sample(config.network, family, p, t, jax.random.fold_in(key, t), K))

    return jax.vmap(lambda p: jax.vmap(lambda t: one(p, t))(task_ids))(params)


def adaptation_curves(config: MAMLConfig, family: TaskFamily, params: AgentParams, task_ids, key: PRNGKey) -> jax.Array:
    """float32 [G, K, A + 1]: every meta-policy (params leading [G]) adapted to every task of
    ``task_ids`` (int32 [K]); task t's keys are ``fold_in(key, t)`` whichever policy adapts."""

    def one_policy(p):
        return jax.vmap(lambda t: adaptation_curve(config, family, p, t, jax.random.fold_in(key, t)))(task_ids)

    return jax.vmap(one_policy)(params)


def fit_critic(
    net: NetworkConfig,
    family: TaskFamily,
    params: AgentParams,
    key: PRNGKey,
    *,
    reward_scale: float,
    discount: float,
    episodes: int = 8,
    steps: int = 300,
    lr: float = 1e-3,
) -> AgentParams:
    """``params`` with a critic fitted to the policy's discounted returns-to-go of the scaled
    rewards on every task (Monte Carlo, ``steps`` Adam steps on ``episodes`` episodes per task).

    MAML trains no critic (its advantages need none); PolicyGradEx's gradient features take
    their advantages from theta*'s critic, so a MAML meta-policy used as theta* needs one. Pass the
    ``reward_scale`` and ``discount`` of the PPO config the features are collected with.
    """
    n = family.n_tasks
    task_ids = jnp.repeat(jnp.arange(n, dtype=jnp.int32), episodes)
    k_reset, k_roll = jax.random.split(key)
    act = networks.make_act(net, family.action_size, n, params)
    _, tr = unroll(family, act, reset_envs(family, k_reset, task_ids), k_roll, family.episode_length)  # [T, E]

    def back(acc, x):
        r, v = x
        acc = r * reward_scale + discount * acc * v
        return acc, acc

    _, target = jax.lax.scan(back, jnp.zeros(task_ids.shape[0]), (tr.reward, tr.valid), reverse=True)
    obs = networks.net_input(net, params.normalizer, tr.obs, n)
    optimizer = optax.adam(lr)

    def loss(critic):
        v = networks.value_apply(net, critic, obs)
        return 0.5 * jnp.sum(jnp.square(v - target) * tr.valid) / jnp.maximum(jnp.sum(tr.valid), 1.0)

    def step(carry, _):
        critic, opt_state = carry
        value, grads = jax.value_and_grad(loss)(critic)
        updates, opt_state = optimizer.update(grads, opt_state, critic)
        return (optax.apply_updates(critic, updates), opt_state), value

    (critic, _), _ = jax.lax.scan(step, (params.critic, optimizer.init(params.critic)), None, length=steps)
    return params.replace(critic=critic)
