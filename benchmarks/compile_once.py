"""Compile once (issue 31, item 3): the same command twice, each in a fresh process, sharing one
persistent compilation cache that is empty before the first.

Per run: the wall-clock of the process, and from the command's own result file the compile
seconds by stage and part (trace, lower, XLA compile or cache read), programs and cache hits
(:mod:`pgx_jax.runtime.compiles`). Targets: the second run spends under 20% of its wall-clock
compiling, and takes at most half the first's wall-clock.

Writes benchmarks/results/compile_once_<command>.json and .md.
Usage: python benchmarks/compile_once.py [--command run] [-- extra arguments of the command]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RESULT_FILE = {"run": "result.json", "validate": "validation.json", "compare": "comparison.json"}


def one_run(command: str, extra: list[str], cache: str, out: str) -> dict:
    env = dict(os.environ, PGX_JAX_CACHE=cache)
    argv = [sys.executable, "-m", "pgx_jax.cli", command, "--out", out, "--no-progress", *extra]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=env)
    wall = time.perf_counter() - t0
    with open(os.path.join(out, RESULT_FILE[command])) as f:
        result = json.load(f)
    return {"process_wall_s": wall, "compiles": result["compiles"], "timings": result.get("timings")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--command", default="run", choices=sorted(RESULT_FILE))
    p.add_argument("extra", nargs="*", help="arguments of the command (after --)")
    args = parse_benchmark_args(p)
    cache = tempfile.mkdtemp(prefix="pgx_compile_once_")
    runs = []
    for i in range(2):
        runs.append(one_run(args.command, args.extra, cache, tempfile.mkdtemp(prefix=f"pgx_compile_once_{i}_")))
        print(f"run {i + 1}: {runs[-1]['process_wall_s']:.1f} s", flush=True)
    cold, warm = runs
    report = {
        "command": ["pgx-jax", args.command, *args.extra],
        "runs": runs,
        "warm_over_cold_wall": warm["process_wall_s"] / cold["process_wall_s"],
        "warm_compile_share": warm["compiles"]["compile_share"],
        "machine": machine(),
        "versions": versions(),
    }
    stages = sorted({s for r in runs for s in r["compiles"]["by_stage"]})
    header = ["run", "process wall (s)", "command wall (s)", "compiling (s)", "share", "programs", "cache hits"]
    header += ["trace / lower / XLA (s)"] + [f"{s} (s)" for s in stages]
    rows = []
    for name, r in (("first (empty cache)", cold), ("second (warm)", warm)):
        c = r["compiles"]
        parts = " / ".join(f"{c['parts'][k]:.1f}" for k in ("trace_s", "lower_s", "backend_s"))
        rows.append(
            [name, f"{r['process_wall_s']:.1f}", f"{c['wall_s']:.1f}", f"{c['compile_s']:.1f}"]
            + [f"{100 * c['compile_share']:.0f}%", c["programs"], c["cache_hits"], parts]
            + [f"{c['by_stage'].get(s, 0.0):.1f}" for s in stages]
        )
    intro = (
        f"`{' '.join(report['command'])}` twice, each a fresh process, one persistent compilation cache (empty "
        f"before the first). The second took {100 * report['warm_over_cold_wall']:.0f}% of the first's wall-clock "
        f"(target <= 50%) and spent {100 * report['warm_compile_share']:.0f}% of its own compiling (target < 20%). "
        "Compiling = tracing to a jaxpr + lowering to MLIR + XLA's compile or the cache's read, from JAX's "
        "monitoring events, by the stage the command names (other: outside the named stages)."
    )
    stem = os.path.join(HERE, f"compile_once_{args.command}")
    write_table_report(stem, report, f"Compile once: pgx-jax {args.command}, cold and warm", intro, header, rows)
    print(f"wrote {stem}.json / .md")


if __name__ == "__main__":
    main()
