"""The paper's comparison: is training by PolicyGradEx's groups better than the alternatives?

Groupings of the n tasks into k groups (``multitask`` and ``per_task`` fix k at 1 and n):

- ``multitask``: one policy on every task;
- ``per_task``: one policy per task;
- ``random``: uniform random partitions into k near-equal groups (several draws per seed);
- ``gradient_similarity``: the cosine similarity of the per-task mean policy gradients
  (advantage-weighted, projected) at theta*, clustered like PolicyGradEx's affinity;
- ``ground_truth``: the groups of the true affinity from real training of every sampled subset
  (the primary truth of ``vconfig``, :func:`pgx_jax.experiments.truth.run_truth`);
- ``policygradex``: the groups of the estimated affinity.

Every policy trains from scratch with the same env steps per task (a group of s tasks gets s
times the per-task budget, :func:`pgx_jax.experiments.groups.group_updates`). Identical groups of different
groupings train once (the key is a function of the seed and the group). Groups of equal size
train in one vmapped call. Returns are also normalised per task between the uniform random policy
(0) and the best single-task policy (1: the best ``per_task`` return over seeds), so families
with different reward scales can be averaged.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax import simulators
from pgx_jax.core.types import Family
from pgx_jax.experiments.config import PipelineConfig, ValidateConfig
from pgx_jax.experiments.cost import estimation_env_steps
from pgx_jax.experiments.groupings import FREE_GROUPINGS, GROUPINGS, choose_groupings
from pgx_jax.experiments.groups import (
    env_steps_per_task,
    group_key,
    group_updates,
    train_and_evaluate_groups,
)
from pgx_jax.experiments.keys import run_keys
from pgx_jax.rl.networks import AgentParams
from pgx_jax.runtime.distributed import across_processes, map_processes
from pgx_jax.runtime.stages import NONE, StageStore


def _train_and_evaluate(config: PipelineConfig, family: Family, groups: list[tuple[int, ...]], key, progress):
    """Train every distinct group from scratch (one vmapped call per group size) and evaluate it on
    its own tasks. Returns ``{group: float [N] returns (NaN outside)}``, the same for the family's
    metric (values None where the evaluation gives none), per-group env steps per task, and
    ``{group: its trained policy}`` with the evaluation key."""
    n, L = family.n_tasks, family.episode_length
    per_update = config.ppo.num_envs * config.ppo.unroll(L)
    k_train, k_eval = jax.random.split(key)
    returns, task_metric, steps_per_task, policies = {}, {}, {}, {}
    for size in sorted({len(g) for g in groups}):
        bucket = [g for g in groups if len(g) == size]
        masks = np.stack([np.isin(np.arange(n), g) for g in bucket])
        updates = int(group_updates(config.ppo, family, [size])[0])
        cfg = dataclasses.replace(config.ppo, total_env_steps=updates * per_update)
        # the key and the program's shape depend on the group only: a group shared by two
        # groupings is one policy, whatever else trains in its bucket (groups.train_and_evaluate_groups)
        keys = jnp.stack([group_key(k_train, g) for g in bucket])
        progress(f"train {len(bucket)} group(s) of size {size}")

        def rows(xs, cfg=cfg, size=size):  # this process's block of the groups: train, evaluate on their tasks
            kw = dict(episodes=config.eval_episodes, max_subset_size=size)
            params, _, out, metric = train_and_evaluate_groups(cfg, family, *xs, k_eval, **kw)
            return out, np.full_like(out, np.nan) if metric is None else metric, params

        out, metric, params = across_processes(rows, (masks, keys))
        metric = None if family.metric is None else metric
        for j, g in enumerate(bucket):
            returns[g] = out[j]
            task_metric[g] = None if metric is None else metric[j]
            steps_per_task[g] = updates * per_update / size
            policies[g] = jax.tree.map(lambda x, j=j: np.asarray(x)[j], params)
    return returns, task_metric, steps_per_task, (policies, k_eval)


def _normalise(returns: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(R - R_random) / (R_best_single - R_random) per task (last axis)."""
    span = high - low
    if np.any(np.abs(span) < 1e-8):
        bad = np.flatnonzero(np.abs(span) < 1e-8).tolist()
        raise FloatingPointError(f"tasks {bad}: the best single-task policy scores the same as the random policy")
    return (returns - low) / span


ANCHOR_MARGIN = 0.1


