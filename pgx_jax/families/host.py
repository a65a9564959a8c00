"""Host-stepped task families: n variants of any environment with the gymnasium API.

A :class:`HostFamily` is n task variants of a non-JAX environment (gymnasium's CartPole and
LunarLander, Meta-World, highway-env), each made by ``make_env(task_index)``. This module holds
the environments' side only: the family, a pool of live environments per task and
:class:`EnvBatch`, B environments stepped in lock-step. The rollouts, PPO loop, feature
collection and evaluation over them are :class:`pgx_jax.simulators.host.HostSimulator`.

Semantics match :mod:`pgx_jax.rl.rollout`: the E environments of a run start and end their
episodes together (every ``episode_length`` steps); an environment that terminates (or hits
its own time limit) is frozen until the next reset, its later steps carry ``valid = 0``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from pgx_jax.families.base import check_family
from pgx_jax.families.spaces import action_map


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
        workers: 0 (default) steps the environments in this process; W > 0 in W worker
            processes (:func:`pgx_jax.families.host_workers.open_batch`), with the same
            transitions: ``with_workers(family, W)``.
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
    workers: int = 0

    #: what steps this family: :func:`pgx_jax.simulators.simulator` looks it up (Python on the host)
    simulator: ClassVar[str] = "host"

    def __post_init__(self):
        check_family(self.name, self.task_names, self.groups, self.episode_length, self.metric)
        for what in ("env_obs_size", "action_size", "max_envs"):
            if getattr(self, what) < 1:
                raise ValueError(f"{what} must be >= 1, got {getattr(self, what)}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an integer >= 0 (0: step in this process), got {self.workers!r}")

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

    def reset(self, key, task_id):
        """Not traceable: the environments step in Python (see :mod:`pgx_jax.simulators`)."""
        raise TypeError(
            f"family {self.name!r} is stepped on the host and cannot be traced; use pgx_jax.train_many, "
            "train_one, train_chunked or evaluate, which run it through its simulator"
        )

    step = reset

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


def gymnasium_family(
    name: str,
    make_env: Callable[[int], Any],
    task_names: Sequence[str],
    *,
    episode_length: int | None = None,
    groups: Sequence[int] | None = None,
    objective: str = "",
    metric: tuple[str, Callable[[Mapping], float], str] | None = None,
    params: Mapping[str, Sequence] | None = None,
    max_envs: int = 512,
) -> HostFamily:
    """A :class:`HostFamily` of any gymnasium environment, its sizes and action map read from its
    spaces (one environment is built, from task 0, and closed).

    Observations of any space are flattened (``gymnasium.wrappers.FlattenObservation`` where
    the space is not a ``Box``; the size is ``gymnasium.spaces.flatdim``). Actions: a ``Box``
    scaled from [-1, 1] to its bounds, a ``Discrete`` chosen by sign (two actions) or by the
    largest of k (:mod:`pgx_jax.families.spaces`, the rule the gymnax adapter shares).
    ``episode_length`` defaults to the environment's own time limit
    (``spec.max_episode_steps``). ``ValueError`` for another action space or no episode length.
    """
    import gymnasium
    from gymnasium import spaces

    probe = make_env(0)
    try:
        obs_space, act_space = probe.observation_space, probe.action_space
        limit = getattr(getattr(probe, "spec", None), "max_episode_steps", None)
    finally:
        probe.close()
    flat = not isinstance(obs_space, spaces.Box)
    build = (lambda i: gymnasium.wrappers.FlattenObservation(make_env(i))) if flat else make_env
    size, to_env = action_map(name, act_space)
    if episode_length is None and limit is None:
        raise ValueError(f"{name}: the environment has no time limit (spec.max_episode_steps); give episode_length")
    return HostFamily(
        name=name,
        make_env=build,
        task_names=tuple(task_names),
        groups=None if groups is None else tuple(int(g) for g in groups),
        episode_length=int(episode_length if episode_length is not None else limit),
        env_obs_size=int(spaces.flatdim(obs_space)),
        action_size=int(size),
        to_env_action=to_env,
        objective=objective,
        metric=metric,
        params=dict(params or {}),
        max_envs=max_envs,
    )


def with_workers(family: HostFamily, workers: int) -> HostFamily:
    """``family`` stepping its environments in ``workers`` processes (0: in this one). The
    transitions are the same either way (each environment seeded and stepped as before)."""
    if not isinstance(family, HostFamily):
        raise ValueError(
            f"family {family.name!r} is stepped by JAX (vmapped on the device); workers apply to host families only"
        )
    return dataclasses.replace(family, workers=workers)


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
