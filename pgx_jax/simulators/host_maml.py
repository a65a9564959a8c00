"""MAML on host-stepped families: the episodes sampled on the host, the learning jitted.

Same contracts as :func:`pgx_jax.rl.maml.meta_train_vmapped`, :func:`pgx_jax.rl.maml.probe_returns`
and :func:`pgx_jax.rl.maml.adaptation_curves`, and the same learning code: a meta-iteration samples
its slots' episodes on the host (:func:`sample`), adapts every slot
(:func:`pgx_jax.rl.maml.adapt_slots`), samples again and learns with :func:`pgx_jax.rl.maml.meta_update`,
all groups in one jitted call per stage. Only the groups still before their ``active_iterations``
step environments: a finished group's slots are zeros that :func:`pgx_jax.rl.maml.gate` discards.

Randomness is keyed per episode *stream*, never by a position in the batch: every slot of a
meta-iteration draws a stream from its group's key, and an episode's reset seed and action
noise are :func:`pgx_jax.rl.rollout.episode_keys` of (stream, episode). A group's meta-training is
therefore the same whichever groups train beside it; at adaptation and in the routing probe the
stream is the test task, so every meta-policy meets the same start states and noise on a task.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax.core.config import NetworkConfig
from pgx_jax.core.types import PRNGKey
from pgx_jax.families.host import HostFamily
from pgx_jax.rl import maml, networks
from pgx_jax.rl.maml import Episodes, MAMLConfig
from pgx_jax.rl.networks import AgentParams
from pgx_jax.rl.rollout import keyed_act
from pgx_jax.simulators.host_rollout import rollout_chunks

_STREAMS = 2**31 - 1


@functools.partial(jax.jit, static_argnames=("net", "action_size", "n_tasks", "episodes"))
def _act(params, obs, step_key, streams, *, net, action_size, n_tasks, episodes):
    """P policies (leading [P]) on their K = ``episodes`` envs each (obs [P, K, O]); the noise of
    env (p, j) is keyed by (``streams[p]``, j) and the step's key."""
    ep = jnp.arange(episodes, dtype=jnp.int32)

    def one(p, o, stream):
        act = networks.make_act(net, action_size, n_tasks, p)
        return keyed_act(act, jnp.full((episodes,), stream, jnp.int32), ep)(o, step_key)

    return jax.vmap(one)(params, obs, streams)


def sample(
    net: NetworkConfig, family: HostFamily, params: AgentParams, task_ids, streams, key: PRNGKey, episodes: int
) -> Episodes:
    """``episodes`` whole episodes of task ``task_ids[p]`` (int [P]) with policy p (params leading
    [P]); env (p, j) reset and acting by (``streams[p]``, j) and ``key``. Leaves [P, K, T, ...]."""
    task_ids, streams = np.asarray(task_ids, np.int64), np.asarray(streams, np.int64)
    k = episodes
    static = dict(net=net, action_size=family.action_size, n_tasks=family.n_tasks, episodes=k)

    def act_for(part, lo, hi):
        return functools.partial(_act, part, streams=jnp.asarray(streams[lo:hi], jnp.int32), **static)

    env_tasks, env_streams = np.repeat(task_ids[:, None], k, 1), np.repeat(streams[:, None], k, 1)  # [P, K]
    parts = [
        [np.moveaxis(x, 0, 2) for x in (tr.obs, tr.action, tr.log_prob, tr.reward, tr.valid)]  # [P', K, T, ...]
        for _, _, tr in rollout_chunks(family, params, env_tasks, env_streams, k, key, act_for)
    ]
    return Episodes(*(jnp.asarray(np.concatenate(xs)) for xs in zip(*parts, strict=True)))


def _stack(x, m: int):
    """Every leaf's rows repeated m times each: [G, ...] -> [G * m, ...] (policy-major)."""
    return jax.tree.map(lambda a: jnp.repeat(a, m, axis=0), x)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _prepare(config: MAMLConfig, family, states: maml.MetaState, masks):
    """Per group: the state's next key, the slots' tasks int32 [G, M] and the streams of the
    episodes before and after the inner step int32 [G, M]."""

    def one(state, mask):
        key, k_batch = jax.random.split(state.key)
        tasks = maml.slot_tasks(mask, state.iteration, config.meta_batch)
        k_pre, k_post = jax.random.split(k_batch)
        draw = lambda k: jax.random.randint(k, (config.meta_batch,), 0, _STREAMS, jnp.int32)  # noqa: E731
        return key, tasks, draw(k_pre), draw(k_post)

    return jax.vmap(one)(states, masks)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _adapt(config: MAMLConfig, family, params: AgentParams, pre: Episodes):
    """The adapted actor of every slot of every group (pre leaves [G, M, K, T, ...])."""
    return jax.vmap(lambda p, b: maml.adapt_slots(config, family.n_tasks, p, b))(params, pre)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _update(config: MAMLConfig, family, states, keys, tasks, pre, post, active):
    def one(state, key, t, b_pre, b_post, a):
        new, metrics = maml.meta_update(config, family, state, key, t, b_pre, b_post)
        return maml.gate(state, new, metrics, a)

    return jax.vmap(one)(states, keys, tasks, pre, post, active)