def ill_conditioned_tasks(low: np.ndarray, high: np.ndarray, best: np.ndarray, margin: float = ANCHOR_MARGIN):
    """int list: tasks whose normalised return means little.

    A task's score is normalised between the random policy (``low``) and the best single-task
    policy (``high``). Where the single-task policy beats the random one by less than ``margin``
    of the way from ``low`` to ``best`` (the best return any grouping reached on the task), the
    span is small or negative (a per-task budget too small to learn the task alone) and a normalised
    score blows up: compare the raw returns (``improvement_return``) there instead.
    """
    low, high, best = (np.asarray(a, float) for a in (low, high, best))
    reach = np.maximum(best - low, 0.0)
    return [int(i) for i in np.flatnonzero(high - low <= margin * reach)]  # reach >= 0: high <= low is in it


def ill_conditioned_note(report: dict) -> str | None:
    """One line for a report's ``ill_conditioned_tasks``, or None where there are none."""
    if not report["ill_conditioned_tasks"]:
        return None
    return (
        f"normalised returns mean little on {report['ill_conditioned_tasks']} (the best single-task policy "
        "hardly beats or trails the random policy there): read the raw-return column"
    )


def _improvement(values: dict[str, float], ours: str = "policygradex") -> dict:
    """``ours`` against every other entry: absolute difference and difference relative to |theirs|."""
    return {
        name: {
            "difference": values[ours] - theirs,
            "relative": (values[ours] - theirs) / abs(theirs) if abs(theirs) > 1e-12 else None,
        }
        for name, theirs in values.items()
        if name != ours
    }


def compare(
    family: Family,
    config: PipelineConfig,
    seeds: Sequence[int],
    *,
    random_draws: int = 3,
    groupings: Sequence[str] = GROUPINGS,
    vconfig: ValidateConfig | None = None,
    theta_stars: dict[int, AgentParams] | None = None,
    true_groups: dict[int, list[list[int]]] | None = None,
    progress: Callable[[str], None] | None = None,
    store: StageStore = NONE,
    equal_total: bool = False,
    save_policies: str | None = None,
    tasks: Sequence[dict] | None = None,
) -> dict:
    """Train every grouping with the same per-task env-step budget and compare per-task returns.

    Args:
        family: the tasks.
        config: :class:`PipelineConfig`; ``config.groups`` is k for the k-group groupings
            (``"auto"``: the k PolicyGradEx picks for each seed).
        seeds: one theta*, estimate, truth and set of trainings per seed (as ``pgx-jax run --seed``).
        random_draws: random partitions per seed.
        groupings: a subset of :data:`GROUPINGS` (``per_task`` is always trained: it anchors the
            normalisation).
        vconfig: the truth behind ``ground_truth`` (:class:`ValidateConfig`; its primary truth).
        theta_stars, true_groups: per seed, reuse a meta-policy / the groups of a true affinity
            (e.g. from :func:`pgx_jax.experiments.validate.validate`) instead of computing them.
        progress: called with a message as each step starts.
        store: each seed is a stage (``seed_<seed>``) of this :class:`pgx_jax.runtime.stages.StageStore`.
        equal_total: also ``policygradex_equal_total``: PolicyGradEx's groups trained for the
            budget less what the estimate consumed (:func:`equal_total_config`; ``ValueError``
            before any work where that leaves nothing): the total of a grouping that costs nothing.
        save_policies, tasks: a directory for every grouping's policies of each seed computed
            here (:func:`_save_policies`) and the family's task entries its indexes need.

    Returns:
        JSON-able dict: per grouping, ``per_task_return`` [seeds, N] (random: the mean over its
        draws), ``normalized`` [seeds, N], ``mean_return`` / ``mean_normalized`` per seed with
        their ``mean`` and ``std`` over seeds, ``groups`` per seed and ``env_steps_per_task``;
        ``random_policy_return`` [N], ``best_single_task_return`` [N], ``improvement`` of
        ``policygradex`` over each other grouping in mean normalised return and
        ``improvement_return`` in mean raw return, and ``ill_conditioned_tasks`` (names; see
        :func:`ill_conditioned_tasks`: where it is not empty, read ``improvement_return``).
    """
    groupings = _checked(family, config, seeds, groupings, random_draws, equal_total, save_policies and tasks is None)
    vconfig = vconfig or ValidateConfig()
    theta_stars, true_groups = dict(theta_stars or {}), dict(true_groups or {})
    say = progress or (lambda msg: None)

    one_seed = functools.partial(
        _one_seed,
        family,
        config,
        choice=dict(groupings=groupings, random_draws=random_draws, vconfig=vconfig, theta_stars=theta_stars),
        true_groups=true_groups,
        say=say,
        equal_total=equal_total,
        save=None if save_policies is None else (save_policies, list(tasks)),
    )
    done = map_processes(store.staged("seed", one_seed), list(seeds))  # seeds over processes where enough
    per_seed = [report for report, _ in done]
    timings = {f"seed_{seed}": wall for seed, (_, wall) in zip(seeds, done, strict=True)}
    ids = jnp.arange(family.n_tasks)
    low = np.asarray(simulators.random_policy_returns(family, ids, jax.random.PRNGKey(0), config.eval_episodes))
    high = np.max([s["per_task"]["per_task_return"] for s in per_seed], 0)
    names = groupings + [EQUAL_TOTAL] * equal_total
    out = {"groupings": {name: _grouping_report(name, per_seed, low, high, family) for name in names}}
    out.update(family=family.name, tasks=list(family.task_names), seeds=list(seeds), random_draws=random_draws)
    out.update(random_policy_return=low, best_single_task_return=high, config=config.to_dict(), timings=timings)
    return summarise(out)


