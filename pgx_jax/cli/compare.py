"""``pgx-jax compare``: the paper's comparison of groupings, seed by seed, resumable."""

from __future__ import annotations

import os
import sys

from pgx_jax.cli.args import entries_of
from pgx_jax.cli.outputs import stage_store
from pgx_jax.cli.prepare import setup
from pgx_jax.cli.running import compiles_report, distributed_summary, versions_report


def cmd_compare(args) -> int:

    from pgx_jax.experiments.compare import compare, comparison_table, equal_total_config, ill_conditioned_note
    from pgx_jax.experiments.config import ValidateConfig
    from pgx_jax.experiments.groupings import GROUPINGS
    from pgx_jax.families import make_family
    from pgx_jax.runtime.results import markdown_table, write_json

    vconfig = ValidateConfig(truth=args.truth, finetune_fraction=args.finetune_fraction)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.random_draws < 1:
        raise ValueError(f"--random-draws must be >= 1, got {args.random_draws}")
    groupings = [g.strip() for g in args.groupings.split(",") if g.strip()]
    unknown = sorted(set(groupings) - set(GROUPINGS))
    if unknown:
        raise ValueError(f"--groupings: unknown {unknown}; known: {list(GROUPINGS)}")

    def check(config):  # equal totals that leave the groups no training are refused before any work
        if args.equal_total:
            if "policygradex" not in groupings:
                raise ValueError(f"--equal-total shortens policygradex's groups; --groupings {groupings} lack it")
            equal_total_config(config, make_family(args.family, entries_of(args)))

    family, config, out, _ = setup(args, "compare", check=check)

    def progress(msg):
        if not args.no_progress:
            print(f"[compare] {msg}", file=sys.stderr, flush=True)

    seeds = list(range(args.seeds))
    report = compare(
        family,
        config,
        seeds,
        random_draws=args.random_draws,
        groupings=groupings,
        vconfig=vconfig,
        progress=progress,
        store=stage_store(args, out, family),
        equal_total=args.equal_total,
        save_policies=os.path.join(out, "policies") if args.save_policies else None,
        tasks=entries_of(args),
    )
    report["versions"] = versions_report()
    report["distributed"] = distributed_summary()
    report["compiles"] = compiles_report()
    write_json(os.path.join(out, "comparison.json"), report)
    header, rows = comparison_table(report)
    print(markdown_table(header, rows), end="")
    if note := ill_conditioned_note(report):
        print(f"note: {note}")
    if "improvement_equal_total" in report:
        imp = report["improvement_equal_total"]
        text = ", ".join(f"{name} {100 * v['relative']:+.1f}%" for name, v in imp.items() if v["relative"] is not None)
        print(f"policygradex_equal_total (the same total env steps per task) vs: {text}")
    saved = f" and {out}/policies/seed<s>/<grouping>/ (pgx_jax.load_groups reads each)" if args.save_policies else ""
    print(f"wrote {out}/comparison.json{saved}")
    return 0
