"""Host-stepped task families: any gymnasium environment, with the same jitted learning code.

A :class:`HostFamily` is n task variants of a non-JAX environment (gymnasium's CartPole and
LunarLander, Meta-World, highway-env), each made by ``make_env(task_index)``. Rollouts run on
the host, one Python step per environment; everything else is the same jitted code as for
Brax families: the policy acts on a whole batch in one call, PPO learns with
:func:`pgx_jax.ppo.learn`, and the features, surrogate solves, affinity and clustering never
see the difference.

Semantics match :mod:`pgx_jax.rollout`: the E environments of a run start and end their
episodes together (every ``episode_length`` steps); an environment that terminates (or hits
its own time limit) is frozen until the next reset, its later steps carry ``valid = 0``.

Entry points used by the pipeline when ``is_host(family)``:

- :func:`train_many`: S PPO runs (masks [S, N]), run a few at a time on the host.
- :func:`collect`: pi_theta* rolled out on every task, for the gradient features.
- :func:`evaluate_policies`: P policies (stacked params) each on its own tasks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import features, networks, ppo
from pgx_jax.config import NetworkConfig, PPOConfig
from pgx_jax.networks import AgentParams
from pgx_jax.rollout import Transition
from pgx_jax.tasks import check_family
from pgx_jax.types import PRNGKey


@dataclasses.dataclass(frozen=True, eq=False)
class HostFamily:
    """n task variants of an environment stepped on the host (hashing by identity).

    Attributes:
        name: family name.
        make_env: ``task_index -> env`` with the gymnasium API (``reset(seed=)`` -> (obs, info),
            ``step(action)`` -> (obs, reward, terminated, truncated, info)), the task's variant
            already set (constructor arguments or ``set_task``). Its own time limit, if any,
            must be at least ``episode_length``.
        task_names: N names.
        groups: planted group label per task, or None.
        episode_length: steps per episode.
        env_obs_size: size of the flattened environment observation.
        action_size: A; the policy acts in [-1, 1]^A.
        to_env_action: ``float [A] in [-1, 1] -> env action`` (e.g. ``int(a[0] > 0)`` for a
            two-action discrete space).
        objective: one line describing the reward.
        metric: optional ``(name, fn(info) -> float, reduce)`` with reduce ``final``, ``mean``
            or ``max`` over the episode's valid steps (``max`` of ``info["success"]``: success rate).
        params: the task variants as ``{field: [N] values}`` (for ``describe``).
        backend: where the environment runs (reported).
        max_envs: at most this many environments exist at once (S runs x E envs are split into
            chunks that fit): bounds memory for heavy simulators.
    """

    name: str
    make_env: Callable[[int], Any]
    task_names: tuple[str, ...]
    groups: tuple[int, ...] | None
    episode_length: int
    env_obs_size: int
    action_size: int
    to_env_action: Callable[[np.ndarray], Any]
    objective: str = ""
    metric: tuple[str, Callable[[Mapping], float], str] | None = None
    params: Mapping[str, Sequence] = dataclasses.field(default_factory=dict)
    backend: str = "host (gymnasium)"
    max_envs: int = 512

    def __post_init__(self):
        check_family(self.name, self.task_names, self.groups, self.episode_length, self.metric)
        for what in ("env_obs_size", "action_size", "max_envs"):
            if getattr(self, what) < 1:
                raise ValueError(f"{what} must be >= 1, got {getattr(self, what)}")

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def obs_size(self) -> int:
        """Observation size O: the flattened environment observation plus the one-hot task id."""
        return self.env_obs_size + self.n_tasks

    @functools.cached_property
    def pool(self) -> EnvPool:
        return EnvPool(self.make_env)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "n_tasks": self.n_tasks,
            "tasks": list(self.task_names),
            "params": {k: list(v) for k, v in self.params.items()},
            "groups": None if self.groups is None else list(self.groups),
            "episode_length": self.episode_length,
            "objective": self.objective,
            "metric": None if self.metric is None else {"name": self.metric[0], "reduce": self.metric[2]},
            "backend": self.backend,
        }


def is_host(family) -> bool:
    """Whether ``family`` is stepped on the host (a :class:`HostFamily`)."""
    return isinstance(family, HostFamily)


class EnvPool:
    """Environments per task, made on first use and reused (making one can cost 0.2 s)."""

    def __init__(self, make_env: Callable[[int], Any]):
        self._make = make_env
        self._free: dict[int, list] = {}

    def acquire(self, task_ids: Sequence[int]) -> list:
        out = []
        for t in task_ids:
            free = self._free.setdefault(int(t), [])
            out.append(free.pop() if free else self._make(int(t)))
        return out

    def release(self, task_ids: Sequence[int], envs: list) -> None:
        for t, env in zip(task_ids, envs, strict=True):
            self._free[int(t)].append(env)


class EnvBatch:
    """B host environments stepped in lock-step: ``reset(seed)`` then ``step(actions)`` T times."""

    def __init__(self, family: HostFamily, task_ids):
        self.family = family
        self.task_ids = np.asarray(task_ids, np.int64).reshape(-1)
        self.one_hot = np.eye(family.n_tasks, dtype=np.float32)[self.task_ids]
        self.envs = family.pool.acquire(self.task_ids)
        b = len(self.envs)
        self.obs = np.zeros((b, family.obs_size), np.float32)
        self.done = np.ones(b, np.float32)
        self.metric = np.zeros(b, np.float32)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.family.pool.release(self.task_ids, self.envs)
        self.envs = []

    def _observe(self, env_obs) -> np.ndarray:
        x = np.asarray(env_obs, np.float32).reshape(-1)
        if x.shape[0] != self.family.env_obs_size:
            raise ValueError(
                f"family {self.family.name!r}: an observation has {x.shape[0]} values, "
                f"env_obs_size says {self.family.env_obs_size}"
            )
        return x

    def reset(self, seed) -> np.ndarray:
        """Start an episode everywhere: env i is seeded ``seed + i`` (an int ``seed``) or
        ``seed[i]`` (int [B]: evaluation seeds each env by its task and episode)."""
        seeds = int(seed) + np.arange(len(self.envs)) if np.ndim(seed) == 0 else np.asarray(seed).reshape(-1)
        env_obs = [self._observe(env.reset(seed=int(sd))[0]) for sd, env in zip(seeds, self.envs, strict=True)]
        self.obs = np.concatenate([np.stack(env_obs), self.one_hot], -1)
        self.done[:] = 0.0
        self.metric[:] = 0.0
        return self.obs

    def step(self, actions: np.ndarray):
        """Step every live environment; frozen ones repeat their last observation with zero reward.

        Returns ``(next_obs [B, O], reward [B], terminal [B], valid [B], metric [B])``;
        ``terminal`` is 1 at the step an environment terminated or truncated.
        """
        fam = self.family
        actions = np.clip(np.asarray(actions, np.float32), -1.0, 1.0)
        valid = 1.0 - self.done
        reward = np.zeros(len(self.envs), np.float32)
        terminal = np.zeros(len(self.envs), np.float32)
        nxt = self.obs.copy()
        for i, env in enumerate(self.envs):
            if self.done[i]:
                continue
            o, r, term, trunc, info = env.step(fam.to_env_action(actions[i]))
            nxt[i, : fam.env_obs_size] = self._observe(o)
            reward[i] = r
            if fam.metric is not None:
                self.metric[i] = float(fam.metric[1](info))
            if term or trunc:
                terminal[i] = 1.0
                self.done[i] = 1.0
        if not np.all(np.isfinite(reward)) or not np.all(np.isfinite(nxt)):
            bad = sorted(
                {int(self.task_ids[i]) for i in np.flatnonzero(~np.isfinite(reward) | ~np.isfinite(nxt).all(1))}
            )
            raise FloatingPointError(f"family {fam.name!r}: non-finite reward or observation on tasks {bad}")
        self.obs = nxt
        return nxt, reward, terminal, valid, self.metric.copy()


def _seed(key: PRNGKey) -> int:
    return int(jax.random.randint(key, (), 0, 2**31 - 1 - 1_000_000))


def _random_act(action_size: int):
    def act(obs, key):
        return jax.random.uniform(key, (obs.shape[0], action_size), minval=-1.0, maxval=1.0), jnp.zeros(obs.shape[0])

    return act


@functools.partial(jax.jit, static_argnames=("net", "action_size", "n_tasks", "deterministic"))
def act_stacked(params: AgentParams, obs, key, *, net, action_size, n_tasks, deterministic=False):
    """P policies (params with leading [P]) on their own envs: obs [P, K, O] -> (action [P, K, A],
    log_prob [P, K]), one key per policy (training); ``params=None`` is the uniform random
    policy on [-1, 1]^A."""
    keys = jax.random.split(key, obs.shape[0])
    if params is None:
        return jax.vmap(_random_act(action_size))(obs, keys)
    return jax.vmap(lambda p, o, k: _policy_act(p, net, action_size, n_tasks, deterministic)(o, k))(params, obs, keys)


def _policy_act(params, net, action_size: int, n_tasks: int, deterministic: bool):
    """The act function of one policy's params, or of the uniform random policy for None."""
    if params is None:
        return _random_act(action_size)
    return networks.make_act(net, action_size, n_tasks, params, deterministic=deterministic)