def _checked(family, config, seeds, groupings, random_draws: int, equal_total: bool, no_tasks=False) -> list[str]:
    """:func:`compare`'s arguments checked before any work; the groupings to train, in
    :data:`GROUPINGS` order, ``per_task`` included."""
    if no_tasks:
        raise ValueError("save_policies needs the family's task entries (tasks=)")
    unknown = sorted(set(groupings) - set(GROUPINGS))
    if unknown:
        raise ValueError(f"unknown groupings {unknown}; known: {list(GROUPINGS)}")
    if random_draws < 1:
        raise ValueError(f"random_draws must be >= 1, got {random_draws}")
    if not seeds:
        raise ValueError("give at least one seed")
    config.check_for(family)
    if equal_total:  # refused here, before any work, where it cannot be
        if "policygradex" not in groupings:
            raise ValueError(f"equal totals shorten policygradex's groups; groupings {list(groupings)} lack it")
        equal_total_config(config, family)
    groupings = [g for g in GROUPINGS if g in set(groupings) | {"per_task"}]
    return groupings


def _one_seed(family, config, seed: int, *, choice: dict, true_groups: dict, say, equal_total: bool, save=None):
    """One seed of :func:`compare`: ``(its report, wall-clock seconds)``. ``choice``: the
    groupings, random draws, truth config and theta* cache :func:`choose_groupings` reads."""
    t0 = time.perf_counter()
    keys = run_keys(jax.random.PRNGKey(seed))
    chosen, spent = choose_groupings(family, config, seed, **choice, true_groups=true_groups, say=say)
    distinct = sorted({tuple(g) for draws in chosen.values() for groups in draws for g in groups})
    *trained, policies = _train_and_evaluate(config, family, distinct, keys.group_training, say)
    out = _seed_report(chosen, *trained, spent, family.n_tasks)
    if save is not None:
        _save_policies(save, seed, chosen, policies, trained[0], config, family)
    if equal_total:  # the same groups and keys, shortened by what this seed's estimate consumed
        short = equal_total_config(config, family, float(np.mean(spent["policygradex"])))
        chosen = {EQUAL_TOTAL: chosen["policygradex"]}
        groups = [tuple(g) for g in chosen[EQUAL_TOTAL][0]]
        *trained, policies = _train_and_evaluate(short, family, groups, keys.group_training, say)
        out.update(_seed_report(chosen, *trained, {EQUAL_TOTAL: spent["policygradex"]}, family.n_tasks))
        if save is not None:
            _save_policies(save, seed, chosen, policies, trained[0], short, family)
    return out, time.perf_counter() - t0


