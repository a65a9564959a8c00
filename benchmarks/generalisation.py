"""Groupings that hold where nobody tuned (issue 29): a development / test protocol over layouts
drawn at random (:func:`pgx_jax.families.random_layout`).

Layouts with generator seed < 1000 are development layouts, >= 1000 test layouts. Per layout
(and pipeline seed = the layout seed), for every candidate setting of the estimator:

- ``truth``: the full-training truth of every sampled subset (``validate --truth full``: each
  subset trained from scratch with the per-task budget ``compare`` gives a group of its size),
  computed once per layout and cached (it does not depend on theta*), clustered with k chosen by
  the method (``auto``) and at the planted k; its agreement with the planted split;
- ``est_<meta-policy>``: theta* meta-trained with that meta-policy (``early-F`` or ``full``), the
  estimate on the same subsets, scored by the ``rollout`` and the ``gain`` evaluator from the
  same solutions, each evaluator's affinity and groups at k = auto and at the planted k. Cached
  per layout and meta-policy, so a candidate added later costs only itself.

Rules that use no truth and no planted label, built from the cached estimates:

- ``<evaluator>@<meta-policy>``: one fixed theta*;
- ``<evaluator>@checkpoints``: the mean of the scale-normalised affinities of every early
  checkpoint (:func:`pgx_jax.affinity.combine_affinities`), clustered;
- ``<evaluator>@silhouette``: the checkpoint whose own affinity separates best (the largest
  silhouette of its k = auto grouping; a statistic of the estimate alone).

``--report`` chooses the rule by the development layouts alone (the largest mean AMI against
the full truth's groups, k = auto; ties by the 10th percentile) and writes that choice to
``choice.json`` before it reads any test layout; the test table then reports the chosen rule
(mean, 10th percentile or worst layout where fewer than 10, chance level) and, as evidence for
issue 29's part 3, every rule beside it. Results: ``benchmarks/results/generalisation/<family>_<
conditioning>_<budget>/layout<seed>/`` (one JSON per stage, written as it finishes) and
``benchmarks/results/generalisation_<family>_<conditioning>_<budget>.{json,md}``.

Usage:
  python benchmarks/generalisation.py --family pendulum-physics --layouts 0 1 2 3        # development
  python benchmarks/generalisation.py --family pendulum-physics --layouts 1000 1001 ...  # test
  python benchmarks/generalisation.py --family pendulum-physics --report
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import time

import jax
import numpy as np

from pgx_jax import affinity as affinity_mod
from pgx_jax import cluster as cluster_mod
from pgx_jax.checkpoint import source_commit, versions
from pgx_jax.evaluate import gain_scores
from pgx_jax.families import make_family, random_layout
from pgx_jax.pipeline import estimate_with_solutions, pipeline_config, start
from pgx_jax.results import machine, write_json, write_table_report
from pgx_jax.validate import ValidateConfig, grouping_agreement, run_truth, truth_key

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TEST_FROM = 1000  # generator seeds >= this are test layouts
META_POLICIES = ("early-0.02", "early-0.05", "early-0.1", "early-0.2", "full")
EARLY = tuple(p for p in META_POLICIES if p.startswith("early"))
EVALUATORS = ("rollout", "gain")


def _out(args, seed: int) -> str:
    return os.path.join(_root(args), f"layout{seed}")


def _root(args) -> str:
    return os.path.join(HERE, "generalisation", f"{args.family}_{args.conditioning}_{args.budget}")


def _config(args, family, meta_policy: str):
    return pipeline_config(
        args.budget, family, conditioning=args.conditioning, meta_policy=meta_policy, groups="auto", train_groups=False
    )


def _groups(u, k_planted: int) -> dict:
    return {
        "auto": cluster_mod.cluster_tasks(u, "auto"),
        "planted_k": cluster_mod.cluster_tasks(u, k_planted),
    }


def _load(path: str):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def truth_stage(args, seed: int, family, planted, k_planted: int) -> dict:
    path = os.path.join(_out(args, seed), "truth.json")
    if (done := _load(path)) is not None:
        return done
    config = _config(args, family, "full")
    key = jax.random.PRNGKey(seed)
    # the subsets and keys validate uses for this key (theta* is not needed: the full truth trains from scratch)
    subsets, _, _, _, (k_est, k_truth) = start(family, config, key, theta_star=(), subsets=None, say=print)
    t0 = time.perf_counter()
    true, info = run_truth(
        "full",
        ValidateConfig(),
        config,
        family,
        None,
        subsets,
        truth_key("full", k_truth),
        jax.random.split(k_est)[1],  # the estimate's evaluation key: the same start states
    )
    u = affinity_mod.affinity_matrix(true, subsets, config.affinity)
    groups = _groups(u, k_planted)
    report = {
        "layout_seed": seed,
        "subsets": subsets.astype(int),
        "true_scores": true,
        "true_scores_se": info["return_se"],
        "affinity": u,
        "groups": groups,
        "vs_planted": {k: grouping_agreement(g, planted, family.n_tasks) for k, g in groups.items()},
        "env_steps_per_task": info["env_steps_per_task"],
        "wall_s": time.perf_counter() - t0,
        "commit": source_commit(),
    }
    write_json(path, report)
    return _load(path)


def estimate_stage(args, seed: int, family, meta_policy: str, subsets, k_planted: int) -> dict:
    path = os.path.join(_out(args, seed), f"est_{meta_policy}.json")
    if (done := _load(path)) is not None:
        return done
    config = _config(args, family, meta_policy)
    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    given = np.asarray(subsets, bool)
    subsets, theta, _, timings, (k_est, _) = start(family, config, key, None, None, print)
    if not np.array_equal(subsets, given):
        raise RuntimeError("the estimate's subsets differ from the truth's for the same key")
    est = estimate_with_solutions(config, family, theta, subsets, k_est)
    scores = {"rollout": est.scores, "gain": np.asarray(gain_scores(est.features, est.betas, est.scales, subsets))}
    by = {}
    for name, f in scores.items():
        u = affinity_mod.affinity_matrix(f, subsets, config.affinity)
        by[name] = {"scores": f, "affinity": u, "groups": _groups(u, k_planted)}
    report = {
        "layout_seed": seed,
        "meta_policy": meta_policy,
        "by_evaluator": by,
        "timings": {**timings, **est.timings, "total_s": time.perf_counter() - t0},
        "solve": {k: est.solve_info[k] for k in ("unconverged", "refined")},
        "commit": source_commit(),
    }
    write_json(path, report)
    return _load(path)


def run_layout(args, seed: int) -> None:
    entries = random_layout(args.family, seed)
    out = _out(args, seed)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "tasks.json"), entries)
    family = make_family(args.family, entries)
    planted = cluster_mod.labels_to_groups(np.asarray(family.groups))
    k_planted = len(planted)
    t0 = time.perf_counter()
    truth = truth_stage(args, seed, family, planted, k_planted)
    ami = truth["vs_planted"]["auto"]["ami"]
    print(f"layout {seed}: truth vs planted AMI {ami:.2f} ({time.perf_counter() - t0:.0f} s)")
    for mp in args.meta_policies:
        t0 = time.perf_counter()
        estimate_stage(args, seed, family, mp, truth["subsets"], k_planted)
        print(f"layout {seed}: estimate at {mp} done ({time.perf_counter() - t0:.0f} s)", flush=True)


# --- the rules and the report -------------------------------------------------------------------


def _silhouette_of(u, groups) -> float:
    n = np.asarray(u).shape[0]
    return cluster_mod._silhouette(np.asarray(u), cluster_mod.groups_to_labels(groups, n))  # noqa: SLF001


def rule_groups(ests: dict, evaluator: str, rule: str, k: str, k_planted: int):
    """The groups a rule gives (k: 'auto' or 'planted_k'), from the cached estimates alone."""
    if rule in ests:
        return ests[rule]["by_evaluator"][evaluator]["groups"][k]
    early = [ests[p]["by_evaluator"][evaluator] for p in EARLY if p in ests]
    if len(early) < len(EARLY):
        return None
    if rule == "checkpoints":
        u = affinity_mod.combine_affinities([e["affinity"] for e in early])
        return cluster_mod.cluster_tasks(u, "auto" if k == "auto" else k_planted)
    if rule == "silhouette":
        best = max(early, key=lambda e: _silhouette_of(e["affinity"], e["groups"]["auto"]))
        return best["groups"][k]
    raise ValueError(rule)


RULES = (*META_POLICIES, "checkpoints", "silhouette")


def layout_rows(args) -> list[dict]:
    rows = []
    for d in sorted(glob.glob(os.path.join(_root(args), "layout*"))):
        seed = int(os.path.basename(d)[len("layout") :])
        truth = _load(os.path.join(d, "truth.json"))
        ests = {p: e for p in META_POLICIES if (e := _load(os.path.join(d, f"est_{p}.json"))) is not None}
        if truth is None or not ests:
            continue
        tasks = _load(os.path.join(d, "tasks.json"))
        n = len(tasks)
        planted = cluster_mod.labels_to_groups(np.asarray([t["group"] for t in tasks]))
        row = {
            "layout": seed,
            "split": "test" if seed >= TEST_FROM else "dev",
            "n": n,
            "planted_sizes": sorted(len(g) for g in planted),
            "truth_vs_planted_ami": truth["vs_planted"]["auto"]["ami"],
            "truth_k": len(truth["groups"]["auto"]),
            "truth_wall_s": truth["wall_s"],
            "rules": {},
        }
        for ev in EVALUATORS:
            for rule in RULES:
                for k in ("auto", "planted_k"):
                    g = rule_groups(ests, ev, rule, k, len(planted))
                    if g is not None:
                        a = grouping_agreement(g, truth["groups"][k], n)
                        row["rules"][f"{ev}@{rule}|{k}"] = {**a, "k": len(g), "groups": g}
        rows.append(row)
    return rows


def _spread(values) -> dict:
    v = np.asarray(values, float)
    low = float(np.percentile(v, 10)) if len(v) >= 10 else float(v.min())
    return {"mean": float(v.mean()), "low": low, "low_is": "p10" if len(v) >= 10 else "worst", "count": len(v)}


def choose(rows: list[dict], k: str = "auto") -> dict:
    """The rule with the largest mean AMI against the truth over the development layouts
    (ties: the larger 10th percentile / worst layout); only rules measured on every one."""
    dev = [r for r in rows if r["split"] == "dev"]
    if not dev:
        raise SystemExit("no development layout finished: run --layouts 0 1 2 ... first")
    names = [name for name in dev[0]["rules"] if name.endswith(f"|{k}") and all(name in r["rules"] for r in dev)]
    scored = {name: _spread([r["rules"][name]["ami"] for r in dev]) for name in names}
    best = max(names, key=lambda name: (round(scored[name]["mean"], 6), scored[name]["low"]))
    digest = hashlib.sha256(json.dumps([[r["layout"], r["rules"]] for r in dev], sort_keys=True).encode()).hexdigest()
    return {"rule": best, "dev_layouts": [r["layout"] for r in dev], "dev_scores": scored, "dev_sha256": digest}


def report(args) -> None:
    rows = layout_rows(args)
    stem = os.path.join(HERE, f"generalisation_{args.family}_{args.conditioning}_{args.budget}")
    choice_path = f"{stem}_choice.json"
    frozen = _load(choice_path)
    if frozen is None:  # written before any test layout is read
        frozen = {k: choose(rows, k) for k in ("auto", "planted_k")}
        write_json(choice_path, frozen)
    test = [r for r in rows if r["split"] == "test"]
    table = []
    for r in rows:
        chosen = r["rules"].get(frozen["auto"]["rule"], {})
        table.append(
            [
                r["split"],
                r["layout"],
                r["n"],
                "+".join(map(str, r["planted_sizes"])),
                f"{r['truth_vs_planted_ami']:.2f}",
            ]
            + [f"{chosen.get('ami', float('nan')):.2f}", f"{chosen.get('nmi', float('nan')):.2f}"]
            + [f"{chosen.get('nmi_chance', float('nan')):.2f}", chosen.get("k", "-")]
        )
    summary = {}
    for split, these in (("dev", [r for r in rows if r["split"] == "dev"]), ("test", test)):
        summary[split] = {}
        for name in sorted({n for r in these for n in r["rules"]}):
            vals = [r["rules"][name] for r in these if name in r["rules"]]
            summary[split][name] = {
                "ami": _spread([v["ami"] for v in vals]),
                "nmi": _spread([v["nmi"] for v in vals]),
                "nmi_chance": float(np.mean([v["nmi_chance"] for v in vals])),
            }
    out = {
        "family": args.family,
        "conditioning": args.conditioning,
        "budget": args.budget,
        "choice": frozen,
        "summary": summary,
        "layouts": rows,
        "machine": machine(),
        "versions": versions(),
    }
    header = [
        "split",
        "layout",
        "n",
        "planted sizes",
        "truth vs planted AMI",
        "chosen: AMI vs truth",
        "NMI",
        "NMI chance",
        "k",
    ]
    intro = _intro(args, frozen, summary)
    write_table_report(
        stem, out, f"Generalisation over drawn layouts: {args.family}, {args.conditioning}", intro, header, table
    )


def _intro(args, frozen, summary) -> str:
    lines = [
        f"Chosen on the development layouts {frozen['auto']['dev_layouts']} (k = auto): "
        f"**{frozen['auto']['rule']}**; at the planted k: {frozen['planted_k']['rule']}.",
        "",
        "| rule (k = auto) | dev AMI mean / low | test AMI mean / low | test NMI mean (chance) | test layouts |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(summary["dev"]):
        if not name.endswith("|auto"):
            continue
        d, t = summary["dev"][name], summary["test"].get(name)
        test = "-" if t is None else f"{t['ami']['mean']:.2f} / {t['ami']['low']:.2f} ({t['ami']['low_is']})"
        nmi = "-" if t is None else f"{t['nmi']['mean']:.2f} ({t['nmi_chance']:.2f})"
        count = 0 if t is None else t["ami"]["count"]
        lines.append(f"| {name[:-5]} | {d['ami']['mean']:.2f} / {d['ami']['low']:.2f} | {test} | {nmi} | {count} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="pendulum-physics")
    p.add_argument("--conditioning", default="none")
    p.add_argument("--budget", default="demo")
    p.add_argument("--layouts", type=int, nargs="*", default=[])
    p.add_argument("--meta-policies", nargs="*", default=list(META_POLICIES))
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    from pgx_jax.cli import _use_compilation_cache

    _use_compilation_cache()
    for seed in args.layouts:
        run_layout(args, seed)
    if args.report:
        report(args)


if __name__ == "__main__":
    main()
