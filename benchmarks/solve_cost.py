"""Issue-13 cost figures, measured side by side in one process per part.

1. ``solve``: FLOPs (:mod:`pgx_jax.runtime.flops`, loops at their trip counts; L-BFGS's line search at
   its measured trip count) and steady-state wall-clock per subset of the Newton and L-BFGS
   solves on the same features and subsets (reacher-goals, demo feature config, d = 400).
2. ``scale m``: the whole estimate (features, solves, rollout evaluation) for m sampled subsets,
   each m in its own process: wall-clock per stage, peak RSS, and the number of compiled
   solve and evaluation programs. The default 9-goal layout has only C(9, 4) = 126 distinct
   subsets, so the scale part runs reacher-goals on the 16-goal layout
   ``reacher_goals_16.json`` (C(16, 8) = 12870).

theta* is the fresh initialisation (costs do not depend on the parameters' values).
Results: ``results/solve_cost.json`` (each part saved as it finishes) and ``results/solve_cost.md``.

    python benchmarks/solve_cost.py                 # every part not yet done
    python benchmarks/solve_cost.py --part solve
    python benchmarks/solve_cost.py --part scale --m 10000
    python benchmarks/solve_cost.py --part solve \
        --theta benchmarks/results/measurement/reacher-goals_task_id_seed1/theta_star
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results", "solve_cost.json")
FAMILY = "reacher-goals"
SCALE_TASKS = os.path.join(HERE, "reacher_goals_16.json")  # enough distinct subsets for m = 10000
SCALES = (50, 200, 1000, 10000)


def _load() -> dict:
    return json.load(open(OUT)) if os.path.exists(OUT) else {"solve": None, "scale": {}}


def _save(d: dict) -> None:
    from pgx_jax.rl.checkpoint import versions
    from pgx_jax.runtime.results import machine, write_json

    d["machine"] = machine()
    d["versions"] = versions()  # the commit, whether the code was clean, and the diff's hash
    write_json(OUT, d)


def _setup(m: int | None, tasks_file: str | None = None, theta_path: str | None = None):
    import jax

    from pgx_jax.estimation.affinity import AffinityConfig
    from pgx_jax.experiments.config import pipeline_config
    from pgx_jax.families import make_family
    from pgx_jax.rl import checkpoint, networks

    family = make_family(FAMILY, tasks_file=tasks_file)
    config = pipeline_config("demo", family, affinity=AffinityConfig(subsets=m), train_groups=False)
    if theta_path is not None:  # a trained theta*: which subsets need refining depends on it
        theta, _, _ = checkpoint.load_policy(theta_path, family, config.ppo)
        return family, config, theta
    net = config.ppo.network
    theta = networks.init_agent(net, family.obs_size, family.action_size, jax.random.PRNGKey(0))
    return family, config, theta


def part_solve(
    m: int | None = None,
    ladder_subsets: int = 16,
    ladder=(10, 20, 50, 60, 70, 80, 100, 200, 500),
    theta_path: str | None = None,
) -> dict:
    """Newton and L-BFGS (its default 50 iterations) on every subset, then L-BFGS at each
    iteration count of ``ladder`` on the first ``ladder_subsets``: the comparison at equal
    convergence is against the fewest iterations whose largest gradient-norm ratio is at most
    Newton's. The per-task statistics (G_i, F_i, P's Gram matrix: once per feature set, shared
    by every solve whatever the solver) are computed and timed on their own; every per-subset
    figure excludes them."""
    import dataclasses

    import jax
    import numpy as np

    from pgx_jax.estimation.affinity import sample_subsets
    from pgx_jax.estimation.surrogate import data_hessians
    from pgx_jax.experiments.cost import solve_flops
    from pgx_jax.experiments.estimate import features_at, solve_all, task_stats_jitted
    from pgx_jax.runtime.flops import count_flops

    family, config, theta = _setup(m, theta_path=theta_path)
    masks = sample_subsets(0, family.n_tasks, config.affinity)
    feats = features_at(config.ppo, config.features, family, theta, jax.random.PRNGKey(1))
    kmax = int(masks.sum(1).max())
    stats_flops = count_flops(task_stats_jitted, feats).flops
    g_flops = count_flops(data_hessians, feats).flops  # G_i alone: only Newton reads it (L-BFGS: F_i, tr G_i)
    jax.block_until_ready(task_stats_jitted(feats))  # compile
    t0 = time.perf_counter()
    stats = jax.block_until_ready(task_stats_jitted(feats))
    stats_wall = time.perf_counter() - t0
    out = {
        "family": FAMILY,
        "subsets": int(masks.shape[0]),
        "dim": config.features.dim,
        "step": config.surrogate.step,
        "tol": config.surrogate.tol,
        "refine": config.surrogate.refine,
        "theta": theta_path or "fresh initialisation",
        "stats_flops": stats_flops,
        "g_flops": g_flops,
        "stats_wall_s": stats_wall,
        "by_solver": {},
    }
    betas = {}

    def measure(name, cfg, ms):
        solve_all(cfg, feats, ms, kmax=kmax, stats=stats)  # compile
        t0 = time.perf_counter()
        sol, info = solve_all(cfg, feats, ms, kmax=kmax, stats=stats)
        wall = time.perf_counter() - t0
        flops = solve_flops(cfg, feats, ms, kmax, info["refined"], info["linesearch_trips"]).flops - stats_flops
        s = int(ms.shape[0])
        betas[name] = sol.betas
        out["by_solver"][name] = {
            "solver": cfg.solver,
            "subsets": s,
            "iterations": cfg.iterations if cfg.solver == "lbfgs" else None,
            "wall_s_per_subset": wall / s,
            "flops_per_subset": flops / s,
            "refined": info["refined"],
            "unconverged": info["unconverged"],
            "grad_ratio_max": info["grad_ratio"]["max"],
            "grad_ratio_median": float(np.median(info["grad_ratio"]["per_subset"])),
            "linesearch_trips": info["linesearch_trips"],
        }
        print(name, out["by_solver"][name], flush=True)

    measure("newton", config.surrogate, masks)
    measure("lbfgs_50", dataclasses.replace(config.surrogate, solver="lbfgs", iterations=50), masks)
    sub = masks[:ladder_subsets]
    measure("newton_ladder", config.surrogate, sub)
    # the default tolerance (a gradient ratio of 0.05) against a tight one: how far from the
    # optimum the default's solutions are, as the cosine to the ladder's last (converged) rung
    tight = dataclasses.replace(config.surrogate, tol=1e-3, refine=200)
    measure("newton_tight_ladder", tight, sub)
    for it in ladder:
        measure(f"lbfgs_{it}_ladder", dataclasses.replace(config.surrogate, solver="lbfgs", iterations=it), sub)

    def cosine(a, b):
        a, b = np.asarray(a), np.asarray(b)
        c = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        return {"min": float(c.min()), "mean": float(c.mean())}

    runs = out["by_solver"]
    n, nl = runs["newton"], runs["newton_ladder"]
    out["cosine_newton_lbfgs_50"] = cosine(betas["newton"], betas["lbfgs_50"])
    reach = [it for it in ladder if runs[f"lbfgs_{it}_ladder"]["grad_ratio_max"] <= nl["grad_ratio_max"]]
    out["lbfgs_iterations_to_newton_ratio"] = reach[0] if reach else None
    if reach:
        r = runs[f"lbfgs_{reach[0]}_ladder"]
        out["equal_convergence"] = {
            "iterations": reach[0],
            "flops": r["flops_per_subset"] / nl["flops_per_subset"],
            "wall": r["wall_s_per_subset"] / nl["wall_s_per_subset"],
            "cosine": cosine(betas["newton_ladder"], betas[f"lbfgs_{reach[0]}_ladder"]),
        }
    out["at_default_iterations"] = {
        "flops": runs["lbfgs_50"]["flops_per_subset"] / n["flops_per_subset"],
        "wall": runs["lbfgs_50"]["wall_s_per_subset"] / n["wall_s_per_subset"],
    }
    out["cosine_newton_lbfgs_500"] = cosine(betas["newton_ladder"], betas[f"lbfgs_{ladder[-1]}_ladder"])
    out["cosine_newton_tight_lbfgs_500"] = cosine(betas["newton_tight_ladder"], betas[f"lbfgs_{ladder[-1]}_ladder"])
    out["cosine_newton_newton_tight"] = cosine(betas["newton_ladder"], betas["newton_tight_ladder"])
    # Newton with G_i's cost spread over the m subsets (L-BFGS does not need G_i)
    out["at_default_iterations_with_g"] = {
        "flops": runs["lbfgs_50"]["flops_per_subset"] / (n["flops_per_subset"] + g_flops / n["subsets"])
    }
    return out


def part_scale(m: int) -> dict:
    import jax
    import numpy as np

    from pgx_jax.estimation.affinity import sample_subsets
    from pgx_jax.experiments import estimate
    from pgx_jax.runtime.results import peak_rss_mb
    from pgx_jax.simulators import jitted

    family, config, theta = _setup(m, SCALE_TASKS)
    masks = sample_subsets(0, family.n_tasks, config.affinity)
    seen = []
    t0 = time.perf_counter()
    est = estimate.estimate_with_solutions(
        config, family, theta, masks, jax.random.PRNGKey(2), progress=lambda *a: seen.append(a)
    )
    wall = time.perf_counter() - t0
    for stage, done, total in seen:
        print(f"  {stage} {done}/{total}", flush=True)
    return {
        "subsets": int(masks.shape[0]),
        "tasks": family.n_tasks,
        "subset_size": int(masks.sum(1).max()),
        "wall_s_including_compile": wall,
        "timings": est.timings,
        "peak_rss_mb": peak_rss_mb(),
        "compiled": {"solve": estimate.solve_rows._cache_size(), "evaluate": jitted._rollout._cache_size()},
        "chunks": len(seen),
        "unconverged": est.solve_info["unconverged"],
        "refined": est.solve_info["refined"],
        "finite": bool(np.all(np.isfinite(est.scores[masks]))),
    }


def _solve_section(s: dict | None) -> list[str]:
    from pgx_jax.runtime.results import markdown_table

    if not s or "stats_flops" not in s:
        return []
    rows = [
        [
            k,
            v["subsets"],
            v["iterations"] or "-",
            v["flops_per_subset"],
            v["wall_s_per_subset"] * 1e3,
            v["refined"],
            v["unconverged"],
            v["grad_ratio_max"],
            v["grad_ratio_median"],
        ]
        for k, v in s["by_solver"].items()
    ]
    eq = s.get("equal_convergence")
    lines = [
        f"## Solve at theta* = {s.get('theta', 'fresh initialisation')}: {s['subsets']} subsets, "
        f"d = {s['dim']}, {s['step']} step (tol {s['tol']}, refine {s['refine']})",
        "",
        f"Per-task statistics (G_i, F_i, P's Gram matrix; once per feature set, whatever the solver): "
        f"{s['stats_flops']:.3g} FLOPs, {s['stats_wall_s']:.2f} s; not in the per-subset figures.",
        "",
        markdown_table(
            [
                "run",
                "subsets",
                "L-BFGS iterations",
                "FLOPs per subset",
                "ms per subset",
                "refined",
                "unconverged",
                "max gradient ratio",
                "median gradient ratio",
            ],
            rows,
        ),
        f"- L-BFGS at its default 50 iterations / Newton: {s['at_default_iterations']['flops']:.0f}x the FLOPs, "
        f"{s['at_default_iterations']['wall']:.1f}x the wall-clock per subset; cosine of the solutions "
        f"{s['cosine_newton_lbfgs_50']['mean']:.4f} mean, {s['cosine_newton_lbfgs_50']['min']:.4f} min.",
        (
            f"- At equal convergence (the fewest L-BFGS iterations whose largest gradient ratio is at most "
            f"Newton's on the same {s['by_solver']['newton_ladder']['subsets']} subsets: {eq['iterations']}): "
            f"{eq['flops']:.0f}x the FLOPs, {eq['wall']:.1f}x the wall-clock; cosine {eq['cosine']['mean']:.4f} "
            f"mean, {eq['cosine']['min']:.4f} min."
            if eq
            else "- No L-BFGS run of the ladder reached Newton's largest gradient ratio."
        ),
        f"- Newton vs L-BFGS at the ladder's last rung: cosine {s['cosine_newton_lbfgs_500']['mean']:.4f} mean, "
        f"{s['cosine_newton_lbfgs_500']['min']:.4f} min.",
    ]
    if "g_flops" in s:
        w = s["at_default_iterations_with_g"]["flops"]
        lines.append(
            f"- G_i alone (read only by Newton) is {s['g_flops']:.3g} FLOPs of the statistics; spread over the "
            f"{s['subsets']} subsets, L-BFGS at 50 iterations / Newton is {w:.0f}x the FLOPs."
        )
    if "cosine_newton_tight_lbfgs_500" in s:
        t, c = s["cosine_newton_tight_lbfgs_500"], s["cosine_newton_newton_tight"]
        lines.append(
            f"- The default tolerance (gradient ratio 0.05) against a tight one (1e-3, up to 200 refinement "
            f"steps): cosine {c['mean']:.4f} mean, {c['min']:.4f} min; the tight Newton against L-BFGS's last rung "
            f"{t['mean']:.4f} mean, {t['min']:.4f} min."
        )
    return lines + [""]


def table(d: dict) -> str:
    import jax

    from pgx_jax.runtime.results import markdown_table

    lines = [
        "# Surrogate solve and estimation cost (issue 13)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; jax {jax.__version__}. "
        f"{FAMILY}, demo features (d = 400, 2048 transitions per task), rollout evaluator (32 episodes per task).",
        "",
    ]
    for part in ("solve", "solve_trained"):
        lines += _solve_section(d.get(part))
    if d.get("scale"):
        rows = []
        for m, v in sorted(d["scale"].items(), key=lambda kv: int(kv[0])):
            t = v["timings"]
            rows.append(
                [
                    int(m),
                    t["features"],
                    t["solve"],
                    t["evaluate"],
                    v["wall_s_including_compile"],
                    v["peak_rss_mb"],
                    f"{v['compiled']['solve']} / {v['compiled']['evaluate']}",
                ]
            )
        lines += [
            "## Estimation for m subsets (one process each; reacher-goals on the 16-goal layout, subsets of 8)",
            "",
            markdown_table(
                [
                    "m",
                    "features s",
                    "solve s",
                    "evaluate s",
                    "total s (with compiles)",
                    "peak RSS MB",
                    "compiled solve / eval",
                ],
                rows,
            ),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["solve", "scale", "all"], default="all")
    p.add_argument("--m", type=int, default=None, help="one scale (run in this process)")
    p.add_argument("--table", action="store_true")
    p.add_argument(
        "--theta",
        default=None,
        help="a trained theta* checkpoint (e.g. results/measurement/reacher-goals_task_id_seed1/theta_star) for "
        "the solve part, saved beside the fresh-initialisation one",
    )
    from pgx_jax.runtime.results import parse_benchmark_args  # imports jax: after the module set up its flags

    args = parse_benchmark_args(p)
    d = _load()
    if not args.table:
        stale = not d.get("solve") or "stats_flops" not in d["solve"]  # before the statistics were split out
        if args.part in ("solve", "all") and args.theta is not None:
            d["solve_trained"] = part_solve(theta_path=args.theta)
            _save(d)
        elif args.part in ("solve", "all") and (args.part == "solve" or stale):
            d["solve"] = part_solve()
            _save(d)
        if args.part == "scale" and args.m is not None:
            d = _load()
            d["scale"][str(args.m)] = part_scale(args.m)
            _save(d)
        elif args.part in ("scale", "all"):
            for m in SCALES:
                if str(m) not in d["scale"]:  # a process each: peak RSS and compile counts are its own
                    subprocess.run([sys.executable, __file__, "--part", "scale", "--m", str(m)], check=True)
            d = _load()
    from pgx_jax.rl.checkpoint import versions
    from pgx_jax.runtime.results import machine, provenance, write_markdown

    text = table(d) + "\n" + provenance({"machine": machine(), "versions": versions()}) + "\n"
    write_markdown(os.path.join(HERE, "results", "solve_cost.md"), text)


if __name__ == "__main__":
    main()
