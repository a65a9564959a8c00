"""Functional multitask PPO: a whole training run is one pure function.

``train(config, family, task_mask, key, init_params=None) -> (params, metrics)`` is pure and
jittable, and ``jax.vmap`` over ``task_mask`` (bool [N]) and ``key`` runs many trainings in one
compiled call (:func:`train_vmapped`; :func:`pgx_jax.train_many` checks its input first and runs
it for any family through its simulator). Environments are spread
evenly over the tasks in the mask; a task outside the mask never receives experience.

The update is standard PPO (arXiv:1707.06347): GAE, clipped surrogate, value loss, entropy
bonus, observation normalisation, global-norm gradient clipping, Adam.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import pgx_jax.rl.networks as networks
import pgx_jax.rl.training as training
from pgx_jax.core.config import PPOConfig
from pgx_jax.core.types import PRNGKey, check_mask
from pgx_jax.families.base import TaskFamily, TaskState
from pgx_jax.rl.networks import AgentParams
from pgx_jax.rl.rollout import assign_tasks, reset_envs, segment_mean, unroll
from pgx_jax.rl.training import Metrics


@struct.dataclass
class TrainState:
    """Carry of the update loop (one training run).

    Attributes:
        params: actor, critic and normaliser.
        opt_state: Adam state of ``{"actor", "critic"}``.
        env: :class:`TaskState` of E environments.
        task_ids: int32 [E], the task of each environment.
        episode_return: float32 [E], return of the running episode.
        update: int32 [], updates done so far.
        key: PRNG key.
    """

    params: AgentParams
    opt_state: Any
    env: TaskState
    task_ids: jax.Array
    episode_return: jax.Array
    update: jax.Array
    key: PRNGKey


def _optimizer(config: PPOConfig) -> optax.GradientTransformation:
    """Adam with gradient clipping applied to actor and critic separately.

    One global norm over both lets the large early value gradients scale the policy gradient
    down to almost nothing (measured on reacher: approx-KL ~0.002 per update, slow learning).
    """
    inner = training.clipped_adam(config.max_grad_norm, config.learning_rate)
    return optax.multi_transform({"actor": inner, "critic": inner}, {"actor": "actor", "critic": "critic"})


def _trainable(params: AgentParams) -> dict:
    return {"actor": params.actor, "critic": params.critic}


def gae(rewards, values, bootstrap, terminal, *, discount: float, lam: float):
    """Generalised advantage estimates.

    Args:
        rewards, values, terminal: float32 [T, E].
        bootstrap: float32 [E], value of the state after the last step.

    Returns:
        (advantages, value targets), float32 [T, E], with gradients stopped.
    """
    next_values = jnp.concatenate([values[1:], bootstrap[None]], 0)
    not_term = 1.0 - terminal
    deltas = rewards + discount * not_term * next_values - values

    def body(acc, x):
        delta, nt = x
        acc = delta + discount * lam * nt * acc
        return acc, acc

    _, adv = jax.lax.scan(body, jnp.zeros_like(bootstrap), (deltas, not_term), reverse=True)
    return jax.lax.stop_gradient(adv), jax.lax.stop_gradient(adv + values)


def _wmean(x, w):
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def ppo_loss(trainable, normalizer, batch, config: PPOConfig, family: TaskFamily):
    """Clipped-surrogate PPO loss of one minibatch (leaves with leading axis [B]).

    Returns:
        (loss [], metrics dict), shaped for ``jax.value_and_grad(has_aux=True)``.
    """
    obs = networks.net_input(config.network, normalizer, batch["obs"], family.n_tasks)
    mean, log_std = networks.policy_apply(config.network, family.action_size, trainable["actor"], obs)
    log_prob = networks.gaussian_log_prob(mean, log_std, batch["action"])
    w = batch["valid"]
    adv = batch["advantage"]
    adv_mean = _wmean(adv, w)
    adv = (adv - adv_mean) / jnp.sqrt(_wmean(jnp.square(adv - adv_mean), w) + 1e-8)
    ratio = jnp.exp(log_prob - batch["log_prob"])
    clipped = jnp.clip(ratio, 1.0 - config.clip_eps, 1.0 + config.clip_eps)
    policy_loss = -_wmean(jnp.minimum(ratio * adv, clipped * adv), w)
    value = networks.value_apply(config.network, trainable["critic"], obs)
    value_loss = 0.5 * _wmean(jnp.square(value - batch["target"]), w)
    entropy = _wmean(networks.gaussian_entropy(log_std), w)
    loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
    approx_kl = _wmean((ratio - 1.0) - (log_prob - batch["log_prob"]), w)
    return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy, "approx_kl": approx_kl}


def init_state(
    config: PPOConfig,
    family: TaskFamily,
    task_mask,
    key: PRNGKey,
    init_params: AgentParams | None = None,
    *,
    with_env: bool = True,
) -> TrainState:
    """The state before the first update. Pure; vmappable over ``task_mask`` and ``key``.

    ``with_env=False`` leaves ``env`` empty (None): for environments stepped outside JAX
    (:mod:`pgx_jax.simulators.host`), which keep their state on the host.
    """
    k_params, k_env, k_state = jax.random.split(key, 3)
    init_params = training.initial_params(config.network, family, k_params, init_params)
    task_ids = assign_tasks(jnp.asarray(task_mask, bool), config.num_envs)
    return TrainState(
        params=init_params,
        opt_state=_optimizer(config).init(_trainable(init_params)),
        env=reset_envs(family, k_env, task_ids) if with_env else None,
        task_ids=task_ids,
        episode_return=jnp.zeros(config.num_envs),
        update=jnp.zeros((), jnp.int32),
        key=k_state,
    )


def episode_starts(config: PPOConfig, family, update) -> jax.Array:
    """Whether update number ``update`` begins a new episode (episodes span whole updates)."""
    return update % (family.episode_length // config.unroll(family.episode_length)) == 0


def update(config: PPOConfig, family: TaskFamily, state: TrainState) -> tuple[TrainState, Metrics]:
    """One PPO update: (maybe reset), unroll T steps of E envs, GAE, epochs of minibatch SGD."""
    T = config.unroll(family.episode_length)
    key, k_reset, k_roll, k_perm = jax.random.split(state.key, 4)

    # Whole-batch reset at episode boundaries (a select: cheap next to T steps, and vmap-safe).
    starts = episode_starts(config, family, state.update)
    fresh = reset_envs(family, k_reset, state.task_ids)
    env = jax.tree.map(lambda a, b: jnp.where(starts, a, b), fresh, state.env)
    episode_return = jnp.where(starts, 0.0, state.episode_return)

    act = networks.make_act(config.network, family.action_size, family.n_tasks, state.params)
    env, traj = unroll(family, act, env, k_roll, T)
    return learn(config, family, state.replace(env=env, episode_return=episode_return, key=key), traj, k_perm)


def learn(config: PPOConfig, family, state: TrainState, traj, k_perm: PRNGKey) -> tuple[TrainState, Metrics]:
    """The learning half of :func:`update`, given the unroll ``traj`` (a ``Transition`` [T, E]).

    ``state`` already holds the environments after the unroll, the next key and the episode
    returns before it (zeroed at an episode start). Shared by the Brax path and host-stepped
    environments (:mod:`pgx_jax.simulators.host`); ``family`` needs only ``n_tasks``, ``action_size`` and
    ``episode_length``.
    """
    per_episode = family.episode_length // config.unroll(family.episode_length)
    params = state.params
    episode_return = state.episode_return + jnp.sum(traj.reward, 0)
    ends = (state.update + 1) % per_episode == 0
    ret, cnt = segment_mean(episode_return, jnp.ones_like(episode_return), state.task_ids, family.n_tasks)
    ret = jnp.where(ends, ret, jnp.nan)
    cnt = jnp.where(ends, cnt, 0.0)

    valid_flat = traj.valid.reshape(-1)
    normalizer = params.normalizer
    if config.normalize_observations:
        normalizer = networks.normalizer_update(normalizer, traj.obs.reshape(-1, traj.obs.shape[-1]), valid_flat)
    critic = functools.partial(networks.value_apply, config.network, params.critic)
    values = critic(networks.net_input(config.network, normalizer, traj.obs, family.n_tasks))
    bootstrap = critic(networks.net_input(config.network, normalizer, traj.next_obs[-1], family.n_tasks))
    advantage, target = gae(
        traj.reward * config.reward_scale,
        values,
        bootstrap,
        traj.terminal,
        discount=config.discount,
        lam=config.gae_lambda,
    )
    batch = {
        "obs": traj.obs,
        "action": traj.action,
        "log_prob": traj.log_prob,
        "advantage": advantage,
        "target": target,
        "valid": traj.valid,
    }
    batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
    batch_size = valid_flat.shape[0]
    mb = batch_size // config.num_minibatches
    optimizer = _optimizer(config)
    grad_fn = jax.value_and_grad(ppo_loss, has_aux=True)

    def minibatch_step(carry, idx):
        trainable, opt_state = carry
        mini = jax.tree.map(lambda x: x[idx], batch)
        (loss, aux), grads = grad_fn(trainable, normalizer, mini, config, family)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        aux = dict(aux, loss=loss, grad_norm=optax.tree.norm(grads))
        return (trainable, opt_state), aux

    def epoch(carry, key):
        perm = jax.random.permutation(key, batch_size).reshape(config.num_minibatches, mb)
        return jax.lax.scan(minibatch_step, carry, perm)

    (trainable, opt_state), aux = jax.lax.scan(
        epoch, (_trainable(params), state.opt_state), jax.random.split(k_perm, config.num_epochs)
    )
    params = AgentParams(actor=trainable["actor"], critic=trainable["critic"], normalizer=normalizer)
    aux = jax.tree.map(jnp.mean, aux)
    finite = jnp.all(jnp.isfinite(jnp.stack([aux["loss"], aux["grad_norm"], jnp.sum(traj.reward)])))
    # which tasks' environments returned a non-finite reward in this update (named by check_finite)
    bad_steps = jnp.sum(~jnp.isfinite(traj.reward), 0).astype(jnp.float32)  # [E]
    bad_reward = jax.ops.segment_sum(bad_steps, state.task_ids, family.n_tasks) > 0
    metrics = dict(aux, episode_return=ret, episode_count=cnt, finite=finite, nonfinite_reward=bad_reward)
    new_state = state.replace(
        params=params, opt_state=opt_state, episode_return=episode_return, update=state.update + 1
    )
    return new_state, metrics


_INACTIVE = {"episode_return": jnp.nan, "episode_count": 0.0, "nonfinite_reward": False}


def gate(old: TrainState, new: TrainState, metrics: Metrics, active_updates) -> tuple[TrainState, Metrics]:
    """Keep ``old`` (and report no episodes and no non-finite reward) where ``old.update >=
    active_updates``: runs of different lengths share one call (:func:`pgx_jax.rl.training.gate`).
    The update counter advances either way."""
    gated, metrics = training.gate(old.update < active_updates, old, new, metrics, _INACTIVE)
    return gated.replace(update=old.update + 1), metrics


def run_updates(config: PPOConfig, family: TaskFamily, state: TrainState, num_updates: int, active_updates=None):
    """``num_updates`` updates in one ``lax.scan``; metrics get a leading axis [U].

    ``active_updates`` (int32 [], may be traced): updates from that index on leave the state
    unchanged and report NaN returns, so runs with different budgets share one vmapped call.
    """

    def body(state, _):
        new, metrics = update(config, family, state)
        if active_updates is None:
            return new, metrics
        return gate(state, new, metrics, active_updates)

    return jax.lax.scan(body, state, None, length=num_updates)


def train(
    config: PPOConfig,
    family: TaskFamily,
    task_mask,
    key: PRNGKey,
    init_params: AgentParams | None = None,
    active_updates=None,
) -> tuple[AgentParams, Metrics]:
    """Train one task-conditioned policy on the tasks in ``task_mask``.

    Pure and jittable (``config`` and ``family`` are static); ``jax.vmap`` over ``task_mask``
    and ``key`` trains many policies in one call.

    Args:
        config: PPO hyperparameters and budget.
        family: the task family.
        task_mask: bool [N], the tasks to train on (at least one).
        key: PRNG key.
        init_params: start from these (e.g. a meta-trained policy); default fresh.
        active_updates: optional int32 [] (vmappable): only the first ``active_updates`` of the
            config's updates run; later ones are no-ops. Gives runs of different length one
            compiled call (e.g. equal per-task budgets for groups of different sizes).

    Returns:
        ``(params, metrics)``; metrics leaves have leading axis [U]:
        ``episode_return`` float32 [U, N] (mean return of the episodes that ended in that
        update, NaN where none did: tasks outside the mask, or mid-episode updates),
        ``episode_count`` [U, N], ``loss``, ``policy_loss``, ``value_loss``, ``entropy``,
        ``approx_kl``, ``grad_norm`` [U], and ``finite`` bool [U] (use :func:`check_finite`).

    Raises:
        ValueError: (on the host, before compiling) a config that does not fit the family, or a
            concrete mask that is malformed or selects no task.
    """
    config.check_for(family.n_tasks, family.episode_length)
    check_mask(task_mask, family.n_tasks)
    state = init_state(config, family, task_mask, key, init_params)
    state, metrics = run_updates(config, family, state, config.num_updates(family.episode_length), active_updates)
    return state.params, metrics


def train_vmapped(config: PPOConfig, family: TaskFamily, task_masks, keys, init_params=None, active_updates=None):
    """S trainings: :func:`train` vmapped over masks [S, N], keys [S] and (optionally)
    ``active_updates`` int32 [S]; ``init_params`` shared. Pure: jit it with ``config`` and
    ``family`` static (:func:`pgx_jax.simulators.train_many` validates and does)."""
    axes = (None, None, 0, 0, None, None if active_updates is None else 0)
    return jax.vmap(train, in_axes=axes)(config, family, task_masks, keys, init_params, active_updates)


def train_blocks(
    config: PPOConfig, family: TaskFamily, task_masks, keys, init_params=None, active_updates=None, *, block: int
):
    """:func:`train_vmapped` ``block`` runs at a time: a ``lax.map`` over S / ``block`` blocks,
    each one vmapped program of ``block`` runs (S must be a multiple of ``block``).

    XLA picks kernels, and so summation orders, by the shape of the whole batch: on CPU a
    batched matmul of one run rounds differently from one of two runs, and a reduction over
    [3, E, 64] differently from one over [4, E, 64]. Training amplifies those last-bit
    differences into different policies. When every block has the same shape, a run's result
    depends only on its own mask, key and budget. It does not depend on the other runs or on
    its position among them (tests/test_groups.py). Pure; jit it with ``config``,
    ``family`` and ``block`` static.
    """
    s = task_masks.shape[0]
    if s % block:
        raise ValueError(f"{s} runs do not fill blocks of {block}; pad them to a multiple of it")
    split = lambda x: x.reshape((s // block, block) + x.shape[1:])
    xs = (split(task_masks), split(keys), None if active_updates is None else split(active_updates))
    out = jax.lax.map(lambda b: train_vmapped(config, family, b[0], b[1], init_params, b[2]), xs)
    return jax.tree.map(lambda x: x.reshape((s,) + x.shape[2:]), out)


def check_finite(metrics: Metrics, task_names=None) -> None:
    """Raise ``FloatingPointError`` if any update saw a non-finite loss, gradient or reward,
    naming the first such update (and run, for stacked runs) and the tasks whose rewards were
    non-finite there (by name with ``task_names``): never averaged away into a NaN return."""
    finite = np.asarray(metrics["finite"])
    if finite.all():
        return
    bad = np.argwhere(~finite)
    first = bad[0].tolist()
    where = f"update {first[-1]}" + (f" of run {first[0]}" if len(first) > 1 else "")
    what = "loss or gradient"
    if "nonfinite_reward" in metrics:
        tasks = np.flatnonzero(np.asarray(metrics["nonfinite_reward"])[tuple(first)]).tolist()
        if tasks:
            named = [task_names[t] for t in tasks] if task_names is not None else tasks
            what = f"reward of task(s) {named}"
    raise FloatingPointError(
        f"non-finite loss, gradient or reward in {len(bad)} update(s); first at {where} "
        f"(index {first}): non-finite {what}"
    )


def progress_metrics(metrics: Metrics, task_names, previous: dict[str, float] | None = None) -> dict[str, float]:
    """What a ``progress_fn(env_steps, metrics)`` callback receives after a chunk of updates
    (``metrics``: one run's, leading [U, ...]), as floats: every scalar of the last update
    (``loss``, ``grad_norm``, ``entropy``, ...); ``episode_return/<task>``: the mean return of
    the task's most recently finished episodes (those that ended in the chunk's last update in
    which any of the task's episodes ended; where none ended in this chunk, the value in
    ``previous``, the last report's, if it had one); ``episode_return``: the mean of those over
    the tasks that have one. Tasks that never finished an episode are absent (an episode longer
    than a chunk has no return yet)."""
    last = {k: np.asarray(v)[-1] for k, v in metrics.items()}
    out = {k: float(v) for k, v in last.items() if np.ndim(v) == 0 and k != "finite"}
    ret, count = np.asarray(metrics["episode_return"]), np.asarray(metrics["episode_count"])
    if ret.ndim != 2 or ret.shape[1] != len(task_names):
        raise ValueError(f"progress_metrics reads one run's metrics, [U, N={len(task_names)}]; got {ret.shape}")
    per_task = {k: v for k, v in (previous or {}).items() if k.startswith("episode_return/")}
    for t, name in enumerate(task_names):
        ended = np.flatnonzero(count[:, t] > 0)
        if ended.size:
            per_task[f"episode_return/{name}"] = float(ret[ended[-1], t])
    out["episode_return"] = float(np.mean(list(per_task.values()))) if per_task else float("nan")
    out.update(per_task)
    return out
