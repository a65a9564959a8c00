"""``pgx-jax train`` (one multitask policy on every task) and ``pgx-jax families`` (the catalogue)."""

from __future__ import annotations

import os
import sys
import time

from pgx_jax.cli.outputs import make_out, out_path, scalar_log, write_layout
from pgx_jax.cli.prepare import family_of, network_with, set_ppo, with_num_envs
from pgx_jax.cli.running import (
    compiles_report,
    distributed_summary,
    train_all_tasks,
    use_compilation_cache,
    versions_report,
)


def cmd_families(args) -> int:
    del args
    from pgx_jax.families import family_catalog
    from pgx_jax.runtime.results import markdown_table

    cols = ["family", "n", "env", "backend", "varies", "objective", "planted", "extra"]
    rows = [[row[c] for c in cols] for row in family_catalog()]
    print(markdown_table([*cols[:-2], "planted grouping (default layout)", "needs"], rows), end="")
    return 0


def cmd_train(args) -> int:
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from pgx_jax.core.config import budget_config
    from pgx_jax.rl import checkpoint
    from pgx_jax.runtime.results import markdown_table, plot_learning_curves, write_json
    from pgx_jax.simulators import evaluate_metrics, random_policy_metrics, simulator

    if args.episodes < 1:  # everything is checked before compiling
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    family = family_of(args)
    config = with_num_envs(args, budget_config(args.budget, args.family, family.n_tasks), family.n_tasks)
    config = dataclasses.replace(config, network=network_with(args.conditioning, config.network))
    config = set_ppo(args, config)
    config.check_for(family.n_tasks, family.episode_length)
    out = make_out(out_path(args), args)
    write_layout(args, out)
    use_compilation_cache(args)
    steps_per_update = config.num_envs * config.unroll(family.episode_length)
    total_updates = config.num_updates(family.episode_length)
    print(
        f"family {family.name}: {family.n_tasks} tasks; budget {args.budget}: "
        f"{total_updates * steps_per_update:,} env steps, {config.num_envs} envs, {total_updates} updates",
        file=sys.stderr,
    )
    key_train, key_eval = jax.random.split(jax.random.PRNGKey(args.seed))
    t0 = time.perf_counter()
    with scalar_log(args, out) as log:
        params, metrics = train_all_tasks(
            config, family, key_train, show=not args.no_progress, desc="train", progress_fn=log.progress_fn("train")
        )
    timings = {"train_s_including_compile": time.perf_counter() - t0}
    t0 = time.perf_counter()
    ids, compile_ = jnp.arange(family.n_tasks), simulator(family).compile  # jax.jit where it can trace
    evaluate = compile_(lambda p, k: evaluate_metrics(p, family, ids, k, args.episodes, network=config.network))
    stats = jax.tree.map(np.asarray, evaluate(params, key_eval))
    random_stats = jax.tree.map(
        np.asarray, compile_(lambda k: random_policy_metrics(family, ids, k, args.episodes))(key_eval)
    )
    timings["evaluate_s"] = time.perf_counter() - t0
    checkpoint.save_policy(os.path.join(out, "policy"), params, config, family, seed=args.seed)
    curve = np.asarray(metrics["episode_return"])
    steps = (np.arange(curve.shape[0]) + 1) * steps_per_update
    plot_learning_curves(
        os.path.join(out, "learning_curve.png"), steps, curve, family.task_names, f"{family.name} multitask PPO"
    )
    with scalar_log(args, out) as log:
        log.scalars("return", {family.task_names[i]: float(stats["return"][i]) for i in range(family.n_tasks)})
    report = _train_report(args, family, config, stats, random_stats, timings)
    report["learning_curve"] = {"env_steps": steps, "episode_return": curve}
    write_json(os.path.join(out, "train.json"), report)
    print(markdown_table(*_train_table(family, stats, random_stats)), end="")
    seconds = timings["train_s_including_compile"]
    print(f"trained in {seconds:.1f} s (compile included); wrote {out}/train.json, policy/, learning_curve.png")
    return 0


def _train_report(args, family, config, stats, random_stats, timings) -> dict:
    """``train.json`` (the learning curve added by the caller)."""
    names, metric = family.task_names, family.metric[0] if family.metric else None
    per_task = lambda values: dict(zip(names, values.tolist(), strict=True))  # noqa: E731
    steps = config.num_updates(family.episode_length) * config.num_envs * config.unroll(family.episode_length)
    return {
        "family": family.describe(),
        "tasks": list(names),
        "budget": args.budget,
        "seed": args.seed,
        "config": config.to_dict(),
        "env_steps": int(steps),
        "per_task_return": per_task(stats["return"]),
        "random_policy_return": per_task(random_stats["return"]),
        "per_task_metric": None
        if metric is None
        else {"name": metric, "policy": per_task(stats[metric]), "random_policy": per_task(random_stats[metric])},
        "learning_curve": None,
        "timings": timings,
        "compiles": compiles_report(),
        "versions": versions_report(),
        "distributed": distributed_summary(),
    }


def _train_table(family, stats, random_stats) -> tuple[list, list]:
    """Header and rows of ``pgx-jax train``'s table: each task's return, the random policy's, the metric."""
    metric = family.metric[0] if family.metric else None
    header = ["task", "return", "random policy"]
    rows = [
        [name, float(r), float(rr)]
        for name, r, rr in zip(family.task_names, stats["return"], random_stats["return"], strict=True)
    ]
    if metric is not None:
        header += [metric, f"{metric} (random)"]
        rows = [row + [float(stats[metric][i]), float(random_stats[metric][i])] for i, row in enumerate(rows)]
    return header, rows
