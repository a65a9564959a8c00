"""One process against two (issue 17): the estimate for m = 1000 subsets (``pgx-jax run``) and
the full-training truth for the default m (``pgx-jax validate --truth full``), each run with 1
and with 2 local processes (``--coordinator localhost:PORT``, one CPU device each, gloo), on
this machine.

Per command: the results side by side (max |difference| of the affinity and the true scores,
groups equal), wall-clock of the whole command and of each stage, and what the gathers cost
process 0 (calls, bytes, seconds including waiting for the slower process). Written to
benchmarks/results/distributed.json and .md after every run, so a stopped benchmark keeps what
it finished.

Usage: python benchmarks/distributed.py [--estimate-family reacher-goals] [--budget demo] [--family pendulum-physics]
[--truth-budget smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

from pgx_jax.rl.checkpoint import versions
from pgx_jax.runtime.results import machine, parse_benchmark_args, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(argv: list[str], out: str, processes: int) -> float:
    """``pgx-jax argv`` with ``processes`` local processes; its wall-clock (s)."""
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    base = [sys.executable, "-m", "pgx_jax.cli", *argv, "--out", out, "--no-progress"]
    if processes > 1:
        port = _port()
        cluster = lambda i: [
            "--coordinator",
            f"localhost:{port}",
            "--num-processes",
            str(processes),
            "--process-id",
            str(i),
        ]  # noqa: E731
        cmds = [base + cluster(i) for i in reversed(range(processes))]
    else:
        cmds = [base]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds
    ]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmds[0])} failed ({p.returncode}): {err[-2000:]}")
    return wall


def _get(d: dict, path: str):
    for k in path.split("."):
        d = d[k]
    return d


GOALS_16 = "reacher_goals_16.json"
COMMANDS = {
    # name: (argv, result file, arrays compared, groups)
    # 16 reacher goals (benchmarks/reacher_goals_16.json): C(16, 8) = 12870 distinct subsets
    "estimate": (
        ["run", "--subsets", "1000", "--groups", "2", "--tasks-file", os.path.join(ROOT, "benchmarks", GOALS_16)],
        "result.json",
        ["affinity"],
        "groups",
    ),
    "truth": (
        ["validate", "--truth", "full", "--groups", "2"],
        "validation.json",
        [
            "truths.full.by_evaluator.rollout.estimated_affinity",
            "truths.full.true_scores",
            "truths.full.true_affinity",
        ],
        "truths.full.by_evaluator.rollout.estimated_groups",
    ),
}


def measure(name: str, args) -> dict:
    argv, file, arrays, groups = COMMANDS[name]
    budget = args.budget if name == "estimate" else args.truth_budget
    family = args.estimate_family if name == "estimate" else args.family
    argv = [*argv, "--family", family, "--budget", budget]
    runs = {}
    for p in (1, 2):
        out = os.path.join(HERE, "distributed", f"{name}_p{p}")
        wall = launch(argv, out, p)
        with open(os.path.join(out, file)) as f:
            runs[p] = (wall, json.load(f))
    (w1, a), (w2, b) = runs[1], runs[2]
    diffs = {}
    for path in arrays:
        x, y = np.array(_get(a, path), float), np.array(_get(b, path), float)
        both = np.isfinite(x) & np.isfinite(y)
        assert (np.isfinite(x) == np.isfinite(y)).all(), path
        diffs[path] = float(np.max(np.abs(x[both] - y[both]))) if both.any() else 0.0
    return {
        "argv": argv,
        "wall_s": {"1": w1, "2": w2},
        "timings": {"1": a.get("timings"), "2": b.get("timings")},
        "max_abs_difference": diffs,
        "groups_equal": _get(a, groups) == _get(b, groups),
        "distributed": {"1": a.get("distributed"), "2": b.get("distributed")},
    }


def write(results: dict, args) -> None:
    rows = []
    for name, r in results.items():
        g = r["distributed"]["2"] or {}
        rows.append(
            [
                name,
                " ".join(r["argv"]),
                f"{r['wall_s']['1']:.0f}",
                f"{r['wall_s']['2']:.0f}",
                f"{r['wall_s']['1'] / r['wall_s']['2']:.2f}x",
                ", ".join(f"{k}: {v:.1e}" for k, v in r["max_abs_difference"].items()),
                "yes" if r["groups_equal"] else "NO",
                f"{g.get('gathers', 0)} / {g.get('gathered_bytes', 0) / 1e6:.2f} MB / {g.get('gather_s', 0):.1f} s",
            ]
        )
    header = ["part", "command", "1 process (s)", "2 processes (s)", "speedup", "max abs difference", "groups equal"]
    header.append("gathers on process 0: calls / bytes / s (incl. waiting)")
    intro = f"""
The same command with 1 and with 2 local processes (one CPU device each, gloo collectives) on a
{os.cpu_count()}-core machine; wall-clock of the whole command, compilation included (each process
compiles its own programs). Per-stage timings are in distributed.json."""
    report = {"results": results, "machine": machine(), "versions": versions()}
    write_table_report(os.path.join(HERE, "distributed"), report, "One process against two", intro, header, rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--family", default="pendulum-physics", help="family of the truth part")
    p.add_argument("--estimate-family", default="reacher-goals", help="family of the m = 1000 estimate (16 goals)")
    p.add_argument("--budget", default="demo", help="budget of the m = 1000 estimate")
    p.add_argument("--truth-budget", default="smoke", help="budget of the full-training truth")
    p.add_argument("--parts", nargs="+", default=list(COMMANDS))
    args = parse_benchmark_args(p)
    results = {}
    for name in args.parts:
        results[name] = measure(name, args)
        write(results, args)


if __name__ == "__main__":
    main()
