"""Groupings that hold where nobody tuned (issue 29): a development / test protocol over layouts
drawn at random (:func:`pgx_jax.families.random_layout`).

Layouts with generator seed < 1000 are development layouts, >= 1000 test layouts. Per layout
(pipeline seed = the layout seed):

- ``truth.json``: the full-training truth of every sampled subset (as ``validate --truth full``
  for this seed: the same subsets, training keys and evaluation start states), computed once
  (it does not depend on theta*). The reference grouping is the truth's own groups at the planted
  number of groups, as ``validate`` reports them (the truth is the reference, not the method
  under test; at k = auto the silhouette splits a clean two-block truth into pairs);
- ``est_<meta-policy>.json``: theta* meta-trained with that meta-policy (``early-F`` or ``full``),
  the estimate on the same subsets, scored by every rollout-free evaluator and ``rollout`` from
  the same solutions, each evaluator's affinity and groups (k by each k rule, and the planted k).

A candidate is an evaluator, a theta* rule and a k rule, none of which reads a truth or a
planted label. theta* rules: one fixed meta-policy; ``checkpoints`` (the mean of the early
checkpoints' scale-normalised affinities, :func:`pgx_jax.estimation.affinity.combine_affinities`; the
checkpoints are prefixes of one meta-training, so it costs the longest one); ``separation``
(the early checkpoint whose affinity separates best: the largest silhouette of its grouping);
``conflict`` and ``spread`` (over all five checkpoints, from the tasks' gradients alone: where
the cosines of their mean gradients are lowest on average, or most spread; :data:`GRADIENT_RULES`).
k rules: ``silhouette`` and ``eigengap`` (:func:`pgx_jax.estimation.cluster.cluster_tasks`).

``--choose`` freezes, from the declared development layouts alone (refused unless each has the
truth and every meta-policy's estimate), the candidate with the largest mean AMI against the
truth (ties: the larger worst layout / 10th percentile), with the commit, the candidates and a
digest of the development layouts' stage files. ``--report`` refuses without a frozen choice or when the
development layouts' stage files no longer match its digest, and reports the chosen candidate on the test
layouts (mean, 10th percentile or the worst layout where fewer than 10, chance level), every
candidate beside it, a table at the planted k, and each rule's env steps per task.

``--choice-from defaults`` reports with ``pgx-jax run``'s own settings for the conditioning,
fixed in the code before any layout of the family was drawn.

``--choice-from F`` reports (and runs ``--compare``) with the choice frozen on family F's
development layouts, carried unchanged to this family's test layouts: a family is tested without
any of its own layouts having been looked at, and only the chosen fixed theta*'s estimate is
computed per layout (``--meta-policies``).

Usage:
  python benchmarks/generalisation.py --family pendulum-physics --layouts 0 1 2 3        # development
  python benchmarks/generalisation.py --family pendulum-physics --choose --dev-layouts 0 1 2 3
  python benchmarks/generalisation.py --family pendulum-physics --layouts 1000 ... 1011  # test
  python benchmarks/generalisation.py --family pendulum-physics --report
  python benchmarks/generalisation.py --family cartpole-physics --layouts 1000 ... --meta-policies early-0.02
  python benchmarks/generalisation.py --family cartpole-physics --report --choice-from pendulum-physics
  python benchmarks/generalisation.py --family cheetah-vel --report --choice-from pendulum-physics --every-theta
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time

import jax
import numpy as np

from pgx_jax.estimation import affinity as affinity_mod
from pgx_jax.estimation import cluster as cluster_mod
from pgx_jax.estimation.evaluators import alignment_scores, gain_scores
from pgx_jax.experiments.agreement import grouping_agreement
from pgx_jax.experiments.config import ValidateConfig, pipeline_config
from pgx_jax.experiments.cost import estimation_env_steps
from pgx_jax.experiments.estimate import estimate_with_solutions
from pgx_jax.experiments.groupings import gradient_similarity
from pgx_jax.experiments.pipeline import start
from pgx_jax.experiments.truth import run_truth, truth_key
from pgx_jax.families import make_family, random_layout
from pgx_jax.rl.checkpoint import source_commit, versions
from pgx_jax.runtime.results import machine, markdown_table, parse_benchmark_args, write_json, write_table_report

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TEST_FROM = 1000  # generator seeds >= this are test layouts
META_POLICIES = ("early-0.02", "early-0.05", "early-0.1", "early-0.2", "full")
EARLY = tuple(p for p in META_POLICIES if p.startswith("early"))
EVALUATORS = ("rollout", "gain", "alignment")
#: theta* rules over every checkpoint (full included), read from the tasks' gradients alone: the
#: checkpoint where their mean gradients b_i conflict most (smallest mean off-diagonal cosine) or
#: spread most (largest standard deviation of the off-diagonal cosines)
GRADIENT_RULES = {
    "conflict": lambda cos, off: -float(np.mean(cos[off])),
    "spread": lambda cos, off: float(np.std(cos[off])),
}
THETA_RULES = (*META_POLICIES, "checkpoints", "separation", *GRADIENT_RULES)
K_RULES = cluster_mod.K_RULES
FORMAT = 3  # of the stage files: an estimate of another format is computed again


def _root(args) -> str:
    return os.path.join(HERE, "generalisation", f"{args.family}_{args.conditioning}_{args.budget}")


def _out(args, seed: int) -> str:
    return os.path.join(_root(args), f"layout{seed}")


def _config(args, family, meta_policy: str):
    return pipeline_config(
        args.budget, family, conditioning=args.conditioning, meta_policy=meta_policy, groups="auto", train_groups=False
    )


def _fingerprint(args, entries, meta_policy: str | None) -> str:
    """What decides a stage's numbers: the tasks, budget, conditioning and the config."""
    family = make_family(args.family, entries)
    config = _config(args, family, meta_policy or "full").to_dict()
    if meta_policy is None:  # the truth does not read theta*'s settings
        config.pop("meta_policy")
    blob = json.dumps({"tasks": entries, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _load(path: str):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def _fresh(path: str, fingerprint: str, legacy_ok: bool = False):
    """The stage file at ``path`` if it was made for ``fingerprint`` (a truth written before
    fingerprints, by this script's first version, is taken where ``legacy_ok``: its tasks file is
    checked against the generator by the caller), else None."""
    done = _load(path)
    if done is None:
        return None
    if done.get("fingerprint") == fingerprint or (legacy_ok and "fingerprint" not in done):
        return done
    return None


def _groups(u, k_planted: int) -> dict:
    out = {rule: cluster_mod.cluster_tasks(u, "auto", k_rule=rule) for rule in K_RULES}
    out["planted_k"] = cluster_mod.cluster_tasks(u, k_planted)
    return out


def truth_stage(args, seed: int, family, entries, k_planted: int, replicate: int = 0) -> dict:
    """The full truth (``replicate`` 0, ``truth.json``) or its replicate r > 0 (``truth_r<r>.json``):
    the same subsets and evaluation start states, training keys folded with r, as ``validate
    --replicates`` draws them. The replicates measure the truth's self-agreement: the ceiling of
    any estimate's agreement with it."""
    name = "truth.json" if replicate == 0 else f"truth_r{replicate}.json"
    path = os.path.join(_out(args, seed), name)
    fingerprint = _fingerprint(args, entries, None)
    if (done := _fresh(path, fingerprint, legacy_ok=replicate == 0)) is not None:
        return done
    config = _config(args, family, "full")
    key = jax.random.PRNGKey(seed)
    # the subsets and keys validate draws for this seed (theta* is not needed: the truth trains from scratch)
    subsets, _, _, _, keys = start(family, config, key, theta_star=(), subsets=None, say=print)
    t0 = time.perf_counter()
    eval_key = keys.evaluation  # the estimate's evaluation key: the same start states
    base = truth_key("full", keys.rest)
    train_key = base if replicate == 0 else jax.random.fold_in(base, replicate)
    true, info = run_truth("full", ValidateConfig(), config, family, None, subsets, train_key, eval_key)
    report = {
        "layout_seed": seed,
        "replicate": replicate,
        "subsets": subsets.astype(int),
        "true_scores": true,
        "true_scores_se": info["return_se"],
        "affinity": affinity_mod.affinity_matrix(true, subsets, config.affinity),
        "env_steps_per_task": info["env_steps_per_task"],
        "wall_s": time.perf_counter() - t0,
        "commit": source_commit(),
        "fingerprint": fingerprint,
    }
    write_json(path, report)
    return _load(path)


def estimate_stage(args, seed: int, family, entries, meta_policy: str, subsets, k_planted: int) -> dict:
    path = os.path.join(_out(args, seed), f"est_{meta_policy}.json")
    fingerprint = _fingerprint(args, entries, meta_policy)
    if (done := _fresh(path, fingerprint)) is not None and done.get("format") == FORMAT:
        return done
    config = _config(args, family, meta_policy)
    t0 = time.perf_counter()
    given = np.asarray(subsets, bool)
    subsets, theta, _, timings, keys = start(family, config, jax.random.PRNGKey(seed), None, None, print)
    if not np.array_equal(subsets, given):
        raise RuntimeError("the estimate's subsets differ from the truth's for the same key")
    est = estimate_with_solutions(config, family, theta, subsets, keys.estimate)
    scores = {
        "rollout": est.scores,
        "gain": np.asarray(gain_scores(est.features, est.betas, est.scales, subsets)),
        "alignment": np.asarray(alignment_scores(est.features, subsets)),
    }
    by = {}
    for name, f in scores.items():
        u = affinity_mod.affinity_matrix(f, subsets, config.affinity)
        by[name] = {"scores": f, "affinity": u, "groups": _groups(u, k_planted)}
    cosine = gradient_similarity(est.features)  # compare's baseline at the same theta*, from the same b_i
    baseline = {"affinity": cosine, "groups": _groups(cosine, k_planted)}
    spent = {k: float(v.mean()) for k, v in estimation_env_steps(config, family, subsets).items()}
    report = {
        "format": FORMAT,
        "layout_seed": seed,
        "meta_policy": meta_policy,
        "by_evaluator": by,
        "gradient_similarity": baseline,
        "env_steps_per_task": spent,  # the rollout evaluator's; the others roll nothing out
        "timings": {**timings, **est.timings, "total_s": time.perf_counter() - t0},
        "solve": {k: est.solve_info[k] for k in ("unconverged", "refined")},
        "commit": source_commit(),
        "fingerprint": fingerprint,
    }
    write_json(path, report)
    return _load(path)


def run_layout(args, seed: int) -> None:
    entries = random_layout(args.family, seed)
    out = _out(args, seed)
    os.makedirs(out, exist_ok=True)
    on_disk = _load(os.path.join(out, "tasks.json"))
    if on_disk is not None and on_disk != entries:  # a cached truth of other tasks must not be reused
        raise RuntimeError(f"{out}/tasks.json is not the generator's layout {seed}; move that directory away")
    write_json(os.path.join(out, "tasks.json"), entries)
    family = make_family(args.family, entries)
    k_planted = len(set(family.groups))
    t0 = time.perf_counter()
    truth = truth_stage(args, seed, family, entries, k_planted)
    print(f"layout {seed}: truth done ({time.perf_counter() - t0:.0f} s)", flush=True)
    for r in range(1, args.replicates):
        t0 = time.perf_counter()
        truth_stage(args, seed, family, entries, k_planted, replicate=r)
        print(f"layout {seed}: truth replicate {r} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    for mp in args.meta_policies:
        t0 = time.perf_counter()
        estimate_stage(args, seed, family, entries, mp, truth["subsets"], k_planted)
        print(f"layout {seed}: estimate at {mp} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    # every compiled program holds memory mappings until JAX drops it: a process that ran a dozen
    # layouts (new shapes each) reached the kernel's limit and LLVM aborted (layout 1004, first run)
    jax.clear_caches()


# --- candidates, the frozen choice and the report ----------------------------------------------


def candidate_groups(ests: dict, evaluator: str, theta_rule: str, k: str, k_planted: int):
    """The groups a candidate gives (``k``: a k rule or ``planted_k``), from the estimates alone."""
    if theta_rule in ests:
        return ests[theta_rule]["by_evaluator"][evaluator]["groups"][k]
    if theta_rule in GRADIENT_RULES:
        return ests[gradient_checkpoint(ests, theta_rule)]["by_evaluator"][evaluator]["groups"][k]
    early = [ests[p]["by_evaluator"][evaluator] for p in EARLY if p in ests]
    if len(early) < len(EARLY):
        return None
    if theta_rule == "checkpoints":
        u = affinity_mod.combine_affinities([e["affinity"] for e in early])
        return cluster_mod.cluster_tasks(
            u, k_planted if k == "planted_k" else "auto", k_rule="silhouette" if k == "planted_k" else k
        )
    if theta_rule == "separation":
        n = len(early[0]["affinity"])

        def separation(e):
            labels = cluster_mod.groups_to_labels(e["groups"]["silhouette"], n)
            return cluster_mod.silhouette(np.asarray(e["affinity"]), labels)

        return max(early, key=separation)["groups"][k]
    raise ValueError(f"unknown theta* rule {theta_rule!r}; known: {list(THETA_RULES)}")


def gradient_checkpoint(ests: dict, rule: str) -> str:
    """The meta-policy a gradient rule picks: the largest statistic of the tasks' gradient cosines
    (compare's gradient-similarity affinity at that theta*); ties to the earlier checkpoint."""

    def score(p):
        cos = np.asarray(ests[p]["gradient_similarity"]["affinity"], float)
        return GRADIENT_RULES[rule](cos, ~np.eye(len(cos), dtype=bool))

    return max(META_POLICIES, key=score)


def candidate_cost(ests: dict, evaluator: str, theta_rule: str) -> float | None:
    """Env steps per task the candidate's estimate consumed (meta-training, features, gradient
    sample, and the evaluation's rollouts for ``rollout``). A rule over checkpoints is charged
    every checkpoint's (for a gradient rule an upper bound: it needs every checkpoint's gradient
    sample but only the chosen one's features and evaluation)."""
    evaluation = (lambda e: e["evaluate"]) if evaluator == "rollout" else (lambda e: 0.0)
    if theta_rule in ests:
        e = ests[theta_rule]["env_steps_per_task"]
        return e["meta_train"] + e["features"] + e["gradient_sample"] + evaluation(e)
    points = META_POLICIES if theta_rule in GRADIENT_RULES else EARLY
    if any(p not in ests for p in points):
        return None
    es = [ests[p]["env_steps_per_task"] for p in points]
    each = sum(e["features"] + e["gradient_sample"] + evaluation(e) for e in es)
    return max(e["meta_train"] for e in es) + each  # the checkpoints of one meta-training


def _layout_dirs(args) -> list[tuple[int, str]]:
    root = _root(args)
    if not os.path.isdir(root):
        return []
    found = [
        (int(m.group(1)), os.path.join(root, d)) for d in os.listdir(root) if (m := re.fullmatch(r"layout(\d+)", d))
    ]
    return sorted(found)


def layout_row(args, seed: int, d: str, policies=META_POLICIES) -> dict | None:
    """One layout's agreement of every candidate with the truth; None until the truth and the
    estimate of every meta-policy in ``policies`` are there. The candidates are those the
    estimates of ``policies`` make (the combined theta* rules only where every early one is)."""
    truth = _load(os.path.join(d, "truth.json"))
    ests = {p: _load(os.path.join(d, f"est_{p}.json")) for p in policies}
    if truth is None or any(e is None or e.get("format") != FORMAT for e in ests.values()):
        return None
    tasks = _load(os.path.join(d, "tasks.json"))
    n = len(tasks)
    planted = cluster_mod.labels_to_groups(np.asarray([t["group"] for t in tasks]))
    u_true = np.asarray(truth["affinity"])
    reference = cluster_mod.cluster_tasks(u_true, len(planted))
    row = {
        "layout": seed,
        "split": "test" if seed >= TEST_FROM else "dev",
        "n": n,
        "planted_sizes": sorted(len(g) for g in planted),
        "truth_groups": reference,
        "truth_vs_planted": grouping_agreement(reference, planted, n),
        "truth_k_by_rule": {r: len(cluster_mod.cluster_tasks(u_true, "auto", k_rule=r)) for r in K_RULES},
        "truth_wall_s": truth["wall_s"],
        "candidates": {},
    }
    # which code made this row's stage files (a stage file is reused across commits)
    stage_files = [truth, *ests.values()]
    row["stage_commits"] = sorted({str(f.get("commit") or "unknown") for f in stage_files})
    # the truth against itself: each replicate's groups at the planted k against the reference,
    # and the pooled truth (the replicates' mean f(S, i)), a less noisy reference
    replicas = [r for i in range(1, 10) if (r := _load(os.path.join(d, f"truth_r{i}.json"))) is not None]
    pooled = None
    if replicas:
        cfg = _config(args, make_family(args.family, tasks), "full").affinity
        subsets = np.asarray(truth["subsets"], bool)
        reps = [cluster_mod.cluster_tasks(np.asarray(r["affinity"]), len(planted)) for r in replicas]
        mean_f = np.mean([np.asarray(t["true_scores"], float) for t in (truth, *replicas)], axis=0)
        pooled = cluster_mod.cluster_tasks(affinity_mod.affinity_matrix(mean_f, subsets, cfg), len(planted))
        row["truth_replicates"] = [
            {"groups": g, **grouping_agreement(g, reference, n), "vs_planted": grouping_agreement(g, planted, n)}
            for g in reps
        ]
        row["truth_self_ami"] = float(np.mean([e["ami"] for e in row["truth_replicates"]]))
        row["pooled_truth"] = {
            "groups": pooled,
            "replicates": 1 + len(replicas),
            "vs_planted": grouping_agreement(pooled, planted, n),
            "vs_reference": grouping_agreement(pooled, reference, n),
        }
    row["baseline"] = {}  # compare's gradient-similarity grouping at each fixed theta*: not a candidate
    for p in policies:
        for k in (*K_RULES, "planted_k"):
            g = ests[p]["gradient_similarity"]["groups"][k]
            row["baseline"][f"gradient_similarity@{p}|{k}"] = {**grouping_agreement(g, reference, n), "k": len(g)}
    points = lambda r: META_POLICIES if r in GRADIENT_RULES else EARLY  # noqa: E731
    theta_rules = [
        r for r in THETA_RULES if r in policies or (r not in META_POLICIES and set(points(r)) <= set(policies))
    ]
    for ev in EVALUATORS:
        for theta_rule in theta_rules:
            cost = candidate_cost(ests, ev, theta_rule)
            for k in (*K_RULES, "planted_k"):
                g = candidate_groups(ests, ev, theta_rule, k, len(planted))
                a = grouping_agreement(g, reference, n)
                if pooled is not None:
                    a["ami_vs_pooled"] = grouping_agreement(g, pooled, n, draws=0)["ami"]
                    a["ami_vs_planted"] = grouping_agreement(g, planted, n, draws=0)["ami"]
                row["candidates"][f"{ev}@{theta_rule}|{k}"] = {
                    **a,
                    "k": len(g),
                    "groups": g,
                    "env_steps_per_task": cost,
                }
    return row


def _spread(values) -> dict:
    v = np.asarray(values, float)
    low = float(np.percentile(v, 10)) if len(v) >= 10 else float(v.min())
    return {"mean": float(v.mean()), "low": low, "low_is": "p10" if len(v) >= 10 else "worst", "count": len(v)}


def _digest(args, seeds) -> str:
    """sha256 over the stage files (tasks, truth, every estimate) of these layouts, byte for byte."""
    h = hashlib.sha256()
    for seed in sorted(seeds):
        for name in ("tasks.json", "truth.json", *(f"est_{p}.json" for p in META_POLICIES)):
            with open(os.path.join(_out(args, seed), name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def choose(args) -> None:
    if any(s >= TEST_FROM for s in args.dev_layouts) or not args.dev_layouts:
        raise SystemExit(f"--dev-layouts must be generator seeds below {TEST_FROM}, got {args.dev_layouts}")
    path = _choice_path(args)
    if os.path.exists(path):
        raise SystemExit(f"{path} exists: a choice is frozen once (move it away to choose again, and say why)")
    dirs = dict(_layout_dirs(args))
    rows = [layout_row(args, s, dirs[s]) if s in dirs else None for s in args.dev_layouts]
    missing = [s for s, r in zip(args.dev_layouts, rows, strict=True) if r is None]
    if missing:
        raise SystemExit(f"development layouts {missing} lack the truth or an estimate of {list(META_POLICIES)}")
    frozen = {}
    for table, ks in (("main", K_RULES), ("planted_k", ("planted_k",))):
        names = [c for c in rows[0]["candidates"] if c.split("|")[1] in ks]
        scored = {c: _spread([r["candidates"][c]["ami"] for r in rows]) for c in names}
        best = max(names, key=lambda c: (round(scored[c]["mean"], 6), scored[c]["low"]))
        frozen[table] = {"candidate": best, "dev_scores": scored}
    frozen.update(
        dev_layouts=list(args.dev_layouts),
        dev_sha256=_digest(args, args.dev_layouts),
        commit=source_commit(),
        evaluators=list(EVALUATORS),
        theta_rules=list(THETA_RULES),
        k_rules=list(K_RULES),
        criterion="largest mean AMI against the truth's groups at the planted k; ties: larger low",
    )
    write_json(path, frozen)
    print(f"frozen: {frozen['main']['candidate']} (main), {frozen['planted_k']['candidate']} (planted k) -> {path}")


def _choice_path(args) -> str:
    return os.path.join(HERE, f"generalisation_{args.family}_{args.conditioning}_{args.budget}_choice.json")


def _frozen(args) -> tuple[dict, tuple[str, ...]]:
    """The frozen choice that ``--report`` and ``--compare`` use, and the meta-policies whose
    estimates its candidates need per layout.

    The family's own choice, or with ``--choice-from F`` the choice frozen on F's development
    layouts (F's stage files checked against its digest), carried unchanged to this family's
    test layouts: no layout of this family was looked at to choose it. Such a choice must be
    made of fixed theta* rules, so only their estimates are needed."""
    if args.choice_from == DEFAULTS:
        return _defaults_choice(args)
    source = args if args.choice_from is None else argparse.Namespace(**{**vars(args), "family": args.choice_from})
    frozen = _load(_choice_path(source))
    if frozen is None:
        raise SystemExit(f"no frozen choice for {source.family}: run --choose on its development layouts first")
    if _digest(source, frozen["dev_layouts"]) != frozen["dev_sha256"]:
        raise SystemExit("the development rows differ from those the choice was made on; choose again, and say why")
    if args.choice_from is None:
        return frozen, META_POLICIES
    needed = {frozen[t]["candidate"].split("@")[1].split("|")[0] for t in ("main", "planted_k")}
    if not needed <= set(META_POLICIES):
        raise SystemExit(f"--choice-from needs candidates of a fixed theta* ({list(META_POLICIES)}), got {needed}")
    return frozen, tuple(p for p in META_POLICIES if p in needed)


#: ``--choice-from defaults``: the settings ``pgx-jax run --family F --conditioning C`` uses
DEFAULTS = "defaults"


def _defaults_choice(args) -> tuple[dict, tuple[str, ...]]:
    """The choice ``pgx-jax run`` makes with no estimator option for this conditioning: its
    evaluator and k rule (:data:`pgx_jax.cli.args.RUN_DEFAULTS`) at the conditioning's default theta*
    (:data:`pgx_jax.experiments.config.DEFAULT_META_POLICY`). Fixed in the code before any layout of this
    family was drawn, so every layout of it is a test layout."""
    from pgx_jax.cli.args import RUN_DEFAULTS
    from pgx_jax.experiments.config import DEFAULT_META_POLICY

    theta = DEFAULT_META_POLICY[args.conditioning]
    stem = f"{RUN_DEFAULTS['evaluator']}@{theta}|"
    frozen = {
        "main": {"candidate": stem + RUN_DEFAULTS["k_rule"]},
        "planted_k": {"candidate": stem + "planted_k"},
        "dev_layouts": [],
        "commit": source_commit(),
        "source": f"The settings of pgx-jax run with --conditioning {args.conditioning}",
    }
    return frozen, (theta,)


def report(args) -> None:
    frozen, policies = _frozen(args)
    policies = META_POLICIES if args.every_theta else policies
    rows = [r for s, d in _layout_dirs(args) if (r := layout_row(args, s, d, policies)) is not None]
    # with --choice-from, this family has no development layouts: its layouts < 1000 are left out
    rows = [r for r in rows if args.choice_from is None or r["split"] == "test"]
    dev = [r for r in rows if args.choice_from is None and r["layout"] in frozen["dev_layouts"]]
    test = [r for r in rows if r["split"] == "test"]
    summary = {
        split: {
            c: {
                "ami": _spread([r["candidates"][c]["ami"] for r in these]),
                "nmi": _spread([r["candidates"][c]["nmi"] for r in these]),
                "nmi_chance": float(np.mean([r["candidates"][c]["nmi_chance"] for r in these])),
                "env_steps_per_task": float(np.mean([r["candidates"][c]["env_steps_per_task"] for r in these])),
            }
            for c in these[0]["candidates"]
        }
        for split, these in (("dev", dev), ("test", test))
        if these
    }
    summary["baseline"] = {
        split: {c: _spread([r["baseline"][c]["ami"] for r in these]) for c in these[0]["baseline"]}
        for split, these in (("dev", dev), ("test", test))
        if these
    }
    main, planted_k = frozen["main"]["candidate"], frozen["planted_k"]["candidate"]
    summary["self_agreement"] = _self_agreement(rows, main)
    header = ["split", "layout", "n", "planted sizes", "truth vs planted AMI", "truth k (sil / eig)"]
    header += ["chosen: k", "AMI", "NMI (chance)", "planted k: AMI"]
    table = [
        [r["split"], r["layout"], r["n"], "+".join(map(str, r["planted_sizes"])), f"{r['truth_vs_planted']['ami']:.2f}"]
        + [" / ".join(str(r["truth_k_by_rule"][k]) for k in K_RULES), r["candidates"][main]["k"]]
        + [f"{r['candidates'][main]['ami']:.2f}"]
        + [f"{r['candidates'][main]['nmi']:.2f} ({r['candidates'][main]['nmi_chance']:.2f})"]
        + [f"{r['candidates'][planted_k]['ami']:.2f}"]
        for r in rows
    ]
    out = {
        "family": args.family,
        "conditioning": args.conditioning,
        "budget": args.budget,
        "choice": frozen,
        "choice_from": args.choice_from or args.family,
        "summary": summary,
        "layouts": rows,
        "compare": compare_rows(args),
        "machine": machine(),
        "versions": versions(),
    }
    stem = os.path.join(HERE, f"generalisation_{args.family}_{args.conditioning}_{args.budget}")
    if args.choice_from:  # beside the family's own choice's report, not over it
        stem += f"_choice-from-{args.choice_from}" + ("_every-theta" if args.every_theta else "")
    title = f"Generalisation over drawn layouts: {args.family}, conditioning {args.conditioning}, {args.budget}"
    commits = sorted({c for r in rows for c in r["stage_commits"]})
    out["stage_commits"] = commits
    flagged = [c for c in commits if c.endswith("-dirty") or c == "unknown"]
    extra = _self_agreement_text(summary["self_agreement"], main) + (
        f"\n\nThe layouts' stage files were made by {', '.join(commits)}"
        + (f" ({', '.join(flagged)}: uncommitted or unrecorded code)." if flagged else ".")
    )
    intro = _intro(frozen, summary, out["compare"], extra, source=args.choice_from or args.family)
    if args.every_theta:
        intro = (
            "Every candidate at every theta*, read after the fact on these test layouts: a diagnosis of where "
            "the signal is, not a choice (the carried choice is the one in bold).\n\n" + intro
        )
    write_table_report(stem, out, title, intro, header, table)


def _self_agreement(rows, main: str) -> dict:
    """Per layout with truth replicates: the truth's self-agreement (AMI of each replicate's
    groups with the reference, at the planted k), the pooled truth against the planted split and
    the reference, and the chosen candidate against the reference, the pooled truth and the
    planted split; the spread of each over the test layouts."""
    per = [
        {
            "layout": r["layout"],
            "split": r["split"],
            "planted_sizes": r["planted_sizes"],
            "truth_vs_planted": r["truth_vs_planted"]["ami"],
            "truth_self_ami": r["truth_self_ami"],
            "pooled_vs_planted": r["pooled_truth"]["vs_planted"]["ami"],
            "pooled_vs_reference": r["pooled_truth"]["vs_reference"]["ami"],
            "chosen_vs_reference": r["candidates"][main]["ami"],
            "chosen_vs_pooled": r["candidates"][main]["ami_vs_pooled"],
            "chosen_vs_planted": r["candidates"][main]["ami_vs_planted"],
            "replicates": r["pooled_truth"]["replicates"],
        }
        for r in rows
        if "pooled_truth" in r
    ]
    test = [e for e in per if e["split"] == "test"]
    keys = [k for k in per[0] if k not in ("layout", "split", "planted_sizes", "replicates")] if per else []
    return {"layouts": per, "test": {k: _spread([e[k] for e in test]) for k in keys} if test else {}}


def _self_agreement_text(sa: dict, main: str) -> str:
    if not sa["layouts"]:
        return ""
    header = ["layout", "planted sizes", "truth vs planted", "truth vs its replicate", "pooled truth vs planted"]
    header += ["chosen vs truth", "chosen vs pooled truth", "chosen vs planted"]
    f = lambda x: f"{x:.2f}"  # noqa: E731
    keys = ("truth_vs_planted", "truth_self_ami", "pooled_vs_planted", "chosen_vs_reference", "chosen_vs_pooled")
    keys += ("chosen_vs_planted",)
    table = [[e["layout"], "+".join(map(str, e["planted_sizes"]))] + [f(e[k]) for k in keys] for e in sa["layouts"]]
    if sa["test"]:
        table.append(["test mean", ""] + [f(sa["test"][k]["mean"]) for k in keys])
        table.append([f"test {sa['test'][keys[0]]['low_is']}", ""] + [f(sa["test"][k]["low"]) for k in keys])
    return (
        f"\n\nThe truth against itself (AMI; a replicate trains the same subsets with independent keys and "
        f"the same evaluation start states; the pooled truth clusters the replicates' mean f(S, i); "
        f"chosen = {main}):\n\n" + markdown_table(header, table)
    )


def _compare_text(rows) -> str:
    if not rows:
        return ""
    pct = lambda x: "-" if x is None else f"{100 * x:+.1f}%"  # noqa: E731
    header = ["test layout", "truth vs multitask", "policygradex / truth", "vs multitask", "vs random"]
    header += ["vs gradient similarity", "equal total: vs multitask", "vs random"]
    table = [
        [r["layout"], pct(r["truth_over_multitask"]), f"{r['policygradex_over_truth']:.3f}"]
        + [pct(r["improvement_return"].get(k)) for k in ("multitask", "random", "gradient_similarity")]
        + [pct(r["improvement_equal_total"].get(k)) for k in ("multitask", "random")]
        for r in rows
    ]
    intro = "\n`compare` on the test layouts (mean return, one seed each; policygradex's improvement):\n\n"
    return intro + markdown_table(header, table)


def _intro(frozen, summary, compare=(), extra: str = "", *, source: str) -> str:
    if frozen.get("source"):  # settings in the code, not a choice made by this script
        when = (
            f"{frozen['source']}, fixed in the code before any layout of this family was drawn "
            f"(read at {frozen['commit']})"
        )
    else:
        when = (
            f"Frozen on {source}'s development layouts {frozen['dev_layouts']} at commit {frozen['commit']} "
            "before any test layout was read"
        )
    text = (
        f"{when}: **{frozen['main']['candidate']}** (k by the method), "
        f"**{frozen['planted_k']['candidate']}** (k = planted). AMI / NMI against the full truth's groups at the "
        "planted k; low = 10th percentile (worst layout where fewer than 10). Every candidate:\n\n"
    )
    header = ["candidate", "dev AMI mean / low", "test AMI mean / low", "test NMI mean (chance)", "test layouts"]
    header += ["env steps per task"]
    rows = []
    first = summary.get("dev") or summary["test"]  # no dev rows where the choice came from another family
    for c in sorted(first, key=lambda c: -first[c]["ami"]["mean"]):
        d, t = summary.get("dev", {}).get(c), summary.get("test", {}).get(c)
        rows.append(
            [c, "-" if d is None else f"{d['ami']['mean']:.2f} / {d['ami']['low']:.2f}"]
            + (
                ["-", "-", 0]
                if t is None
                else [f"{t['ami']['mean']:.2f} / {t['ami']['low']:.2f} ({t['ami']['low_is']})"]
            )
            + ([] if t is None else [f"{t['nmi']['mean']:.2f} ({t['nmi_chance']:.2f})", t["ami"]["count"]])
            + [f"{(d or t)['env_steps_per_task']:,.0f}"]
        )
    base = summary["baseline"]
    spread = lambda x: "-" if x is None else f"{x['mean']:.2f} / {x['low']:.2f}"  # noqa: E731
    first = base.get("dev") or base["test"]
    baseline_rows = [
        [c, spread(base.get("dev", {}).get(c)), spread(base.get("test", {}).get(c))]
        for c in sorted(first, key=lambda c: -first[c]["mean"])
    ]
    baseline = markdown_table(
        ["baseline (compare's gradient similarity)", "dev AMI mean / low", "test AMI mean / low"], baseline_rows
    )
    return (
        text
        + markdown_table(header, rows)
        + "\nThe baseline at the same theta* (not a candidate):\n\n"
        + baseline
        + _compare_text(compare)
        + extra
        + "\n\nPer layout:"
    )


def compare_stage(args, seed: int, frozen: dict) -> dict | None:
    """``compare`` on one layout with the frozen candidate's settings (a fixed theta* only):
    every grouping trained from scratch with equal per-task steps, ``ground_truth`` = the truth's
    groups at the planted k (the reference above), and ``policygradex_equal_total``. Cached."""
    from pgx_jax.experiments.compare import compare
    from pgx_jax.experiments.groupings import GROUPINGS

    evaluator, rest = frozen["main"]["candidate"].split("@")
    theta_rule, k_rule = rest.split("|")
    if theta_rule not in META_POLICIES:
        return None
    d = _out(args, seed)
    entries = _load(os.path.join(d, "tasks.json"))
    truth = _load(os.path.join(d, "truth.json"))
    family = make_family(args.family, entries)
    config = pipeline_config(
        args.budget, family, conditioning=args.conditioning, meta_policy=theta_rule, evaluator=evaluator, k_rule=k_rule
    )
    fingerprint = hashlib.sha256(
        json.dumps([entries, config.to_dict(), frozen["main"]], default=str).encode()
    ).hexdigest()
    path = os.path.join(d, "compare.json")
    if (done := _fresh(path, fingerprint)) is not None:
        return done
    reference = cluster_mod.cluster_tasks(np.asarray(truth["affinity"]), len(set(family.groups)))
    t0 = time.perf_counter()
    report = compare(
        family, config, [seed], random_draws=3, groupings=GROUPINGS, true_groups={seed: reference}, equal_total=True
    )
    report.update(fingerprint=fingerprint, commit=source_commit(), wall_s=time.perf_counter() - t0)
    write_json(path, report)
    return _load(path)


def compare_rows(args) -> list[dict]:
    """Per test layout with a compare: mean returns per grouping and the issue's ratios."""
    rows = []
    for seed, d in _layout_dirs(args):
        c = _load(os.path.join(d, "compare.json"))
        if c is None or seed < TEST_FROM:
            continue
        mean = {name: g["mean_return"]["mean"] for name, g in c["groupings"].items()}
        rows.append(
            {
                "layout": seed,
                "mean_return": mean,
                "truth_over_multitask": mean["ground_truth"] / mean["multitask"] - 1,
                "policygradex_over_truth": mean["policygradex"] / mean["ground_truth"],
                "improvement_return": {k: v["relative"] for k, v in c["improvement_return"].items()},
                "improvement_equal_total": {k: v["relative"] for k, v in c.get("improvement_equal_total", {}).items()},
                "total_env_steps_per_task": {n: g["total_env_steps_per_task"][0] for n, g in c["groupings"].items()},
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="pendulum-physics")
    p.add_argument("--conditioning", default="none")
    p.add_argument("--budget", default="demo")
    p.add_argument("--layouts", type=int, nargs="*", default=[])
    p.add_argument("--meta-policies", nargs="*", default=list(META_POLICIES))
    p.add_argument("--replicates", type=int, default=1, help="truths per layout (independent training keys)")
    p.add_argument("--choose", action="store_true", help="freeze the choice on --dev-layouts")
    p.add_argument("--dev-layouts", type=int, nargs="*", default=[0, 1, 2, 3])
    p.add_argument("--report", action="store_true")
    p.add_argument(
        "--choice-from",
        default=None,
        help="report / compare with the choice frozen on this other family's development layouts, or "
        "'defaults': the settings pgx-jax run uses for this conditioning",
    )
    p.add_argument(
        "--compare", type=int, nargs="*", default=[], help="test layouts to run compare on (frozen settings)"
    )
    p.add_argument(
        "--every-theta",
        action="store_true",
        help="with --report --choice-from: list every candidate at every theta* (estimates needed on each layout), "
        "read after the fact beside the carried choice, as a diagnosis of where the signal is; not a choice",
    )
    args = parse_benchmark_args(p)
    if args.every_theta and not (args.report and args.choice_from):
        raise SystemExit("--every-theta goes with --report --choice-from (a family's own report lists every candidate)")
    from pgx_jax.cli.running import use_compilation_cache

    use_compilation_cache()
    for seed in args.layouts:
        run_layout(args, seed)
    if args.choose:
        choose(args)
    if args.choose and args.choice_from:
        raise SystemExit("--choose freezes this family's own choice; --choice-from uses another's")
    for seed in args.compare:
        frozen = _frozen(args)[0]
        if seed < TEST_FROM:
            raise SystemExit(f"--compare runs on test layouts (seeds >= {TEST_FROM}), got {seed}")
        compare_stage(args, seed, frozen)
        print(f"layout {seed}: compare done", flush=True)
        jax.clear_caches()  # as after a layout: two compares in one process reached LLVM's mapping limit
    if args.report:
        report(args)


if __name__ == "__main__":
    main()
