"""Command-line interface: ``pgx-jax train`` and ``pgx-jax families``.

Every argument is checked before anything is compiled; outputs are written atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "pgx_jax", "jax")


def _parser() -> argparse.ArgumentParser:
    from pgx_jax.config import BUDGETS
    from pgx_jax.tasks import DEFAULT_FAMILY, FAMILIES

    p = argparse.ArgumentParser(
        prog="pgx-jax", description="PolicyGradEx in JAX: which RL objectives to train together."
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one multitask policy on every task of a family (the meta-policy)")
    t.add_argument("--family", default=DEFAULT_FAMILY, help=f"one of {sorted(FAMILIES)} (default {DEFAULT_FAMILY})")
    t.add_argument("--tasks-file", default=None, help="JSON list of tasks (name, the family's field, optional group)")
    t.add_argument("--budget", default="demo", help=f"one of {list(BUDGETS)} (default demo)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--episodes", type=int, default=16, help="evaluation episodes per task (default 16)")
    t.add_argument("--out", default=None, help="output directory (default runs/train-FAMILY)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    sub.add_parser("families", help="list the task families")
    return p


def _fail(msg: str) -> int:
    print(f"pgx-jax: error: {msg}", file=sys.stderr)
    return 2


def _cmd_families() -> int:
    from pgx_jax.results import markdown_table
    from pgx_jax.tasks import FAMILIES

    rows = []
    for name, spec in FAMILIES.items():
        tasks = spec.default_tasks()
        groups = [t.get("group") for t in tasks]
        planted = "none" if groups[0] is None else f"{len(set(groups))} groups"
        rows.append([name, len(tasks), spec.env_name, spec.backend, spec.objective, planted])
    print(markdown_table(["family", "n", "brax env", "backend", "objective", "planted"], rows), end="")
    return 0


def _cmd_train(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from pgx_jax import checkpoint, ppo
    from pgx_jax.config import budget_config
    from pgx_jax.evaluate import evaluate_metrics, random_policy_metrics
    from pgx_jax.results import markdown_table, plot_learning_curves, write_json
    from pgx_jax.tasks import make_family

    # Validate everything before compiling.
    try:
        if args.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
        family = make_family(args.family, tasks_file=args.tasks_file)
        config = budget_config(args.budget, args.family, family.n_tasks)
        config.check_for(family.n_tasks, family.episode_length)
    except ValueError as e:
        return _fail(str(e))
    out = args.out or os.path.join("runs", f"train-{family.name}")
    os.makedirs(out, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", os.environ.get("PGX_JAX_CACHE", DEFAULT_CACHE))

    n = family.n_tasks
    steps_per_update = config.num_envs * config.unroll(family.episode_length)
    total_updates = config.num_updates(family.episode_length)
    print(
        f"family {family.name}: {n} tasks; budget {args.budget}: {total_updates * steps_per_update:,} env steps, "
        f"{config.num_envs} envs, {total_updates} updates",
        file=sys.stderr,
    )
    key_train, key_eval = jax.random.split(jax.random.PRNGKey(args.seed))
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total_updates * steps_per_update, unit="step", unit_scale=True, desc="train (compiling)")

    def on_chunk(done, total):
        if bar is not None:
            bar.set_description("train")
            bar.update(done * steps_per_update - bar.n)

    t0 = time.perf_counter()
    params, metrics = ppo.train_chunked(config, family, jnp.ones(n, bool), key_train, on_chunk=on_chunk)
    jax.block_until_ready(params)
    t_train = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    try:
        ppo.check_finite(metrics)
    except FloatingPointError as e:
        return _fail(str(e))

    t0 = time.perf_counter()
    ids = jnp.arange(n)
    eval_fn = jax.jit(lambda p, k: evaluate_metrics(p, family, ids, k, args.episodes, network=config.network))
    stats = jax.tree.map(np.asarray, eval_fn(params, key_eval))
    random_stats = jax.tree.map(
        np.asarray, jax.jit(lambda k: random_policy_metrics(family, ids, k, args.episodes))(key_eval)
    )
    returns, random_returns = stats["return"], random_stats["return"]
    metric = family.metric[0] if family.metric else None
    t_eval = time.perf_counter() - t0

    checkpoint.save_policy(os.path.join(out, "policy"), params, config, family, seed=args.seed)
    curve = np.asarray(metrics["episode_return"])
    steps = (np.arange(curve.shape[0]) + 1) * steps_per_update
    plot_learning_curves(
        os.path.join(out, "learning_curve.png"), steps, curve, family.task_names, f"{family.name} multitask PPO"
    )
    write_json(
        os.path.join(out, "train.json"),
        {
            "family": family.describe(),
            "tasks": list(family.task_names),
            "budget": args.budget,
            "seed": args.seed,
            "config": config.to_dict(),
            "env_steps": int(total_updates * steps_per_update),
            "per_task_return": dict(zip(family.task_names, returns.tolist(), strict=True)),
            "random_policy_return": dict(zip(family.task_names, random_returns.tolist(), strict=True)),
            "per_task_metric": None
            if metric is None
            else {
                "name": metric,
                "policy": dict(zip(family.task_names, stats[metric].tolist(), strict=True)),
                "random_policy": dict(zip(family.task_names, random_stats[metric].tolist(), strict=True)),
            },
            "learning_curve": {"env_steps": steps, "episode_return": curve},
            "timings": {"train_s_including_compile": t_train, "evaluate_s": t_eval},
            "versions": checkpoint.versions(),
        },
    )
    header = ["task", "return", "random policy"]
    rows = [[name, float(r), float(rr)] for name, r, rr in zip(family.task_names, returns, random_returns, strict=True)]
    if metric is not None:
        header += [metric, f"{metric} (random)"]
        rows = [row + [float(stats[metric][i]), float(random_stats[metric][i])] for i, row in enumerate(rows)]
    print(markdown_table(header, rows), end="")
    print(f"trained in {t_train:.1f} s (compile included); wrote {out}/train.json, policy/, learning_curve.png")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "families":
        return _cmd_families()
    return _cmd_train(args)


if __name__ == "__main__":
    sys.exit(main())
