"""What steps a family's environments: one protocol, two implementations, one door.

The stages (PPO trainings, gradient features, evaluation, the pipeline, ``validate``,
``compare``, ``groups``) never ask how a family steps its environments. They call
:func:`simulator` and use the :class:`Simulator` it returns:

- :class:`pgx_jax.simulators.jitted.JaxSimulator`: Brax / MJX families
  (:class:`pgx_jax.families.TaskFamily`), pure and jitted end to end: S trainings are one
  vmapped compiled call, and every program can be compiled ahead and its FLOPs counted;
- :class:`pgx_jax.simulators.host.HostSimulator`: gymnasium-API environments stepped in Python
  (:class:`pgx_jax.families.HostFamily`); the policy acts and PPO learns in jitted calls, the
  environments step one Python call per environment and step.

What the host kind cannot do is said here, once: its programs are not traced end to end, so
``counts_flops`` is False and its FLOP figures are None; its rollouts cost seconds where the
JAX kind's cost milliseconds, so its budgets are smaller (``eval_episodes``,
``gradient_transitions``).

The module-level functions (:func:`train_many`, :func:`train_one`, :func:`train_chunked`,
:func:`evaluate`, :func:`gradient_features`, ...) hand their input to the family's simulator,
the trainings and evaluations after checking it on the host (concrete masks, keys, episode
counts) before anything compiles or steps: they are the public API for any family. The pure,
traceable functions under them (:func:`pgx_jax.rl.ppo.train`, :func:`pgx_jax.estimation.features.gradient_features`,
:func:`pgx_jax.rl.evaluate.episode_stats`) work on JAX families only and compose into the user's own
jitted code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax.core.config import NetworkConfig, PPOConfig
from pgx_jax.core.types import PRNGKey, PyTree, check_mask
from pgx_jax.estimation.features import FeatureConfig
from pgx_jax.rl import ppo
from pgx_jax.rl.networks import AgentParams
from pgx_jax.simulators.host import HostSimulator
from pgx_jax.simulators.jitted import JaxSimulator
from pgx_jax.simulators.protocol import Metrics, Simulator, Stats

#: ``family.simulator`` -> the implementation that steps it
_IMPLEMENTATIONS: dict[str, Callable[[Any], Simulator]] = {"jax": JaxSimulator, "host": HostSimulator}


def simulator(family) -> Simulator:
    """The simulator of ``family``: the implementation its ``simulator`` attribute names."""
    kind = getattr(family, "simulator", None)
    if kind not in _IMPLEMENTATIONS:
        raise TypeError(
            f"{type(family).__name__} {getattr(family, 'name', family)!r} names simulator {kind!r}; "
            f"known: {sorted(_IMPLEMENTATIONS)}"
        )
    return _IMPLEMENTATIONS[kind](family)


# ---------------------------------------------------------------------------------------------
# The public doors: validated on the host, then the family's simulator
# ---------------------------------------------------------------------------------------------


def check_runs(config: PPOConfig, family, task_masks, keys, active_updates=None):
    """Validate S runs before anything compiles: ``(masks bool [S, N], keys [S], active int32 [S] | None)``."""
    config.check_for(family.n_tasks, family.episode_length)
    masks = np.asarray(task_masks)
    check_mask(masks, family.n_tasks)
    if masks.ndim != 2:
        raise ValueError(f"task_masks must have shape [S, {family.n_tasks}], got {masks.shape}")
    keys = jnp.asarray(keys)
    if keys.shape[0] != masks.shape[0]:
        raise ValueError(f"{keys.shape[0]} keys for {masks.shape[0]} masks; give one key per mask")
    if active_updates is not None:
        active_updates = np.asarray(active_updates, np.int32)
        total = config.num_updates(family.episode_length)
        if active_updates.shape != (masks.shape[0],) or (active_updates < 1).any() or (active_updates > total).any():
            raise ValueError(f"active_updates must be {masks.shape[0]} integers in [1, {total}], got {active_updates}")
        active_updates = jnp.asarray(active_updates)
    return masks.astype(bool), keys, active_updates


def train_many(
    config: PPOConfig,
    family,
    task_masks,
    keys,
    init_params: AgentParams | None = None,
    active_updates=None,
    *,
    on_update: Callable[[int, int], None] | None = None,
    block: int | None = None,
) -> tuple[AgentParams, Metrics]:
    """S trainings of :func:`pgx_jax.rl.ppo.train`, one per mask [S, N] and key [S].

    JAX families: one vmapped compiled call; host families: the runs in chunks, acting and
    learning in vmapped calls. ``init_params`` (if given) is shared by every run;
    ``active_updates`` (int [S], optional) gives each run its own number of updates (at most
    the config's). ``on_update(done, total)``: host families report each update (JAX families
    run in one call and do not). Outputs get a leading axis [S].

    ``block``: train the runs ``block`` at a time, padded with repeats of the first run to a
    multiple of it, each block one vmapped program of the same shape (JAX families: still one
    call, :func:`pgx_jax.rl.ppo.train_blocks`). A run's result is then bit for bit a function of
    its own mask, key and active updates, whatever the other runs (on one machine and backend).
    With None (all S in one vmapped program), XLA's kernels depend on S, and a run's result can
    differ in the last bits with the other runs beside it, and training amplifies that.
    """
    masks, keys, active = check_runs(config, family, task_masks, keys, active_updates)
    if block is None:
        return simulator(family).train_many(config, masks, keys, init_params, active, on_update=on_update)
    _check_block(block)
    s = masks.shape[0]
    masks, keys, active = pad_rows((masks, keys, active), block)
    out = simulator(family).train_many(config, masks, keys, init_params, active, on_update=on_update, block=block)
    return jax.tree.map(lambda x: x[:s], out)


def _check_block(block) -> None:
    if isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 1:
        raise ValueError(f"block must be a positive integer or None, got {block!r}")


def pad_rows(tree: PyTree, multiple: int) -> PyTree:
    """Every leaf (leading axis [S]; None stays None) padded with repeats of its first row to a
    multiple of ``multiple`` rows."""
    s = jax.tree.leaves(tree)[0].shape[0]
    extra = np.zeros(-s % multiple, np.int32)
    if not extra.size:
        return tree
    cat = lambda x: np.concatenate([x, x[extra]]) if isinstance(x, np.ndarray) else jnp.concatenate([x, x[extra]])
    return jax.tree.map(cat, tree)


def train_many_timed(config: PPOConfig, family, task_masks, keys, init_params=None, active_updates=None):
    """:func:`train_many`, compiled ahead where the family allows, so compile and run are timed
    apart: ``(params, metrics, info)`` with ``compile_s``, ``train_s``, ``flops_train`` and
    ``xla_flops_train`` (None on host families)."""
    masks, keys, active = check_runs(config, family, task_masks, keys, active_updates)
    return simulator(family).train_many_timed(config, masks, keys, init_params, active)


def train_one(config: PPOConfig, family, task_mask, key: PRNGKey, init_params: AgentParams | None = None):
    """One training on ``task_mask`` (bool [N]): ``(params, metrics)``, compiled for JAX families
    (one cached program per config and family), the host loop for host families."""
    masks, keys, _ = check_runs(config, family, np.asarray(task_mask)[None], jnp.asarray(key)[None])
    return simulator(family).train_one(config, masks[0], keys[0], init_params)


def train_timed(config: PPOConfig, family, task_mask, key: PRNGKey) -> tuple[AgentParams, Metrics, float, float]:
    """:func:`train_one` from fresh parameters, compiled ahead of the call so that compilation and
    training are timed apart: ``(params, metrics, train_s, compile_s)`` (compile_s 0 for host
    families, whose loop runs on the host)."""
    masks, keys, _ = check_runs(config, family, np.asarray(task_mask)[None], jnp.asarray(key)[None])
    return simulator(family).train_timed(config, masks[0], keys[0])


def train_chunked(
    config: PPOConfig,
    family,
    task_mask,
    key: PRNGKey,
    init_params: AgentParams | None = None,
    *,
    max_chunks: int = 20,
    on_chunk: Callable[[int, int], None] | None = None,
    timings: dict | None = None,
    checkpoint: Callable | None = None,
    start=None,
    progress_fn: Callable[[int, dict], None] | None = None,
) -> tuple[AgentParams, Metrics]:
    """One training as a few calls of equal length, with ``on_chunk(updates_done, total)``
    called on the host between them (progress bars; never a callback inside the scan), and
    ``progress_fn(env_steps, metrics)`` (Brax's convention) with the env steps done so far and
    :func:`pgx_jax.rl.ppo.progress_metrics` (the last update's loss, entropy, ...; each task's most
    recently finished episodes' return ``episode_return/<task>`` and their mean
    ``episode_return``): after every chunk, after every update on host families.
    ``timings``, when given, receives ``compile_s``: the seconds spent compiling (0 for host
    families), so that a caller can time the training alone. Where the family's simulator has
    ``resumable_training``, ``checkpoint(state, metrics so far, updates done)`` is called after
    every chunk and ``start=`` one of its calls' arguments continues the training from there:
    the same result as an uninterrupted call (the same compiled chunks on the same states).

    Same updates and keys as :func:`pgx_jax.rl.ppo.train`, so the result matches it to float tolerance.
    """
    masks, keys, _ = check_runs(config, family, np.asarray(task_mask)[None], jnp.asarray(key)[None])
    return simulator(family).train_chunked(
        config,
        masks[0],
        keys[0],
        init_params,
        max_chunks=max_chunks,
        on_chunk=on_chunk,
        timings=timings,
        checkpoint=checkpoint,
        start=start,
        on_metrics=None if progress_fn is None else _reporting(progress_fn, config, family),
    )


def _reporting(progress_fn: Callable[[int, dict], None], config: PPOConfig, family) -> Callable:
    """``on_metrics`` for :meth:`Simulator.train_chunked` that calls ``progress_fn``."""
    per_update = config.num_envs * config.unroll(family.episode_length)
    last: dict[str, float] = {}  # the previous report: a task's return stays until its next episodes end

    def report(done, metrics):
        nonlocal last
        last = ppo.progress_metrics(metrics, family.task_names, last)
        progress_fn(done * per_update, last)

    return report


def gradient_features(ppo_config: PPOConfig, cfg: FeatureConfig, family, params: AgentParams, key: PRNGKey):
    """:func:`pgx_jax.estimation.features.gradient_features` for any family (one compiled call for JAX
    families; the rollout on the host for host families)."""
    return simulator(family).gradient_features(ppo_config, cfg, params, key)


def collect(ppo_config: PPOConfig, cfg: FeatureConfig, family, params: AgentParams, key: PRNGKey) -> PyTree:
    """:func:`pgx_jax.estimation.features.collect` for any family."""
    return simulator(family).collect(ppo_config, cfg, params, key)


def _check_episodes(episodes: int) -> None:
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")


def evaluate_metrics(
    params: AgentParams,
    family,
    task_ids,
    key: PRNGKey,
    episodes: int = 16,
    *,
    network: NetworkConfig | None = None,
    deterministic: bool = True,
) -> Stats:
    """Mean episode return per task of the policy ``params``, its standard error and the
    family's task metric.

    Args:
        params: trained agent.
        family: task family.
        task_ids: int [K] tasks to evaluate (repeats allowed).
        key: PRNG key (initial states; actions too when ``deterministic`` is False).
        episodes: episodes per task.
        network: the network config the params were trained with (default ``NetworkConfig()``).
        deterministic: act with the Gaussian mean (default) or sample.

    Returns:
        ``{"return": float [K], "return_se": float [K]}`` plus ``{metric name: float [K]}`` when
        the family has a task metric. Episode j of task t is keyed by (t, j) alone
        (:func:`pgx_jax.rl.rollout.episode_keys`): common random numbers across policies. For JAX
        families the result is traceable in ``params``:
        ``jax.vmap(lambda p: evaluate(p, family, ids, key))(stacked)`` evaluates many policies.
    """
    _check_episodes(episodes)
    net = network or NetworkConfig()
    return simulator(family).evaluate(params, task_ids, key, episodes, network=net, deterministic=deterministic)


def evaluate(
    params: AgentParams,
    family,
    task_ids,
    key: PRNGKey,
    episodes: int = 16,
    *,
    network: NetworkConfig | None = None,
    deterministic: bool = True,
):
    """The mean returns float [K] of :func:`evaluate_metrics` (same arguments)."""
    return evaluate_metrics(params, family, task_ids, key, episodes, network=network, deterministic=deterministic)[
        "return"
    ]


def random_policy_metrics(family, task_ids, key: PRNGKey, episodes: int = 16) -> Stats:
    """:func:`evaluate_metrics` of the uniform random policy on [-1, 1]^A."""
    _check_episodes(episodes)
    return simulator(family).evaluate(None, task_ids, key, episodes, network=NetworkConfig(), deterministic=True)


def random_policy_returns(family, task_ids, key: PRNGKey, episodes: int = 16) -> np.ndarray:
    """Mean episode return per task of the uniform random policy on [-1, 1]^A: float [K]."""
    return random_policy_metrics(family, task_ids, key, episodes)["return"]


def policies_on_subsets_stats(
    params: AgentParams,
    family,
    masks,
    key: PRNGKey,
    *,
    network: NetworkConfig,
    episodes: int = 8,
    batch: int = 16,
    pad: bool = False,
    max_subset_size: int | None = None,
) -> Stats:
    """Each policy of ``params`` (leading axis [S]) on the tasks of its mask (bool [S, N]), all
    with ``key``; every episode keyed by its task and episode index, so a task starts from the
    same states under every policy and in every subset (common random numbers).

    The policies are evaluated ``batch`` at a time (the last block holds the rest), each
    policy's tasks padded to ``max_subset_size`` (default: the largest mask). ``pad=True`` pads
    the policies with repeats of the first to a multiple of ``batch``, so every block is one
    program of the same shape: with ``max_subset_size`` fixed too, a policy's returns are bit for
    bit a function of the policy and its mask alone, whatever is evaluated beside it (JAX
    families; host families chunk by their ``max_envs``).

    Returns:
        ``{"return": float [S, N], "return_se": float [S, N]}`` and, where the simulator
        reports it (host families with a task metric, e.g. Meta-World's success rate),
        ``{metric name: float [S, N]}``; NaN outside each mask.
    """
    _check_episodes(episodes)
    masks = np.asarray(masks, bool)
    largest = int(masks.sum(1).max())
    if max_subset_size is not None and not largest <= max_subset_size <= family.n_tasks:
        raise ValueError(f"max_subset_size must be in [{largest}, {family.n_tasks}], got {max_subset_size}")
    s = masks.shape[0]
    if pad:
        params, masks = pad_rows((params, masks), batch)
    sim = simulator(family)
    kw = dict(network=network, episodes=episodes, batch=batch, max_subset_size=max_subset_size)
    return {name: v[:s] for name, v in sim.policies_on_subsets(params, masks, key, **kw).items()}


def policies_on_subsets(params, family, masks, key, *, with_metric: bool = False, **kwargs):
    """The returns of :func:`policies_on_subsets_stats` (same arguments): float [S, N], NaN
    outside each mask. ``with_metric=True`` returns ``(returns, metric)``: the family's task
    metric [S, N] from the same episodes where the simulator reports it, else None."""
    out = policies_on_subsets_stats(params, family, masks, key, **kwargs)
    if not with_metric:
        return out["return"]
    return out["return"], (None if family.metric is None else out.get(family.metric[0]))


def policies_on_subsets_timed(params, family, masks, key, *, network, episodes: int = 8, batch: int = 16):
    """:func:`policies_on_subsets_stats` compiled ahead where the family allows: ``(stats,
    {"evaluate_s", "flops_evaluate"})``, ``flops_evaluate`` None on host families."""
    _check_episodes(episodes)
    masks = np.asarray(masks, bool)
    sim = simulator(family)
    return sim.policies_on_subsets_timed(params, masks, key, network=network, episodes=episodes, batch=batch)