def _save_policies(save: tuple[str, list], seed: int, chosen: dict, policies, returns: dict, config, family) -> None:
    """Every grouping's policies of this seed as :func:`pgx_jax.rl.checkpoint.save_groups` writes a
    run's: ``<dir>/seed<seed>/<grouping>[-<draw>]/`` (``load_groups`` reads each), with each
    task's return under its group's policy and the evaluation key that reproduces it."""
    from pgx_jax.rl.checkpoint import save_groups

    root, tasks = save
    trained, k_eval = policies
    for name, draws in chosen.items():
        for d, groups in enumerate(draws):
            groups = [tuple(int(i) for i in g) for g in groups]
            stacked = jax.tree.map(lambda *xs: np.stack(xs), *(trained[g] for g in groups))
            where = os.path.join(root, f"seed{seed}", name if len(draws) == 1 else f"{name}-{d}")
            per_task = {family.task_names[i]: float(returns[g][i]) for g in groups for i in g}
            save_groups(
                where, stacked, groups, config.ppo, family, tasks, seed=seed, grouping=name, per_task_return=per_task,
                evaluation={"key": [int(x) for x in np.asarray(k_eval)], "episodes": config.eval_episodes},
            )  # fmt: skip


EQUAL_TOTAL = "policygradex_equal_total"


