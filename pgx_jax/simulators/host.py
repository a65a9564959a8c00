"""The host simulator: gymnasium-API environments stepped in Python, the learning code jitted.

Rollouts run on the host, one Python step per environment (:class:`pgx_jax.families.EnvBatch`);
the policy acts on a whole batch in one jitted call, PPO learns with :func:`pgx_jax.rl.ppo.learn`,
the features are :func:`pgx_jax.estimation.features.process_trajectory` of the host rollout, and the
surrogate solves, affinity and clustering never see the difference. Same keys and the same
contracts as :class:`pgx_jax.simulators.jitted.JaxSimulator`; what differs is said by the
class attributes of :class:`HostSimulator` (no FLOP counts, smaller rollout budgets).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import pgx_jax.simulators.host_maml as host_maml
from pgx_jax.core.config import NetworkConfig, PPOConfig
from pgx_jax.core.types import PRNGKey
from pgx_jax.estimation import features
from pgx_jax.estimation.features import subset_params
from pgx_jax.families.host import HostFamily
from pgx_jax.families.host_workers import open_batch
from pgx_jax.rl import networks, ppo
from pgx_jax.rl.evaluate import random_act
from pgx_jax.rl.networks import AgentParams
from pgx_jax.rl.rollout import Transition, episode_ids, keyed_act
from pgx_jax.simulators.host_rollout import rollout_chunks, unroll


class HostSimulator:
    """:class:`pgx_jax.simulators.Simulator` for a :class:`pgx_jax.families.HostFamily`."""

    counts_flops = False  # the environments step outside JAX: no program to count
    # host families step in Python: 4x fewer evaluation episodes, and b_i from the features'
    # own sample (16x more rollout would cost minutes to hours)
    eval_episodes = 8
    gradient_transitions = None

    def __init__(self, family: HostFamily):
        self.family = family

    def train_many(self, config, masks, keys, init_params, active_updates, *, on_update=None, block=None):
        kw = dict(on_update=on_update, block=block)
        return train_many(config, self.family, masks, keys, init_params, active_updates, **kw)

    def train_many_timed(self, config, masks, keys, init_params, active_updates):
        t0 = time.perf_counter()  # host rollouts: nothing to compile ahead, no FLOPs to count
        params, metrics = self.train_many(config, masks, keys, init_params, active_updates)
        info = {"compile_s": 0.0, "train_s": time.perf_counter() - t0, "flops_train": None, "xla_flops_train": None}
        return params, metrics, info

    def train_one(self, config, mask, key, init_params):
        out = self.train_many(config, np.asarray(mask)[None], jnp.asarray(key)[None], init_params, None)
        return jax.tree.map(lambda x: x[0], out)

    def train_timed(self, config, mask, key):
        t0 = time.perf_counter()
        params, metrics = self.train_one(config, mask, key, None)
        jax.block_until_ready(params)
        return params, metrics, time.perf_counter() - t0, 0.0

    #: a host training's state holds live environments (Python objects): it is not checkpointed
    #: mid-run, and a killed host meta-training restarts from the beginning on ``--resume``
    resumable_training = False

    def train_chunked(
        self, config, mask, key, init_params, *, max_chunks, on_chunk, timings, checkpoint=None, start=None,
        on_metrics=None,
    ):  # fmt: skip
        del max_chunks, checkpoint  # the host loop reports every update
        if start is not None:
            raise ValueError(f"{self.family.name}: host-stepped trainings cannot resume mid-run")
        masks, keys = np.asarray(mask)[None], jnp.asarray(key)[None]
        one = None if on_metrics is None else (lambda d, m: on_metrics(d, jax.tree.map(lambda x: np.asarray(x)[:1], m)))
        out = train_many(config, self.family, masks, keys, init_params, on_update=on_chunk, on_metrics=one)
        if timings is not None:
            timings["compile_s"] = 0.0
        return jax.tree.map(lambda x: x[0], out)

    def features_xla_flops(self, ppo_config, cfg, params, key):
        del ppo_config, cfg, params, key
        return None

    def collect(self, ppo_config, cfg, params, key):
        return collect(ppo_config, cfg, self.family, params, key)

    def gradient_features(self, ppo_config, cfg, params, key):
        return gradient_features(ppo_config, cfg, self.family, params, key)

    def evaluate(self, params, task_ids, key, episodes, *, network, deterministic):
        stacked = None if params is None else jax.tree.map(lambda x: jnp.asarray(x)[None], params)
        ids = np.asarray(task_ids)[None]
        out = evaluate_policies(stacked, self.family, ids, key, episodes, network=network, deterministic=deterministic)
        return {k: v[0] for k, v in out.items()}

    def compile(self, fn):
        return fn  # the environments step in Python: nothing to trace; the policy is jitted inside

    def policies_on_subsets(self, params, masks, key, *, network, episodes, batch, max_subset_size=None):
        del batch  # chunked by the family's max_envs instead
        kmax = int(masks.sum(1).max()) if max_subset_size is None else max_subset_size
        idx = np.stack([np.resize(np.flatnonzero(m), kmax) for m in masks])  # padded with repeats
        stats = evaluate_policies(params, self.family, idx, key, episodes, network=network)
        out = {name: np.full(masks.shape, np.nan) for name in stats}
        for s, m in enumerate(masks):
            k = int(m.sum())
            for name, v in stats.items():
                out[name][s, idx[s, :k]] = v[s, :k]
        return out

    def policies_on_subsets_timed(self, params, masks, key, *, network, episodes, batch):
        t0 = time.perf_counter()
        stats = self.policies_on_subsets(params, masks, key, network=network, episodes=episodes, batch=batch)
        return stats, {"evaluate_s": time.perf_counter() - t0, "flops_evaluate": None}

    def estimates_on_subsets(
        self, theta_star, feats, betas, scales, masks, key, *, network, episodes, batch, kmax, devices
    ):
        del kmax, devices  # host rollouts: padded per policy, on the host
        params = subset_params(theta_star, feats, betas, scales)
        return self.policies_on_subsets(params, np.asarray(masks), key, network=network, episodes=episodes, batch=batch)

    # --- meta-RL (MAML) ---------------------------------------------------------------------

    def meta_train_many(self, mconfig, masks, keys, num_iterations, active_iterations, init_params):
        fam = self.family
        return host_maml.meta_train_many(mconfig, fam, masks, keys, num_iterations, active_iterations, init_params)

    def meta_probe(self, mconfig, params, task_ids, key):
        return host_maml.probe_returns(mconfig, self.family, params, task_ids, key)

    def meta_adapt(self, mconfig, params, task_ids, key):
        return host_maml.adaptation_curves(mconfig, self.family, params, task_ids, key)


def _seed(key: PRNGKey) -> int:
    return int(jax.random.randint(key, (), 0, 2**31 - 1 - 1_000_000))


@functools.partial(jax.jit, static_argnames=("net", "action_size", "n_tasks", "deterministic"))
def act_stacked(params: AgentParams, obs, key, *, net, action_size, n_tasks, deterministic=False):
    """P policies (params with leading [P]) on their own envs: obs [P, K, O] -> (action [P, K, A],
    log_prob [P, K]), one key per policy (training); ``params=None`` is the uniform random
    policy on [-1, 1]^A."""
    keys = jax.random.split(key, obs.shape[0])
    if params is None:
        return jax.vmap(random_act(action_size))(obs, keys)
    return jax.vmap(lambda p, o, k: _policy_act(p, net, action_size, n_tasks, deterministic)(o, k))(params, obs, keys)


def _policy_act(params, net, action_size: int, n_tasks: int, deterministic: bool):
    """The act function of one policy's params, or of the uniform random policy for None."""
    if params is None:
        return random_act(action_size)
    return networks.make_act(net, action_size, n_tasks, params, deterministic=deterministic)


