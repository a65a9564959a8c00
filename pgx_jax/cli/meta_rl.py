"""``pgx-jax meta-rl``: the paper's meta-RL protocol, seed by seed, resumable."""

from __future__ import annotations

import os
import sys

from pgx_jax.cli.args import entries_of
from pgx_jax.cli.outputs import stage_store
from pgx_jax.cli.prepare import read_true_groups, setup
from pgx_jax.cli.running import compiles_report, distributed_summary, versions_report


def cmd_meta_rl(args) -> int:
    from pgx_jax.experiments import meta_rl
    from pgx_jax.experiments.config import ValidateConfig
    from pgx_jax.families import draw_tasks, load_tasks_file, meta_rl_families
    from pgx_jax.rl.maml import maml_config
    from pgx_jax.runtime.results import markdown_table, write_json

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.test_tasks < 1:
        raise ValueError(f"--test-tasks must be >= 1, got {args.test_tasks}")
    if args.adapt_steps is not None and args.adapt_steps < 0:
        raise ValueError(f"--adapt-steps must be >= 0, got {args.adapt_steps}")
    if args.random_draws < 1:
        raise ValueError(f"--random-draws must be >= 1, got {args.random_draws}")
    if args.meta_iterations is not None and args.meta_iterations < 1:
        raise ValueError(f"--meta-iterations must be >= 1, got {args.meta_iterations}")
    if args.family not in meta_rl_families():
        raise ValueError(
            f"--family {args.family!r} declares no distribution of unseen tasks; meta-rl runs on {meta_rl_families()}"
        )
    if args.conditioning != "none":
        raise ValueError(f"--conditioning {args.conditioning!r}: meta-rl's policies are task-agnostic, use 'none'")
    groupings = meta_rl.check_groupings([g.strip() for g in args.groupings.split(",") if g.strip()])
    overrides = {"adapt_steps": args.adapt_steps, "meta_iterations": args.meta_iterations}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.second_order:
        overrides["second_order"] = True
    mconfig = maml_config(args.budget, **overrides)
    vconfig = ValidateConfig(truth=args.truth, finetune_fraction=args.finetune_fraction)
    sources = entries_of(args)
    if args.test_tasks_file is not None:
        tests = load_tasks_file(args.family, args.test_tasks_file)
    else:
        tests = draw_tasks(args.family, sources, args.test_tasks, args.test_seed)
    true_groups = None if args.true_groups is None else read_true_groups(args.true_groups, len(sources))
    family, config, out, _ = setup(args, "meta-rl")
    if family.n_tasks != len(sources):
        raise AssertionError("source tasks and the built family disagree")

    def progress(msg):
        if not args.no_progress:
            print(f"[meta-rl] {msg}", file=sys.stderr, flush=True)

    def save(report):  # after every seed: an interrupted run keeps the seeds it finished
        report["versions"] = versions_report()
        report["distributed"] = distributed_summary()
        report["compiles"] = compiles_report()
        report["test_tasks_source"] = args.test_tasks_file or f"drawn with --test-seed {args.test_seed}"
        write_json(os.path.join(out, "meta_rl.json"), report)
        meta_rl.plot(report, os.path.join(out, "meta_rl.png"))

    report = meta_rl.meta_rl(
        args.family,
        sources,
        tests,
        config,
        mconfig,
        list(range(args.seeds)),
        groupings=groupings,
        vconfig=vconfig,
        random_draws=args.random_draws,
        true_groups=true_groups,
        progress=progress,
        on_seed=save,
        store=stage_store(args, out, family),
        host_workers=args.host_workers,
    )
    header, rows = meta_rl.table(report)
    print(markdown_table(header, rows), end="")
    print(f"wrote {out}/meta_rl.json and meta_rl.png")
    return 0
