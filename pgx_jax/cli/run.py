"""``pgx-jax run``: PolicyGradEx end to end, its result file, the group policies and the scalar log."""

from __future__ import annotations

import os

from pgx_jax.cli.args import entries_of
from pgx_jax.cli.outputs import scalar_log, stage_store
from pgx_jax.cli.prepare import setup
from pgx_jax.cli.running import compiles_report, distributed_summary, meta_train_theta, versions_report


def cmd_run(args) -> int:
    import jax
    import numpy as np

    from pgx_jax.experiments.cost import run_flops
    from pgx_jax.experiments.groups import env_steps_per_task
    from pgx_jax.experiments.pipeline import policygradex
    from pgx_jax.runtime.results import markdown_table, peak_rss_mb, plot_affinity, write_json

    family, config, out, theta = setup(args, "run")
    key = jax.random.PRNGKey(args.seed)
    timings = {}
    stages = ["meta-train", "estimate", "cluster", "train groups"]
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(stages), desc="pipeline", unit="stage", position=0)
    if theta is None:
        store = stage_store(args, out, family)
        theta, timings["meta_train"] = meta_train_theta(args, family, config, out, key, bar, store)
    if bar is not None:
        bar.update(1)

    def progress(stage):
        if bar is not None and not stage.startswith("estimate"):
            bar.update(1)
        if bar is not None:
            bar.set_description(stage)

    result = policygradex(family, config, key, theta_star=theta, progress=progress)
    flops = run_flops(config, family, result)  # the cost accounting: traced, not run
    if bar is not None:
        bar.update(bar.total - bar.n)
        bar.close()
    timings.update(result.timings)
    names = family.task_names
    group_of = {i: g for g, members in enumerate(result.groups) for i in members}
    write_json(os.path.join(out, "result.json"), _run_report(args, family, config, result, flops, timings))
    plot_affinity(
        os.path.join(out, "affinity.png"),
        result.affinity,
        result.groups,
        names,
        f"{family.name}: affinity ({config.evaluator} evaluator, m={result.subsets.shape[0]})",
    )
    grouped, meta = np.asarray(result.per_task_return), np.asarray(result.meta_per_task_return)
    multitask = np.asarray(result.multitask_per_task_return)
    per_task_steps = env_steps_per_task(config.ppo, family)
    header = ["task", "group", "return (group policy)", "return (multitask policy)"]
    columns = [grouped, multitask]
    theta = f"theta* ({config.meta_policy}, {config.meta_ppo().num_updates(family.episode_length)} updates)"
    if not config.theta_star_is_multitask:  # shown apart
        header.append(f"return ({theta})")
        columns.append(meta)
    rows = [[names[i], group_of[i], *(float(c[i]) for c in columns)] for i in range(family.n_tasks)]
    print(markdown_table(header, rows), end="")
    print("groups: " + "; ".join("{" + ", ".join(names[i] for i in g) + "}" for g in result.groups))
    print(
        f"mean return: group policies {grouped.mean():.2f}, multitask policy {multitask.mean():.2f} (both "
        f"{per_task_steps:,} env steps per task, the same evaluation episodes)"
        + ("" if config.theta_star_is_multitask else f"; {theta} {meta.mean():.2f}")
    )
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"peak memory (RSS): {peak_rss_mb():,.0f} MB")
    print(f"wrote {out}/result.json, affinity.png, theta_star/")
    _save_group_policies(args, out, family, config, result)
    _log_run(args, out, family, result, timings)
    return 0


def _log_run(args, out: str, family, result, timings: dict) -> None:
    """With ``--log tensorboard``: each stage's seconds, and each task's return (and the mean)
    under its group's policy, the multitask policy and theta*."""
    with scalar_log(args, out) as log:
        _log_returns(log, family, result, timings)


def _log_returns(log, family, result, timings: dict) -> None:
    import numpy as np

    log.scalars("seconds", timings)
    names = family.task_names
    columns = {
        "group_policy": result.per_task_return,
        "multitask": result.multitask_per_task_return,
        "theta_star": result.meta_per_task_return,
    }
    for column, returns in columns.items():
        if returns is not None:
            values = {names[i]: float(returns[i]) for i in range(family.n_tasks)}
            log.scalars(f"return/{column}", {**values, "mean": float(np.mean(returns))})


def _save_group_policies(args, out: str, family, config, result) -> None:
    """The groups' policies as ``out/groups/<g>/`` and ``out/groups.json``
    (:func:`pgx_jax.rl.checkpoint.save_groups`), with each task's return and the evaluation's key
    and episodes, so a reloaded policy re-evaluates to the same return."""
    from pgx_jax.rl.checkpoint import save_groups

    names = family.task_names
    index = save_groups(
        out,
        result.group_params,
        result.groups,
        result.group_config,
        family,
        entries_of(args),
        seed=args.seed,
        layout=getattr(args, "layout", None),
        per_task_return={names[i]: float(result.per_task_return[i]) for i in range(family.n_tasks)},
        evaluation={"key": [int(x) for x in result.eval_key], "episodes": config.eval_episodes},
    )
    print(f"wrote {index} and {out}/groups/ (one policy per group; pgx_jax.load_groups({out!r}) reloads them)")


def _run_report(args, family, config, result, flops, timings) -> dict:
    """``result.json`` of ``pgx-jax run``."""
    import numpy as np

    from pgx_jax.runtime.results import machine, peak_rss_mb

    names = family.task_names
    return {
        "family": family.name,
        "tasks": list(names),
        "planted_groups": None if family.groups is None else list(family.groups),
        "affinity": result.affinity,
        "groups": result.groups,
        "group_names": [[names[i] for i in g] for g in result.groups],
        "per_task_return": dict(zip(names, np.asarray(result.per_task_return).tolist(), strict=True)),
        # on the group policies' evaluation episodes: theta* (the meta-policy the estimate expands
        # around) and the multitask policy with the groups' per-task budget (what grouping gained;
        # theta* itself under --meta-policy full)
        "meta_per_task_return": dict(zip(names, np.asarray(result.meta_per_task_return).tolist(), strict=True)),
        "multitask_per_task_return": dict(
            zip(names, np.asarray(result.multitask_per_task_return).tolist(), strict=True)
        ),
        "subsets": int(result.subsets.shape[0]),
        "subset_masks": result.subsets.astype(int),
        "estimates": result.estimates,
        "timings": timings,
        "compiles": compiles_report(),
        "flops": flops,
        "solve": result.solve_info,
        "peak_rss_mb": peak_rss_mb(),
        "config": config.to_dict(),
        "seed": args.seed,
        "machine": machine(),
        "versions": versions_report(),
        "distributed": distributed_summary(),
    }