def unroll(batch: EnvBatch, act: Callable, key: PRNGKey, length: int, shape: tuple[int, int]) -> Transition:
    """``length`` lock-step steps of ``batch`` with ``act(obs [P, K, O], key) -> (action, log_prob)``.

    ``shape`` = (P, K) with P * K = B. Returns a :class:`Transition` of numpy arrays [T, P, K, ...].
    """
    steps = []
    for k in jax.random.split(key, length):
        obs = batch.obs
        action, log_prob = act(jnp.asarray(obs.reshape(*shape, -1)), k)
        action, log_prob = np.asarray(action), np.asarray(log_prob)
        nxt, reward, terminal, valid, metric = batch.step(action.reshape(obs.shape[0], -1))
        steps.append(
            (obs, action.reshape(obs.shape[0], -1), log_prob.reshape(-1), reward, nxt, terminal, valid, metric)
        )
    fields = [np.stack(x) for x in zip(*steps, strict=True)]
    return Transition(*(f.reshape((length, *shape) + f.shape[2:]) for f in fields))


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
):
    """S PPO runs on host-stepped environments; same contract as :func:`pgx_jax.ppo.train_many`.

    Runs are grouped in chunks of at most ``family.max_envs`` environments; within a chunk the
    policies act and learn in one vmapped call per step / update. ``on_update(done, total)`` is
    called on the host after every update, counting the updates of all chunks.
    """
    masks = np.asarray(task_masks, bool)
    keys = jnp.asarray(keys)
    s, e = masks.shape[0], config.num_envs
    total = config.num_updates(family.episode_length)
    t_len = config.unroll(family.episode_length)
    chunk = max(1, family.max_envs // e)
    gated = active_updates is not None
    active = np.full(s, total, np.int32) if active_updates is None else np.asarray(active_updates, np.int32)
    out_params, out_metrics = [], []
    done_updates, all_updates = 0, total * math.ceil(s / chunk)
    for lo in range(0, s, chunk):
        hi = min(s, lo + chunk)
        states = _init_states(config, family, jnp.asarray(masks[lo:hi]), keys[lo:hi], init_params)
        task_ids = np.asarray(states.task_ids)  # [P, E]
        metrics_u = []
        with EnvBatch(family, task_ids) as batch:
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
        out_params.append(states.params)
        out_metrics.append(jax.tree.map(lambda *xs: jnp.stack(xs, 1), *metrics_u))  # [P, U, ...]
    cat = lambda *xs: jnp.concatenate(xs)  # noqa: E731
    return jax.tree.map(cat, *out_params), jax.tree.map(cat, *out_metrics)


# ---------------------------------------------------------------------------------------------
# Features and evaluation
# ---------------------------------------------------------------------------------------------


def collect(ppo_config: PPOConfig, cfg, family: HostFamily, params: AgentParams, key: PRNGKey):
    """:func:`pgx_jax.features.collect` with the rollout on the host: same output."""
    n, length = family.n_tasks, family.episode_length
    episodes = cfg.episodes_per_task(length)
    task_ids = np.repeat(np.arange(n), episodes)
    k_reset, k_roll, k_perm = jax.random.split(key, 3)
    stacked = jax.tree.map(lambda x: x[None], params)
    act = functools.partial(act_stacked, stacked, net=ppo_config.network, action_size=family.action_size, n_tasks=n)
    with EnvBatch(family, task_ids) as batch:
        batch.reset(_seed(k_reset))
        traj = unroll(batch, act, k_roll, length, (1, task_ids.shape[0]))
    traj = jax.tree.map(lambda x: jnp.asarray(x[:, 0]), traj)  # [T, E, ...]
    return _process(ppo_config, cfg, family, params, traj, k_perm)


_process = jax.jit(features.process_trajectory, static_argnums=(0, 1, 2))
_featurize = jax.jit(features.featurize, static_argnums=(0, 1, 2))


def gradient_features(ppo_config: PPOConfig, cfg, family: HostFamily, params: AgentParams, key: PRNGKey):
    """:func:`pgx_jax.features.gradient_features` for a host family (host rollout, jitted rest)."""
    k_collect, k_proj = jax.random.split(key)
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
    p, k = task_ids.shape
    per_policy = k * episodes
    chunk = max(1, family.max_envs // per_policy)
    k_reset, k_roll = jax.random.split(key)
    outs = []
    for lo in range(0, p, chunk):
        hi = min(p, lo + chunk)
        env_tasks = np.repeat(task_ids[lo:hi], episodes, axis=1)  # [P', K * episodes]
        part = None if params is None else jax.tree.map(lambda x, sl=slice(lo, hi): x[sl], params)
        act = functools.partial(
            _act_per_policy_tasks,
            part,
            task_ids=jnp.asarray(task_ids[lo:hi], jnp.int32),
            episodes=episodes,
            net=network,
            action_size=family.action_size,
            n_tasks=family.n_tasks,
            deterministic=deterministic,
        )
        with EnvBatch(family, env_tasks) as batch:
            # every env seeded by its task and episode: common random numbers whatever the slot
            batch.reset(episode_seeds(k_reset, env_tasks, episodes))
            traj = unroll(batch, act, k_roll, family.episode_length, env_tasks.shape)
        outs.append(_episode_stats(family, traj, hi - lo, k, episodes))
    return {name: np.concatenate([o[name] for o in outs]) for name in outs[0]}


@functools.partial(jax.jit, static_argnames=("episodes", "net", "action_size", "n_tasks", "deterministic"))
def _act_per_policy_tasks(params, obs, key, *, task_ids, episodes, net, action_size, n_tasks, deterministic):
    """:func:`act_stacked` for evaluation: policy p's envs run the tasks ``task_ids[p]`` (int32
    [P, K]), ``episodes`` each, and every env's noise is keyed by its (task, episode)."""
    from pgx_jax.evaluate import episode_ids, keyed_act

    def one(p, o, tasks):
        act = _policy_act(p, net, action_size, n_tasks, deterministic)
        return keyed_act(act, *episode_ids(tasks, episodes))(o, key)

    if params is None:
        return jax.vmap(lambda o, t: one(None, o, t))(obs, task_ids)
    return jax.vmap(one)(params, obs, task_ids)


def episode_seeds(key: PRNGKey, env_tasks, episodes: int) -> np.ndarray:
    """int64 [..., K * episodes]: the reset seed of every host evaluation env, from
    :func:`pgx_jax.evaluate.episode_keys` of its (task, episode): slot-independent."""
    from pgx_jax.evaluate import episode_keys

    env_tasks = np.asarray(env_tasks)
    flat_tasks = env_tasks.reshape(-1)
    episode = np.tile(np.arange(episodes), flat_tasks.size // episodes)
    keys = episode_keys(key, jnp.asarray(flat_tasks, jnp.int32), jnp.asarray(episode, jnp.int32))
    seeds = jax.vmap(lambda k: jax.random.randint(k, (), 0, 2**31 - 1))(keys)
    return np.asarray(seeds, np.int64).reshape(env_tasks.shape)


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
    with EnvBatch(family, task_ids) as batch:
        batch.reset(0)
        unroll(batch, act, key, steps, (1, num_envs))  # compiles the policy and the key split
        batch.reset(1)
        t0 = time.perf_counter()
        unroll(batch, act, key, steps, (1, num_envs))
        return num_envs * steps / (time.perf_counter() - t0)