def _on_live(config: MAMLConfig, family: HostFamily, params: AgentParams, tasks, streams, live, key) -> Episodes:
    """K episodes of every slot (tasks, streams int [G, M]) of the ``live`` groups (bool [G]) with
    the slots' policies (leading [G, M]); zeros for the other groups. Leaves [G, M, K, T, ...]."""
    g, m = tasks.shape
    rows = np.flatnonzero(live)
    if rows.size == 0:  # every group here has finished (a process's block of small groups): all gated out
        lead = (g, m, config.episodes, family.episode_length)
        z = lambda *tail: jnp.zeros((*lead, *tail), jnp.float32)  # noqa: E731
        return Episodes(z(family.obs_size), z(family.action_size), z(), z(), z())
    flat = jax.tree.map(lambda x: x[rows].reshape(-1, *x.shape[2:]), params)
    got = sample(config.network, family, flat, tasks[rows].reshape(-1), streams[rows].reshape(-1), key, config.episodes)

    def place(x):
        out = jnp.zeros((g, m, *x.shape[1:]), x.dtype)
        return out.at[rows].set(x.reshape(len(rows), m, *x.shape[1:]))

    return jax.tree.map(place, got)


def meta_train_many(
    config: MAMLConfig, family: HostFamily, masks, keys, num_iterations: int, active_iterations, init_params
):
    """:func:`pgx_jax.rl.maml.meta_train_vmapped` with the episodes stepped on the host: G
    meta-trainings (masks bool [G, N], keys [G], active_iterations int [G]) from the shared
    ``init_params``; returns params with leading [G] and metrics with leading [G, I]."""
    masks, active = jnp.asarray(masks, bool), np.asarray(active_iterations, np.int32)
    states = jax.vmap(lambda k: maml.init_state(config, family, k, init_params))(jnp.asarray(keys))
    m = config.meta_batch
    # the episodes' common key: every slot's randomness is its stream, drawn from its group's key
    k_common = jax.random.PRNGKey(0)
    per_iteration = []
    for it in range(num_iterations):
        live = it < active
        next_keys, tasks, s_pre, s_post = _prepare(config, family, states, masks)
        tasks, s_pre, s_post = np.asarray(tasks), np.asarray(s_pre), np.asarray(s_post)
        k_pre, k_post = jax.random.split(jax.random.fold_in(k_common, it))
        slot_params = jax.tree.map(lambda x: x.reshape(-1, m, *x.shape[1:]), _stack(states.params, m))
        pre = _on_live(config, family, slot_params, tasks, s_pre, live, k_pre)
        adapted = _adapt(config, family, states.params, pre)  # actor leaves [G, M, ...]
        post_params = slot_params.replace(actor=adapted)
        post = _on_live(config, family, post_params, tasks, s_post, live, k_post)
        states, metrics = _update(config, family, states, next_keys, jnp.asarray(tasks), pre, post, jnp.asarray(active))
        per_iteration.append(metrics)
    return states.params, jax.tree.map(lambda *xs: jnp.stack(xs, 1), *per_iteration)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _inner(config: MAMLConfig, family, params: AgentParams, batch: Episodes):
    """One adaptation step of every policy (leading [P]) on its own batch (leaves [P, K, T, ...])."""
    lr, discount, net = config.inner_lr, config.discount, config.network

    def one(p, b):
        return maml.inner_step(net, family.n_tasks, p.actor, p.normalizer, b, lr=lr, discount=discount)

    return params.replace(actor=jax.vmap(one)(params, batch))


def _per_task(params: AgentParams, task_ids):
    """Every meta-policy (leading [G]) once per test task: leading [G * m], tasks int [G * m]."""
    task_ids = np.asarray(task_ids, np.int64)
    g = jax.tree.leaves(params)[0].shape[0]
    return _stack(params, task_ids.shape[0]), np.tile(task_ids, g), g


def probe_returns(config: MAMLConfig, family: HostFamily, params: AgentParams, task_ids, key: PRNGKey):
    """:func:`pgx_jax.rl.maml.probe_returns` on the host: float32 [G, m]; task t's episodes are
    stream t of ``key`` whichever meta-policy runs them."""
    flat, tasks, g = _per_task(params, task_ids)
    batch = sample(config.network, family, flat, tasks, tasks, key, config.adapt_episodes)
    return maml.episode_returns(batch).reshape(g, -1)


def adaptation_curves(config: MAMLConfig, family: HostFamily, params: AgentParams, task_ids, key: PRNGKey):
    """:func:`pgx_jax.rl.maml.adaptation_curves` on the host: float32 [G, m, A + 1]; step a's
    episodes of task t are stream t of ``fold_in(key, a)`` whichever meta-policy adapts."""
    flat, tasks, g = _per_task(params, task_ids)
    curve = []
    for a in range(config.adapt_steps + 1):
        batch = sample(config.network, family, flat, tasks, tasks, jax.random.fold_in(key, a), config.adapt_episodes)
        curve.append(maml.episode_returns(batch))
        if a < config.adapt_steps:
            flat = _inner(config, family, flat, batch)
    return jnp.stack(curve, -1).reshape(g, -1, config.adapt_steps + 1)
