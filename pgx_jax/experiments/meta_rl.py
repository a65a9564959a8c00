"""The paper's meta-RL protocol: group the source tasks, meta-train one MAML policy per group,
score the groupings on unseen test tasks after adaptation (``pgx-jax meta-rl``).

Per seed:

1. The groupings of the n source tasks (:func:`pgx_jax.experiments.groupings.choose_groupings` on the source
   family, task-agnostic: ``multitask``, ``random``, ``gradient_similarity``, ``ground_truth``,
   ``policygradex``).
2. One MAML meta-policy per distinct group (:mod:`pgx_jax.rl.maml`), every group of every grouping in
   one call of the family's simulator (one compiled program for a JAX family; for a host family,
   one host loop whose episodes step in Python and whose learning is jitted), with the same env
   steps per source task in every grouping (a group of s tasks runs s times the per-task
   meta-iterations). A group shared by two groupings is one policy
   (its key is a function of the seed and the group).
3. Every meta-policy adapted to every test task (:func:`pgx_jax.rl.maml.adaptation_curves`): A
   policy-gradient steps, each on fresh episodes; task t's episodes are keyed by t alone, so the
   groupings meet the same start states and noise.
4. **Routing**: a test task goes, within each grouping, to the group whose meta-policy earns the
   most on a probe batch of the task's episodes (the task's own data, no training, the same rule
   for every grouping; one batch per group, with a key of its own: the routed policy's curve
   starts from other episodes, so the maximum over noisy probes is not what is reported). Reported
   beside it: the agreement with the group of the nearest source task (parameters standardised
   over the source tasks).

Meta-training and adaptation run on one family holding the source tasks then the test tasks (the
policy is task-agnostic: the id rows of its input are zeros, so it cannot tell them apart); the
estimate runs on the source family alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax.core.types import Family
from pgx_jax.experiments.config import PipelineConfig, ValidateConfig
from pgx_jax.experiments.groupings import choose_groupings
from pgx_jax.experiments.groups import group_key, group_masks
from pgx_jax.experiments.keys import run_keys
from pgx_jax.families import make_family, meta_rl_families, with_workers
from pgx_jax.rl import networks
from pgx_jax.rl.maml import MAMLConfig
from pgx_jax.runtime import distributed
from pgx_jax.runtime.distributed import across_processes
from pgx_jax.runtime.results import save_figure
from pgx_jax.runtime.stages import NONE, StageStore
from pgx_jax.simulators import simulator

GROUPINGS = ("multitask", "random", "gradient_similarity", "ground_truth", "policygradex")
DEFAULT_GROUPINGS = ("multitask", "random", "gradient_similarity", "policygradex")
ROUTING = (
    "probe: the group whose meta-policy earns the most on a batch of the test task's episodes (one batch per "
    "group, before adaptation; the adaptation then starts from fresh episodes)"
)


def check_groupings(groupings: Sequence[str]) -> list[str]:
    unknown = sorted(set(groupings) - set(GROUPINGS))
    if unknown or not groupings:
        raise ValueError(f"groupings must be a non-empty subset of {list(GROUPINGS)}; unknown: {unknown}")
    return [g for g in GROUPINGS if g in set(groupings)]


def combined_family(name: str, sources: Sequence[dict], tests: Sequence[dict]) -> Family:
    """One family of the source tasks (indices 0..n-1) then the test tasks (n..n+m-1), no groups."""
    strip = lambda e: {k: v for k, v in e.items() if k != "group"}  # noqa: E731
    return make_family(name, [strip(e) for e in sources] + [strip(e) for e in tests])


def stepped(family: Family, host_workers: int) -> Family:
    """``family`` stepping its environments in ``host_workers`` processes (0: this one)."""
    return with_workers(family, host_workers) if host_workers else family


def nearest_source(sources: Sequence[dict], tests: Sequence[dict], fields: Sequence[str]) -> np.ndarray:
    """int [m]: each test task's nearest source task, fields standardised over the sources
    (a field constant over the sources is left out)."""
    src = np.array([np.ravel([e[f] for f in fields]) for e in sources], float)
    tst = np.array([np.ravel([e[f] for f in fields]) for e in tests], float)
    std = src.std(0)
    keep = std > 1e-12
    if not keep.any():
        return np.zeros(len(tests), int)
    d = ((tst[:, None, keep] - src[None, :, keep]) / std[keep]) ** 2
    return np.argmin(d.sum(-1), 1)


def meta_train_groups(mconfig: MAMLConfig, family: Family, groups: list[tuple[int, ...]], n_source: int, key):
    """Meta-train one policy per group (tuples of source indices), all in one simulator call, from
    one initialisation; each group's episodes come from :func:`pgx_jax.experiments.groups.group_key`, so a
    group shared by two groupings is one policy.

    Unlike PPO's group trainings (:mod:`pgx_jax.experiments.groups`), the groups are not split into blocks of
    one shape: on JAX families a group's meta-policy, probe and curves measured bit for bit the
    same alone and beside three other groups (pendulum-physics, smoke and demo networks; a test
    holds it on the fast family). Host families' vmapped learning rounds by the batch (1e-5).

    Returns ``(params with leading [G], metrics, active iterations int [G], env steps per source
    task int [G])``."""
    masks = np.zeros((len(groups), family.n_tasks), bool)
    for j, g in enumerate(groups):
        masks[j, list(g)] = True
    active = mconfig.group_iterations([len(g) for g in groups], n_source)
    k_init, k_groups = jax.random.split(key)
    init = networks.init_agent(mconfig.network, family.obs_size, family.action_size, k_init)  # one for all groups
    keys = jnp.stack([group_key(k_groups, g) for g in groups])
    masks, active_j = jnp.asarray(masks), jnp.asarray(active)
    sim, iterations = simulator(family), int(active.max())
    train = lambda xs: sim.meta_train_many(mconfig, *xs[:2], iterations, xs[2], init)  # noqa: E731
    params, metrics = across_processes(train, (masks, keys, active_j))  # the groups over the processes
    finite = np.asarray(metrics["finite"])
    if not finite.all():
        bad = np.argwhere(~finite)[0].tolist()
        where = f"group {groups[bad[0]]}, iteration {bad[1]}"
        raise FloatingPointError(f"non-finite meta-loss, gradient or reward ({where})")
    slots = np.asarray(metrics["slots"]).sum(1)[:, :n_source]  # [G, n]
    steps = 2 * mconfig.episodes * family.episode_length * slots
    per_task = np.array([steps[j, list(g)].mean() for j, g in enumerate(groups)])
    if not all(np.allclose(steps[j, list(g)], per_task[j]) for j, g in enumerate(groups)):
        raise AssertionError(f"unequal env steps among a group's tasks: {steps.tolist()}")
    return params, metrics, active, per_task


def _stats(values: Sequence[float]) -> dict:
    v = np.asarray(values, float)
    return {"per_seed": v.tolist(), "mean": float(v.mean()), "std": float(v.std())}


def _check_inputs(family_name: str, config: PipelineConfig, seeds, random_draws, true_groups: dict, n: int) -> None:
    for groups in true_groups.values():
        group_masks(groups, n)  # a partition of the source tasks
    if isinstance(random_draws, bool) or not isinstance(random_draws, int) or random_draws < 1:
        raise ValueError(f"random_draws must be a positive integer, got {random_draws!r}")
    if family_name not in meta_rl_families():
        raise ValueError(f"family {family_name!r}: meta-rl runs on {meta_rl_families()}")
    if not seeds:
        raise ValueError("give at least one seed")
    if config.ppo.network.conditioning != "none" or config.meta_ppo().network.conditioning != "none":
        raise ValueError("meta-rl is task-agnostic: the estimate's policies need conditioning 'none'")


def meta_rl(
    family_name: str,
    sources: Sequence[dict],
    tests: Sequence[dict],
    config: PipelineConfig,
    mconfig: MAMLConfig,
    seeds: Sequence[int],
    *,
    groupings: Sequence[str] = DEFAULT_GROUPINGS,
    vconfig: ValidateConfig | None = None,
    random_draws: int = 3,
    true_groups: dict[int, list[list[int]]] | None = None,
    progress: Callable[[str], None] | None = None,
    on_seed: Callable[[dict], None] | None = None,
    store: StageStore = NONE,
    host_workers: int = 0,
) -> dict:
    """The protocol over ``seeds``; returns the JSON-able ``meta_rl.json`` report.

    Args:
        family_name: a family of :func:`pgx_jax.families.meta_rl_families`.
        sources, tests: the source task entries (the grouping's n tasks), the unseen test tasks'.
        config: the estimate's :class:`PipelineConfig` (task-agnostic: ``conditioning="none"``).
        mconfig: meta-training and adaptation.
        groupings: a subset of :data:`GROUPINGS`.
        vconfig: the truth behind ``ground_truth``.
        random_draws: random partitions per seed (``random``'s scores are their mean).
        true_groups: per seed, the groups of a true affinity computed before (e.g. ``validate``'s
            ``truths.full.true_groups`` for the same seed and config) instead of computing them.
        on_seed: called with the report over the seeds done so far as each seed finishes (the
            CLI writes it, so an interrupted run keeps its finished seeds).
        store: each seed is a stage (``seed_<seed>``) of this :class:`pgx_jax.runtime.stages.StageStore`.
        host_workers: worker processes stepping a host family's environments (the same report).

    Returns:
        ``groupings.<name>`` with ``groups`` per seed, ``before_adaptation`` and
        ``after_adaptation`` ``{"per_seed", "mean", "std"}`` (mean return over the test tasks),
        ``curve`` (mean over seeds and test tasks, [A + 1]) and ``curve_per_seed``, per seed the
        test tasks' routed group, their returns before and after, and the routing's agreement
        with the nearest source task's group; ``improvement`` of ``policygradex`` over each
        other grouping after and before adaptation; the tasks, configs and timings.
    """
    groupings = check_groupings(groupings)
    true_groups = {int(k): v for k, v in (true_groups or {}).items()}
    _check_inputs(family_name, config, seeds, random_draws, true_groups, len(sources))
    say = progress or (lambda msg: None)
    source_family = stepped(make_family(family_name, list(sources)), host_workers)
    family = stepped(combined_family(family_name, sources, tests), host_workers)
    config.check_for(source_family)
    n, m = len(sources), len(tests)
    nearest = nearest_source(sources, tests, list(family.params))
    test_ids = jnp.arange(n, n + m, dtype=jnp.int32)
    vconfig = vconfig or ValidateConfig()
    theta_stars, per_seed, timings = {}, [], {}

    def one_seed(seed):
        t0 = time.perf_counter()
        shared = (groupings, random_draws, vconfig, theta_stars, true_groups, say)
        chosen, spent, distinct = _chosen(source_family, config, seed, *shared)
        say(f"seed {seed}: meta-train {len(distinct)} group(s), adapt them to {m} test tasks")
        k_meta, k_adapt = run_keys(jax.random.PRNGKey(seed)).meta_rl
        probes, curves, steps, active, metrics, times = train_and_adapt(
            mconfig, family, distinct, n, test_ids, k_meta, k_adapt
        )
        ties = np.random.default_rng(seed)  # routing's ties
        scored = score_groupings(chosen, distinct, probes, curves, steps, active, metrics, nearest, n, ties)
        count_selection(scored, chosen, spent, mconfig.adapt_episodes * family.episode_length)
        return scored, dict(times, total_s=time.perf_counter() - t0)

    # >= P seeds: each process runs whole seeds (written at the end); else each over all, written as done
    batches = [list(seeds)] if len(seeds) >= distributed.process_count() > 1 else [[s] for s in seeds]
    for batch in batches:
        staged = distributed.map_processes(store.staged("seed", one_seed), batch)
        for seed, (scored, times) in zip(batch, staged, strict=True):
            per_seed.append(scored)
            timings[f"seed_{seed}"] = times
        report = _report(per_seed, groupings, family_name, sources, tests, nearest, seeds, config, mconfig, timings)
        if on_seed is not None:
            on_seed(report)
    return report


def _chosen(source_family, config, seed, groupings, random_draws, vconfig, theta_stars, true_groups, say):
    """``({grouping: [draw: [group: tuple of source ids]]}, {grouping: float [n]}, groups)`` of one
    seed: each grouping a partition, the env steps per source task its choice consumed
    (:func:`pgx_jax.experiments.groupings.selection_env_steps`) and the distinct groups, by size."""
    n = source_family.n_tasks
    wanted = [g for g in groupings if g != "multitask"] or ["policygradex"]
    chosen, spent = choose_groupings(
        source_family, config, seed, wanted, random_draws, vconfig, theta_stars, true_groups, say
    )
    chosen["multitask"] = [[list(range(n))]]
    spent["multitask"] = np.zeros(n)
    chosen = {name: [[tuple(g) for g in draw] for draw in chosen[name]] for name in groupings}
    for draws in chosen.values():
        for groups in draws:
            group_masks(groups, n)  # each grouping is a partition of the source tasks
    distinct = sorted({g for draws in chosen.values() for d in draws for g in d}, key=lambda g: (len(g), g))
    return chosen, {name: spent[name] for name in groupings}, distinct


def count_selection(scored: dict, chosen: dict, spent: dict, probe_steps: int) -> None:
    """Add to each grouping of :func:`score_groupings`'s ``scored`` what its choice consumed:
    ``selection_env_steps_per_source_task`` (the mean over the source tasks of ``spent``),
    ``routing_env_steps_per_test_task`` (one probe batch of ``probe_steps`` per group where a
    grouping has more than one; mean over draws) and ``total_env_steps_per_source_task`` (the
    meta-training's nominal steps per source task plus the selection's)."""
    for name, out in scored.items():
        out["selection_env_steps_per_source_task"] = float(np.mean(spent[name]))
        out["routing_env_steps_per_test_task"] = float(
            np.mean([len(groups) * probe_steps if len(groups) > 1 else 0 for groups in chosen[name]])
        )
        out["total_env_steps_per_source_task"] = float(np.mean(out["env_steps_per_source_task"])) + float(
            np.mean(spent[name])
        )


def train_and_adapt(mconfig: MAMLConfig, family, groups, n_source: int, test_ids, k_meta, k_adapt):
    """Meta-train the groups (:func:`meta_train_groups`) and adapt each to every test task.

    Returns ``(probe returns float [G, m] (:func:`pgx_jax.rl.maml.probe_returns`), curves float
    [G, m, A + 1], env steps per source task [G], active iterations [G], meta-training metrics,
    {"meta_train_s", "adapt_s"})``: the probe and the curves use independent episodes."""
    t0 = time.perf_counter()
    params, metrics, active, steps = meta_train_groups(mconfig, family, groups, n_source, k_meta)
    jax.block_until_ready(params)
    t1 = time.perf_counter()
    k_probe, k_curve = jax.random.split(k_adapt)
    sim = simulator(family)
    probes = across_processes(lambda p: sim.meta_probe(mconfig, p, test_ids, k_probe), params)
    curves = across_processes(lambda p: sim.meta_adapt(mconfig, p, test_ids, k_curve), params)
    if not (np.all(np.isfinite(curves)) and np.all(np.isfinite(probes))):
        raise FloatingPointError("non-finite returns in the routing probe or in adaptation")
    times = {"meta_train_s": t1 - t0, "adapt_s": time.perf_counter() - t1}
    return probes, curves, steps, active, metrics, times


def route_by_probe(probes, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """int [m]: for every test task the group (row of ``probes`` float [G', m]) with the best probe
    return, a tie broken uniformly at random (integer returns such as CartPole's tie often, and
    the first group must not win them all); and bool [m]: whether the task's best was a tie."""
    best = probes >= probes.max(0, keepdims=True)
    route = np.array([rng.choice(np.flatnonzero(best[:, i])) for i in range(probes.shape[1])], int)
    return route, best.sum(0) > 1


def score_groupings(chosen, distinct, probes, curves, steps, active, metrics, nearest, n: int, rng=None) -> dict:
    """Per grouping of one seed: route every test task to the group with the best probe return
    (:func:`route_by_probe`, ties broken with ``rng``), and report the routed curves (other
    episodes than the probe's), budgets (``env_steps_per_source_task``: the nominal budget, slots x
    2K episodes x T, equal in every grouping; ``measured_env_steps_per_source_task``: the steps the
    episodes actually took, fewer where episodes end early) and routing agreement; a grouping with
    several draws (``random``) reports their mean (its ``groups`` and ``routed_group`` then list
    the draws).

    ``chosen``: ``{name: [draw: [group: tuple of task ids]]}``; ``probes`` float [G, m] and
    ``curves`` float [G, m, A + 1] of the ``distinct`` groups; ``steps`` / ``active`` [G]."""
    m = curves.shape[1]
    index = {g: j for j, g in enumerate(distinct)}
    post = np.asarray(metrics["post_return"])
    measured = np.asarray(metrics["env_steps"]).sum(1)[:, :n]  # [G, n]: valid steps actually taken
    rng = np.random.default_rng(0) if rng is None else rng
    seed_out = {}
    for name, draws in chosen.items():
        scored, ties = [], []
        for groups in draws:
            rows = np.array([index[g] for g in groups])
            route, tied = route_by_probe(probes[rows], rng)  # [m]: the routing's own episodes
            label = np.empty(n, int)
            for j, g in enumerate(groups):
                label[list(g)] = j
            scored.append((route, curves[rows[route], np.arange(m)], float(np.mean(route == label[nearest]))))
            ties.append(float(np.mean(tied)) if len(groups) > 1 else 0.0)
        routed = np.mean([c for _, c, _ in scored], 0)  # [m, A + 1]
        several = len(draws) > 1
        seed_out[name] = {
            "groups": [[list(g) for g in d] for d in draws] if several else [list(g) for g in draws[0]],
            "routed_group": [r.tolist() for r, _, _ in scored] if several else scored[0][0].tolist(),
            "routing_agreement_with_nearest_source": float(np.mean([a for _, _, a in scored])),
            "before_adaptation_per_task": routed[:, 0].tolist(),
            "after_adaptation_per_task": routed[:, -1].tolist(),
            "curve": routed.mean(0).tolist(),
            "routing_ties": float(np.mean(ties)),
            "env_steps_per_source_task": [float(steps[index[g]]) for d in draws for g in d],
            "measured_env_steps_per_source_task": [float(measured[index[g], list(g)].mean()) for d in draws for g in d],
            "meta_iterations": [int(active[index[g]]) for d in draws for g in d],
            "probe_batches_per_test_task": float(np.mean([len(d) for d in draws])),
            # the meta-training's last iteration, its slots' tasks (before the last outer step)
            "last_iteration_post_adaptation_return": [
                float(np.nanmean(post[index[g], int(active[index[g]]) - 1][list(g)])) for d in draws for g in d
            ],
        }
    return seed_out


def _report(per_seed, groupings, family_name, sources, tests, nearest, seeds, config, mconfig, timings) -> dict:
    """The report over the seeds done so far (``seeds_done``)."""
    out = {}
    for name in groupings:
        ss = [s[name] for s in per_seed]
        curve = np.array([s["curve"] for s in ss])
        out[name] = {
            "groups": [s["groups"] for s in ss],
            "before_adaptation": _stats([np.mean(s["before_adaptation_per_task"]) for s in ss]),
            "after_adaptation": _stats([np.mean(s["after_adaptation_per_task"]) for s in ss]),
            "curve": curve.mean(0).tolist(),
            "curve_per_seed": curve.tolist(),
            "routing_agreement_with_nearest_source": _stats([s["routing_agreement_with_nearest_source"] for s in ss]),
            "per_seed": ss,
        }
    episode_length = make_family(family_name, list(sources)).episode_length  # built once: make_family caches
    report = {
        "family": family_name,
        "source_tasks": list(sources),
        "test_tasks": list(tests),
        "nearest_source": nearest.tolist(),
        "seeds": list(seeds),
        "seeds_done": list(seeds)[: len(per_seed)],
        "groupings": out,
        "routing": ROUTING,
        "adaptation": {
            "steps": mconfig.adapt_steps,
            "unit": f"one policy-gradient step (SGD, lr {mconfig.inner_lr}) on {mconfig.adapt_episodes} fresh episodes",
            "env_steps_per_test_task": mconfig.adapt_env_steps(episode_length),
            "env_steps_note": "nominal (episodes x episode_length): an upper bound where episodes end early (the host "
            "families); the budget made equal across groupings is the episodes per source task, and "
            "measured_env_steps_per_source_task reports the steps meta-training took",
            "routing": "plus one probe batch per group of the grouping (probe_batches_per_test_task per seed)",
            "probe_env_steps_per_group": mconfig.adapt_episodes * episode_length,
        },
        "meta_iterations_per_source_task": int(mconfig.group_iterations([1], len(sources))[0]),
        "std": "population standard deviation over seeds (ddof 0), as compare's; the test tasks are the same for "
        "every seed, so it is the training's randomness alone",
        "config": config.to_dict(),
        "maml_config": mconfig.to_dict(),
        "timings": dict(timings),
    }
    if "policygradex" in out:
        report["improvement"] = {
            when: {
                name: _relative(out["policygradex"][when]["mean"], g[when]["mean"])
                for name, g in out.items()
                if name != "policygradex"
            }
            for when in ("after_adaptation", "before_adaptation")
        }
    return report


def _relative(ours: float, theirs: float) -> dict:
    return {"difference": ours - theirs, "relative": (ours - theirs) / abs(theirs) if abs(theirs) > 1e-12 else None}


def table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a report: per grouping, mean test return before and after adaptation
    (mean +- std over seeds), policygradex's improvement over it after adaptation, routing agreement."""
    header = ["grouping", "before adaptation", "after adaptation", "policygradex vs this (after)"]
    header.append("routing = nearest source")
    rows = []
    for name, g in report["groupings"].items():
        imp = report.get("improvement", {}).get("after_adaptation", {}).get(name)
        pct = "-" if imp is None or imp["relative"] is None else f"{100 * imp['relative']:+.1f}%"
        rows.append(
            [
                name,
                f"{g['before_adaptation']['mean']:.1f} +- {g['before_adaptation']['std']:.1f}",
                f"{g['after_adaptation']['mean']:.1f} +- {g['after_adaptation']['std']:.1f}",
                pct,
                f"{g['routing_agreement_with_nearest_source']['mean']:.2f}",
            ]
        )
    return header, rows


def plot(report: dict, path: str) -> None:
    """Per grouping, the test tasks' mean return against adaptation steps (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, g in report["groupings"].items():
        curve = np.asarray(g["curve_per_seed"])
        steps = np.arange(curve.shape[1])
        ax.plot(steps, curve.mean(0), marker="o", ms=3, label=name)
        if curve.shape[0] > 1:
            ax.fill_between(steps, curve.min(0), curve.max(0), alpha=0.15)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel(f"mean return on {len(report['test_tasks'])} unseen tasks")
    ax.set_title(f"{report['family']}: one MAML meta-policy per group")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


__all__ = ["DEFAULT_GROUPINGS", "GROUPINGS", "ROUTING", "combined_family", "meta_rl", "nearest_source", "plot", "table"]