# ---------------------------------------------------------------------------------------------
# PPO on host-stepped environments
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_states(config, family, masks, keys, init_params):
    return jax.vmap(lambda m, k: ppo.init_state(config, family, m, k, init_params, with_env=False))(masks, keys)


@jax.jit
def _split4(keys):
    return jax.vmap(lambda k: jax.random.split(k, 4))(keys)


@functools.partial(jax.jit, static_argnums=(0, 1, 6))
def _learn(config, family, states, traj, k_perm, active, gated):
    def one(state, tr, kp, act):
        new, metrics = ppo.learn(config, family, state, tr, kp)
        return ppo.gate(state, new, metrics, act) if gated else (new, metrics)

    return jax.vmap(one)(states, traj, k_perm, active)


def train_many(
    config: PPOConfig,
    family: HostFamily,
    task_masks,
    keys,
    init_params: AgentParams | None = None,
    active_updates=None,
    *,
    on_update: Callable[[int, int], None] | None = None,
    block: int | None = None,
    on_metrics: Callable[[int, dict], None] | None = None,
):
    """S PPO runs on host-stepped environments; same contract as :func:`pgx_jax.simulators.train_many`.

    Runs are grouped in chunks of at most ``family.max_envs`` environments (of ``block`` runs
    when given: S a multiple of it); within a chunk the policies act and learn in one vmapped
    call per step / update. ``on_update(done, total)`` is called on the host after every
    update, counting the updates of all chunks, and ``on_metrics(done, metrics)`` with that
    update's metrics (leading [P]: the runs of the chunk).
    """
    masks = np.asarray(task_masks, bool)
    keys = jnp.asarray(keys)
    s, e = masks.shape[0], config.num_envs
    total = config.num_updates(family.episode_length)
    t_len = config.unroll(family.episode_length)
    chunk = max(1, family.max_envs // e) if block is None else block
    gated = active_updates is not None
    active = np.full(s, total, np.int32) if active_updates is None else np.asarray(active_updates, np.int32)
    out_params, out_metrics = [], []
    done_updates, all_updates = 0, total * math.ceil(s / chunk)
    for lo in range(0, s, chunk):
        hi = min(s, lo + chunk)
        states = _init_states(config, family, jnp.asarray(masks[lo:hi]), keys[lo:hi], init_params)
        task_ids = np.asarray(states.task_ids)  # [P, E]
        metrics_u = []
        with open_batch(family, task_ids) as batch:
            for u in range(total):
                split = _split4(states.key)  # per run: next key, reset, roll, perm (as ppo.update)
                starts = u % (family.episode_length // t_len) == 0
                episode_return = states.episode_return
                if starts:
                    batch.reset(_seed(split[0, 1]))
                    episode_return = jnp.zeros_like(episode_return)
                act = functools.partial(
                    act_stacked,
                    states.params,
                    net=config.network,
                    action_size=family.action_size,
                    n_tasks=family.n_tasks,
                )
                traj = unroll(batch, act, split[0, 2], t_len, task_ids.shape)
                traj = jax.tree.map(lambda x: jnp.swapaxes(jnp.asarray(x), 0, 1), traj)  # [P, T, E, ...]
                states = states.replace(key=split[:, 0], episode_return=episode_return)
                states, metrics = _learn(config, family, states, traj, split[:, 3], jnp.asarray(active[lo:hi]), gated)
                metrics_u.append(metrics)
                done_updates += 1
                if on_update is not None:
                    on_update(done_updates, all_updates)
                if on_metrics is not None:
                    on_metrics(done_updates, jax.device_get(metrics))
        out_params.append(states.params)
        out_metrics.append(jax.tree.map(lambda *xs: jnp.stack(xs, 1), *metrics_u))  # [P, U, ...]
    cat = lambda *xs: jnp.concatenate(xs)  # noqa: E731
    return jax.tree.map(cat, *out_params), jax.tree.map(cat, *out_metrics)


# ---------------------------------------------------------------------------------------------
# Features and evaluation
# ---------------------------------------------------------------------------------------------


def collect(ppo_config: PPOConfig, cfg, family: HostFamily, params: AgentParams, key: PRNGKey):
    """:func:`pgx_jax.estimation.features.collect` with the rollout on the host: same output."""
    n, length = family.n_tasks, family.episode_length
    episodes = cfg.episodes_per_task(length)
    task_ids = np.repeat(np.arange(n), episodes)
    k_reset, k_roll, k_perm = jax.random.split(key, 3)
    stacked = jax.tree.map(lambda x: x[None], params)
    act = functools.partial(act_stacked, stacked, net=ppo_config.network, action_size=family.action_size, n_tasks=n)
    with open_batch(family, task_ids) as batch:
        batch.reset(_seed(k_reset))
        traj = unroll(batch, act, k_roll, length, (1, task_ids.shape[0]))
    traj = jax.tree.map(lambda x: jnp.asarray(x[:, 0]), traj)  # [T, E, ...]
    return _process(ppo_config, cfg, family, params, traj, k_perm)


_process = jax.jit(features.process_trajectory, static_argnums=(0, 1, 2))
_featurize = jax.jit(features.featurize, static_argnums=(0, 1, 2))


def gradient_features(ppo_config: PPOConfig, cfg, family: HostFamily, params: AgentParams, key: PRNGKey):
    """:func:`pgx_jax.estimation.features.gradient_features` for a host family (host rollout, jitted rest)."""
    k_collect, k_proj = features.feature_keys(key)
    feats = _featurize(ppo_config, cfg, family, params, collect(ppo_config, cfg, family, params, k_collect), k_proj)
    big = cfg.gradient_sample()
    if big is None:
        return feats
    data = collect(ppo_config, big, family, params, features.gradient_sample_key(key))
    return feats.replace(ag=_mean_gradients(ppo_config, cfg, family, params, data, k_proj))


_mean_gradients = jax.jit(features.mean_policy_gradients, static_argnums=(0, 1, 2))


def evaluate_policies(
    params: AgentParams | None,
    family: HostFamily,
    task_ids,
    key: PRNGKey,
    episodes: int,
    *,
    network: NetworkConfig,
    deterministic: bool = True,
) -> dict[str, np.ndarray]:
    """Mean episode return (and the family's metric) of P policies, each on its own K tasks.

    Args:
        params: stacked params, leading axis [P]; None: the uniform random policy (P from task_ids).
        task_ids: int [P, K], the tasks of each policy (repeats allowed).

    Returns:
        ``{"return": float [P, K], "return_se": float [P, K], <metric name>: float [P, K]}``.
        Every env is seeded, and draws its action noise, by its (task, episode) alone: a task sees
        the same initial states for the same key whatever the policy, the other tasks beside it
        and its position among them (common random numbers).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    task_ids = np.asarray(task_ids, np.int64)
    k = task_ids.shape[1]
    env_tasks = np.repeat(task_ids, episodes, axis=1)  # [P, K * episodes]
    static = dict(episodes=episodes, net=network, action_size=family.action_size, n_tasks=family.n_tasks)

    def act_for(part, lo, hi):
        ids = jnp.asarray(task_ids[lo:hi], jnp.int32)
        return functools.partial(_act_per_policy_tasks, part, task_ids=ids, deterministic=deterministic, **static)

    # every env seeded and acting by its task and episode: common random numbers whatever the slot
    chunks = rollout_chunks(family, params, env_tasks, env_tasks, episodes, key, act_for)
    outs = [_episode_stats(family, traj, hi - lo, k, episodes) for lo, hi, traj in chunks]
    return {name: np.concatenate([o[name] for o in outs]) for name in outs[0]}


@functools.partial(jax.jit, static_argnames=("episodes", "net", "action_size", "n_tasks", "deterministic"))
def _act_per_policy_tasks(params, obs, key, *, task_ids, episodes, net, action_size, n_tasks, deterministic):
    """:func:`act_stacked` for evaluation: policy p's envs run the tasks ``task_ids[p]`` (int32
    [P, K]), ``episodes`` each, and every env's noise is keyed by its (task, episode)."""

    def one(p, o, tasks):
        act = _policy_act(p, net, action_size, n_tasks, deterministic)
        return keyed_act(act, *episode_ids(tasks, episodes))(o, key)

    if params is None:
        return jax.vmap(lambda o, t: one(None, o, t))(obs, task_ids)
    return jax.vmap(one)(params, obs, task_ids)


def _episode_stats(family: HostFamily, traj: Transition, p: int, k: int, episodes: int) -> dict[str, np.ndarray]:
    """Per (policy, task) means over episodes of the return and the metric, from traj [T, P, K*ep]."""
    shape = (p, k, episodes)
    per_episode = traj.reward.sum(0).reshape(shape)
    se = per_episode.std(-1, ddof=1) / np.sqrt(episodes) if episodes > 1 else np.zeros(shape[:2])
    out = {"return": per_episode.mean(-1), "return_se": se}
    if family.metric is not None:
        name, _, reduce = family.metric
        m, v = traj.metric, traj.valid
        if reduce == "final":
            last = np.argmax(np.cumsum(v, 0), 0)
            per_env = np.take_along_axis(m, last[None], 0)[0]
        elif reduce == "max":
            per_env = np.where(v > 0, m, -np.inf).max(0)
        else:
            per_env = (m * v).sum(0) / np.maximum(v.sum(0), 1.0)
        out[name] = per_env.reshape(shape).mean(-1)
    return out


def throughput(family: HostFamily, num_envs: int, steps: int, key: PRNGKey, network: NetworkConfig) -> float:
    """Env steps per second of a random-init policy acting on ``num_envs`` host environments
    (policy inference included, the first step's compile excluded)."""
    params = networks.init_agent(network, family.obs_size, family.action_size, key)
    stacked = jax.tree.map(lambda x: x[None], params)
    act = functools.partial(act_stacked, stacked, net=network, action_size=family.action_size, n_tasks=family.n_tasks)
    task_ids = np.arange(num_envs) % family.n_tasks
    with open_batch(family, task_ids) as batch:
        batch.reset(0)
        unroll(batch, act, key, steps, (1, num_envs))  # compiles the policy and the key split
        batch.reset(1)
        t0 = time.perf_counter()
        unroll(batch, act, key, steps, (1, num_envs))
        return num_envs * steps / (time.perf_counter() - t0)