def equal_total_config(config: PipelineConfig, family: Family, spent: float | None = None) -> PipelineConfig:
    """``config`` with the group training shortened so that PolicyGradEx's groups get the same
    total env steps per task as a grouping that consumed nothing to choose them: B' = B - E per
    task, B the groups' budget (:func:`pgx_jax.experiments.groups.env_steps_per_task`), E = ``spent``, the
    mean over the tasks of what the estimate consumed (:func:`pgx_jax.experiments.cost.estimation_env_steps`
    of the drawn subsets), rounded down to whole updates. Without ``spent``, E's lower bound
    before any subset is drawn (m = the configured count of s-task subsets; sampling may add
    subsets for coverage), for a check before any work. ``ValueError`` naming B and E where B'
    is less than one update per task."""
    n, L = family.n_tasks, family.episode_length
    if spent is None:
        m, size = config.affinity.count_for(n), config.affinity.size_for(n)
        rows = np.zeros((m, n), bool)
        rows[:, :size] = True  # any m subsets of s tasks: the mean over the tasks is the same
        spent = float(estimation_env_steps(config, family, rows)["total"].mean())
    per_update = config.ppo.num_envs * config.ppo.unroll(L)
    budget = env_steps_per_task(config.ppo, family)
    updates = int((budget - spent) // per_update)
    if updates < 1:
        raise ValueError(
            f"equal totals: the estimate consumes {spent:,.0f} env steps per task, the groups' whole budget is "
            f"{budget:,} (one update: {per_update:,}); allowed: an estimate below the budget (evaluator 'gain', "
            "'loss' or 'alignment' rolls nothing out; --meta-policy early-F meta-trains for a fraction F; fewer "
            "--subsets or --eval-episodes; a larger --budget)"
        )
    return dataclasses.replace(config, ppo=dataclasses.replace(config.ppo, total_env_steps=updates * n * per_update))


def _seed_report(chosen: dict, returns: dict, metrics: dict, steps: dict, spent: dict, n: int) -> dict:
    """Per grouping of one seed: its groups, per-task return [N] (random: mean over draws), the
    family's metric where the simulator reports one (e.g. Meta-World's success rate), else None,
    the env steps per task of each group's training, and the env steps per task the choice of
    the groups consumed (``selection_env_steps_per_task`` [N]) and in all
    (``total_env_steps_per_task``: the mean over the tasks of training and selection)."""
    out = {}
    reported = all(m is not None for m in metrics.values())
    for name, draws in chosen.items():
        per_draw, per_draw_metric = [], []
        for groups in draws:
            r, m = np.full(n, np.nan), np.full(n, np.nan)
            for g in groups:
                r[list(g)] = returns[tuple(g)][list(g)]
                if metrics[tuple(g)] is not None:
                    m[list(g)] = metrics[tuple(g)][list(g)]
            per_draw.append(r)
            per_draw_metric.append(m)
        out[name] = {
            "groups": draws if name == "random" else draws[0],
            "per_task_return": np.mean(per_draw, 0),
            "per_task_metric": np.mean(per_draw_metric, 0) if reported else None,
            "env_steps_per_task": [[steps[tuple(g)] for g in groups] for groups in draws],
            "selection_env_steps_per_task": spent[name],
            "total_env_steps_per_task": float(
                np.mean([np.mean([steps[tuple(g)] for g in groups]) for groups in draws]) + np.mean(spent[name])
            ),
        }
    return out


def _grouping_report(name: str, per_seed: list[dict], low, high, family) -> dict:
    """One grouping's entry of the report: returns, normalised returns and metric over seeds."""
    r = np.stack([s[name]["per_task_return"] for s in per_seed])  # [seeds, N]
    z = _normalise(r, low, high)
    out = {
        "per_task_return": r,
        "normalized": z,
        "mean_return": {"per_seed": r.mean(1), "mean": float(r.mean()), "std": float(r.mean(1).std())},
        "mean_normalized": {"per_seed": z.mean(1), "mean": float(z.mean()), "std": float(z.mean(1).std())},
        "groups": [s[name]["groups"] for s in per_seed],
        "env_steps_per_task": [s[name]["env_steps_per_task"] for s in per_seed],
        # absent from seeds saved before the selection was counted (a resumed run)
        "selection_env_steps_per_task": [s[name].get("selection_env_steps_per_task") for s in per_seed],
        "total_env_steps_per_task": [s[name].get("total_env_steps_per_task") for s in per_seed],
    }
    if per_seed[0][name]["per_task_metric"] is not None:
        m = np.stack([s[name]["per_task_metric"] for s in per_seed])
        out["metric"] = {
            "name": family.metric[0],
            "per_task": m,
            "per_seed": m.mean(1),
            "mean": float(m.mean()),
            "std": float(m.mean(1).std()),
        }
    return out


def summarise(report: dict) -> dict:
    """Fill a compare report's ``improvement`` (policygradex over each other grouping, mean
    normalised return), ``improvement_return`` (the same in mean raw return) and
    ``ill_conditioned_tasks`` from its stored returns. Works on a report read back from JSON,
    so reports written before a field existed can be completed. Returns the report."""
    groupings = report["groupings"]
    if "policygradex" in groupings:
        for field, key in (("improvement", "mean_normalized"), ("improvement_return", "mean_return")):
            report[field] = _improvement({name: g[key]["mean"] for name, g in groupings.items()})
    best = np.max([np.nanmean(np.asarray(g["per_task_return"], float), 0) for g in groupings.values()], 0)
    bad = ill_conditioned_tasks(report["random_policy_return"], report["best_single_task_return"], best)
    report["ill_conditioned_tasks"] = [report["tasks"][i] for i in bad]
    if EQUAL_TOTAL in groupings:  # the shortened groups against the groupings that cost nothing to choose
        free = (EQUAL_TOTAL, *FREE_GROUPINGS)
        values = {name: g["mean_return"]["mean"] for name, g in groupings.items() if name in free}
        report["improvement_equal_total"] = _improvement(values, ours=EQUAL_TOTAL)
    return report


def _budget_cell(g: dict) -> str:
    """``training / in all`` env steps per task of one grouping, means over seeds (and draws and
    groups); ``-`` in all for a report written before the selection was counted."""
    train = np.mean([np.mean([np.mean(draw) for draw in seed]) for seed in g["env_steps_per_task"]])
    total = g.get("total_env_steps_per_task") or [None]
    if any(t is None for t in total):
        return f"{train:,.0f} / -"
    return f"{train:,.0f} / {np.mean(total):,.0f}"


def comparison_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a compare report, one row per grouping (for ``pgx-jax compare`` and the
    benchmark tables): normalised and raw mean return (mean +- std over seeds), policygradex's
    relative improvement over the grouping in each, and the family's metric where there is one."""

    def pct(field, name):
        imp = report.get(field, {}).get(name)
        return "-" if imp is None or imp["relative"] is None else f"{100 * imp['relative']:+.1f}%"

    metric = next((g["metric"]["name"] for g in report["groupings"].values() if "metric" in g), None)
    header = [
        "grouping",
        "normalised return",
        "mean return",
        "policygradex vs this (normalised)",
        "policygradex vs this (return)",
        "env steps per task: training / in all",
    ] + ([metric] if metric else [])
    rows = []
    for name, g in report["groupings"].items():
        row = [
            name,
            f"{g['mean_normalized']['mean']:.3f} +- {g['mean_normalized']['std']:.3f}",
            f"{g['mean_return']['mean']:.2f} +- {g['mean_return']['std']:.2f}",
            pct("improvement", name),
            pct("improvement_return", name),
            _budget_cell(g),
        ]
        if metric:
            row.append(f"{g['metric']['mean']:.3f} +- {g['metric']['std']:.3f}" if "metric" in g else "-")
        rows.append(row)
    return header, rows
