"""Command-line interface: ``pgx-jax run``, ``validate``, ``compare``, ``meta-rl``, ``train`` and ``families``.

Every argument is checked before anything is compiled; outputs are written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

#: What ``pgx-jax run`` does with no options: the newcomer's demo, chosen to show why grouping
#: matters (issue 15). Without the task id (``conditioning none``, the paper's meta-RL setting)
#: one policy cannot balance pendulums whose motors are wired forward and reversed: the
#: multitask policy learns one polarity. ``--meta-policy auto`` then expands around theta* stopped
#: at 5% of meta-training, between the two solutions, where the tasks' gradients separate the
#: polarities (the ``rollout`` evaluator found the split exactly there, NMI 1.00 on seeds 0 and 1;
#: ``gain`` 0.62 and 1.00); k = 2, the planted number (at ``auto`` the silhouette chose k = 4 and
#: groups of two tasks, whose 98,800 env steps per task were too few to learn: 113 mean return
#: against the multitask policy's 103). The other commands keep the library's defaults (task_id,
#: full theta*, auto k). Measured: benchmarks/RESULTS.md, issue 15.
#: ``pgx-jax run`` alone: task-agnostic pendulum-physics with the estimator the development /
#: test protocol chose on layouts other than this one (benchmarks/generalisation.py, issue 29):
#: the ``alignment`` evaluator and k by the eigengap (theta* at 2%: ``--meta-policy auto``).
RUN_DEFAULTS = {
    "family": "pendulum-physics",
    "conditioning": "none",
    "groups": "auto",
    "evaluator": "alignment",
    "k_rule": "eigengap",
}
#: ``pgx-jax meta-rl``: the paper's meta-RL protocol is task-agnostic; pendulum-physics is its
#: CartPole analogue and the cheapest family to meta-train here.
META_RL_DEFAULTS = {"family": "pendulum-physics", "conditioning": "none", "groups": "auto"}


def _use_compilation_cache(args=None) -> None:
    """The persistent compilation cache (:func:`pgx_jax.compiles.use_cache`) unless
    ``--no-compile-cache``; a 19 s compile took 3.6 s in the next process."""
    from pgx_jax import compiles

    compiles.use_cache("" if getattr(args, "no_compile_cache", False) else None)


class UsageError(ValueError):
    """A command line argparse refuses (an unknown option, a value outside its choices)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals raised as :class:`UsageError` so that ``main`` reports them
    as every other bad input: one line, exit status 2, nothing written."""

    def error(self, message: str):
        raise UsageError(message)


def _version_arg(p: argparse.ArgumentParser) -> None:
    from pgx_jax import __version__, provenance

    version = f"pgx-jax {__version__} ({provenance.source_state()['describe']})"
    p.add_argument("--version", action="version", version=version, help="the version and the commit, then exit")


def _parser() -> argparse.ArgumentParser:
    from pgx_jax.compare import GROUPINGS

    p = _Parser(prog="pgx-jax", description="PolicyGradEx in JAX: which RL objectives to train together.")
    _version_arg(p)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one multitask policy on every task of a family (the meta-policy)")
    _common_args(t, "train")
    t.add_argument("--episodes", type=int, default=16, help="evaluation episodes per task (default 16)")

    r = sub.add_parser(
        "run",
        help="PolicyGradEx end to end: meta-train, estimate, group, train the groups",
        description="PolicyGradEx end to end. With no options: task-agnostic pendulum-physics (--conditioning none, "
        "hence --meta-policy early-0.02; --evaluator alignment, --groups auto --k-rule eigengap: the settings the "
        "development/test protocol chose on other layouts), where grouping decides what a policy can learn.",
    )
    _pipeline_args(r, "run", resume=True, defaults=RUN_DEFAULTS)

    v = sub.add_parser(
        "validate", help="check the estimates against real fine-tuning on the same subsets; cost of both paths"
    )
    _pipeline_args(v, "validate", resume=True)
    _truth_args(
        v,
        "the reference: 'full' (default: every subset trained from scratch with the per-task budget compare "
        "gives a group of its size, the paper's ground truth), 'finetune' (PPO fine-tuning from theta* for "
        "--finetune-fraction of the full meta-training budget, whatever --meta-policy stopped theta* at; theta*'s "
        "normaliser frozen; about 5x cheaper) or 'both'",
    )
    v.add_argument(
        "--replicates",
        type=int,
        default=1,
        help="fine-tune every subset this many times; >= 2 reports how well the truth agrees with itself",
    )
    v.add_argument(
        "--hessian",
        action="store_true",
        help="also the paper's generalisation analysis: per-layer Hessian traces (Hutchinson) of the PPO "
        "surrogate and the advantage-weighted log-likelihood at theta* and at the estimated policies, the "
        "Hessian bound and the observed held-out gap (validation.json 'hessian')",
    )
    v.add_argument("--hessian-probes", type=int, default=32, help="Hutchinson probes (default 32; >= 2)")
    v.add_argument(
        "--hessian-subsets", type=int, default=8, help="analyse the estimated policies of the first this many subsets"
    )

    c = sub.add_parser("compare", help="train the groupings (multitask, per task, random, ...) with equal budgets")
    _pipeline_args(c, "compare", seed=False, resume=True)
    c.add_argument("--seeds", type=int, default=3, help="number of seeds 0..S-1 (default 3)")
    c.add_argument("--random-draws", type=int, default=3, help="random groupings per seed (default 3)")
    c.add_argument(
        "--groupings",
        default=",".join(GROUPINGS),
        help=f"comma-separated subset of {','.join(GROUPINGS)} (per_task is always trained: it anchors the "
        "normalisation)",
    )
    _truth_args(
        c,
        "the truth behind ground_truth's groups, as for validate: 'full' (default) or 'finetune' ('both' uses 'full')",
    )
    c.add_argument(
        "--equal-total",
        action="store_true",
        help="also train PolicyGradEx's groups for the per-task budget less what its estimate consumed "
        "(meta-training, features, gradient sample, rollout evaluation): policygradex_equal_total, at the same "
        "total env steps per task as multitask, per-task and random training",
    )
    c.add_argument(
        "--save-policies",
        action="store_true",
        help="save every grouping's policies in OUT/policies/seed<s>/<grouping>/ (pgx_jax.load_groups reads one)",
    )

    _meta_rl_parser(sub)
    sub.add_parser("families", help="list the task families")
    return p


def _meta_rl_parser(sub) -> None:
    from pgx_jax.families import meta_rl_families
    from pgx_jax.meta_rl import DEFAULT_GROUPINGS, GROUPINGS, ROUTING

    m = sub.add_parser(
        "meta-rl",
        help="the paper's meta-RL protocol: one MAML meta-policy per group, scored on unseen tasks after adaptation",
        description="Group the source tasks (each grouping), meta-train one MAML policy per group with the same env "
        "steps per source task in every grouping, adapt the meta-policies to unseen test tasks drawn from the "
        f"family's distribution and score each grouping by the test tasks' mean return. Families: "
        f"{meta_rl_families()} (host-stepped families sample their episodes on the host, the learning "
        f"jitted). Routing of a test task to a group: {ROUTING} (the task's own data, no training, "
        "the same rule for every grouping; the agreement with the nearest source task's group is reported).",
    )
    _pipeline_args(m, "meta-rl", seed=False, resume=True, defaults=META_RL_DEFAULTS)
    m.add_argument("--seeds", type=int, default=3, help="number of seeds 0..S-1 (default 3)")
    m.add_argument("--test-tasks", type=int, default=50, help="unseen test tasks drawn per run (default 50)")
    m.add_argument("--test-tasks-file", default=None, help="JSON list of test tasks instead of drawing them")
    m.add_argument(
        "--test-seed", type=int, default=0, help="seed of the test tasks' draw (default 0; the same for every seed)"
    )
    m.add_argument("--random-draws", type=int, default=3, help="random groupings per seed (default 3)")
    m.add_argument(
        "--adapt-steps",
        type=int,
        default=None,
        help="policy-gradient steps on each test task, each on fresh episodes (default: the budget's; demo 10 on "
        "a 2-core CPU, full 200 as the paper)",
    )
    m.add_argument("--meta-iterations", type=int, default=None, help="meta-iterations of the all-task group")
    m.add_argument("--second-order", action="store_true", help="differentiate through the inner step (MAML)")
    m.add_argument(
        "--groupings",
        default=",".join(DEFAULT_GROUPINGS),
        help=f"comma-separated subset of {','.join(GROUPINGS)} (ground_truth trains every sampled subset)",
    )
    _truth_args(m, "the truth behind ground_truth's groups: 'full' (default) or 'finetune'")
    m.add_argument(
        "--true-groups",
        default=None,
        help="JSON object {seed: groups} of ground_truth's groups computed before (e.g. validate's "
        "truths.full.true_groups for the same seed and options), instead of training every subset again",
    )


def _common_args(p: argparse.ArgumentParser, command: str, seed: bool = True, defaults=None) -> None:
    """The options every command but ``families`` takes: the tasks, budget, seed, conditioning,
    output. ``defaults`` overrides the library's (``family``, ``conditioning``)."""
    from pgx_jax.config import BUDGETS
    from pgx_jax.families import DEFAULT_FAMILY, family_names

    defaults = defaults or {}
    family = defaults.get("family", DEFAULT_FAMILY)
    p.add_argument(
        "--family",
        default=family,
        choices=family_names(),
        metavar="FAMILY",
        help=f"one of {family_names()} (default {family})",
    )
    p.add_argument("--tasks-file", default=None, help="JSON list of tasks (name, the family's field, optional group)")
    p.add_argument(
        "--layout",
        default=None,
        help="'random:SEED': a layout of the family drawn with SEED (group sizes, number of groups, physics or "
        "reward parameters and task order vary; written to the output as tasks.json), or 'default' (the "
        "family's own layout; the default unless --tasks-file)",
    )
    p.add_argument("--budget", default="demo", choices=BUDGETS, help="the env steps of every training (default demo)")
    p.add_argument(
        "--num-envs",
        type=int,
        default=None,
        help="parallel environments of every training (default: the budget's for the family, e.g. 260 for "
        "10 pendulums at demo); a multiple of the number of tasks. The env steps stay the budget's, so more "
        "environments mean fewer, larger updates",
    )
    if seed:
        p.add_argument("--seed", type=int, default=0)
    _conditioning_arg(p, defaults.get("conditioning", "task_id"))
    p.add_argument(
        "--out",
        default=None,
        help=f"output directory (default runs/{command}-FAMILY{'-sSEED' if seed else ''}-TIME, linked from "
        "runs/latest); an existing non-empty one is refused unless --resume or --overwrite",
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="override a field of the frozen configs that has no option of its own, applied after every other option: "
        + (
            "ppo.FIELD (e.g. ppo.learning_rate=1e-3 ppo.network.width=128)"
            if command == "train"
            else "e.g. ppo.learning_rate=1e-3 ppo.network.width=128 features.transitions=4096 surrogate.refine=20"
        )
        + "; a value is a Python literal or a word",
    )
    p.add_argument(
        "--log",
        choices=LOGS,
        default="none",
        help="'tensorboard': learning curves and per-stage figures as TensorBoard scalars in OUT/tensorboard "
        "(tensorboard --logdir OUT); default none",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into the --out of an earlier run, removing that run's outputs first (other files are kept)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--host-workers",
        type=int,
        default=0,
        metavar="W",
        help="host-stepped families: step the environments in W worker processes (default 0: here); same results",
    )
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs across runs (default: kept in $PGX_JAX_CACHE or ~/.cache/pgx_jax/jax)",
    )
    _distributed_args(p)


def _distributed_args(p: argparse.ArgumentParser) -> None:
    from pgx_jax.distributed import DEFAULT_TIMEOUT_S

    d = p.add_argument_group(
        "multi-process (jax.distributed)",
        "run one process per host (or per GPU) with the same options: the subsets, groups and trainings are "
        "split over the processes and gathered; process 0 writes the output and draws progress",
    )
    d.add_argument(
        "--coordinator",
        default=None,
        help="HOST:PORT of process 0 (with --num-processes and --process-id), or 'auto' where JAX detects "
        "the cluster itself (SLURM, Cloud TPU); absent: one process",
    )
    d.add_argument("--num-processes", type=int, default=None, help="number of processes P")
    d.add_argument("--process-id", type=int, default=None, help="this process's index in [0, P-1]")
    d.add_argument(
        "--distributed-timeout",
        type=int,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for every process to join, or for a silent one, before failing (default "
        f"{DEFAULT_TIMEOUT_S})",
    )


def _join_cluster(args) -> None:
    """Join the other processes (``--coordinator``), before any JAX computation; on processes
    other than 0, silence stdout and progress (process 0 reports). Raises ``ValueError`` on bad
    options and ``RuntimeError`` when the cluster does not form in time."""
    if getattr(args, "coordinator", None) is None:
        from pgx_jax.distributed import DEFAULT_TIMEOUT_S

        for name in ("num_processes", "process_id"):
            if getattr(args, name, None) is not None:
                raise ValueError(f"--{name.replace('_', '-')} needs --coordinator HOST:PORT")
        if getattr(args, "distributed_timeout", DEFAULT_TIMEOUT_S) != DEFAULT_TIMEOUT_S:
            raise ValueError("--distributed-timeout needs --coordinator (one process waits for no other)")
        return
    from pgx_jax import distributed

    spec = distributed.ClusterSpec(args.coordinator, args.num_processes, args.process_id, args.distributed_timeout)
    who = "this process" if spec.process_id is None else f"process {spec.process_id} of {spec.num_processes}"
    # JAX aborts the process itself when the cluster does not form or a peer dies later: say first what is tried
    print(f"{who}: joining the cluster at {spec.coordinator} (timeout {spec.timeout_s} s)", file=sys.stderr)
    try:
        distributed.initialize(spec)
    except Exception as e:  # jax raises its runtime's own error types
        raise RuntimeError(
            f"could not join the cluster at {spec.coordinator} as {who} within {spec.timeout_s} s: {_first_line(e)}"
        ) from None
    if not distributed.is_main():
        args.no_progress = True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    distributed.check_agree(_run_inputs(args))


def _run_inputs(args) -> dict[str, str]:
    """What every process of a run must share, as text: the options (without ``--process-id``),
    the tasks' parameters and the other input files' bytes (not their paths: two processes in
    different directories may read different files under one name), the code (commit and
    uncommitted diff) and the package versions (:func:`pgx_jax.distributed.check_agree` names
    the first that differs)."""
    import hashlib
    import json

    from pgx_jax import checkpoint, provenance

    own = ("process_id", "no_progress", "no_compile_cache", "host_workers")  # a process's own choice, not its result's
    # paths name files whose bytes are compared below; only process 0 writes into --out
    paths = ("out", "tasks_file", "test_tasks_file", "true_groups")
    argv = [f"{k}={v}" for k, v in sorted(vars(args).items()) if k not in own + paths]
    try:
        tasks = json.dumps(_entries(args), sort_keys=True, default=str)
    except (ValueError, OSError) as e:  # refused later, on every process alike, or named here as a difference
        tasks = f"unreadable: {e}"
    files = {}
    for name in ("tasks_file", "test_tasks_file", "true_groups"):
        path = getattr(args, name, None)
        if path is not None:
            try:
                with open(path, "rb") as f:
                    files[name] = hashlib.sha256(f.read()).hexdigest()
            except OSError as e:
                files[name] = f"unreadable: {e.strerror or e}"
    state = provenance.source_state()
    versions = {k: v for k, v in checkpoint.versions().items() if not k.startswith("pgx_jax_")}
    return {
        "options": " ".join(argv),
        "tasks (their parameters)": tasks,
        "input files (their bytes)": json.dumps(files, sort_keys=True),
        "code (commit and uncommitted diff)": f"{state['commit']} {state['diff_sha256']}",
        "package versions": json.dumps(versions, sort_keys=True),
    }


#: what the commands write into their output directory (``--overwrite`` removes these first, so
#: that no file of the earlier run is left beside the new run's: an old groups.json, events)
OUTPUTS = (
    "affinity.png", "affinity_estimated.png", "approx_error.png", "comparison.json", "groups", "groups.json",
    "learning_curve.png", "meta_rl.json", "meta_rl.png", "policies", "policy", "result.json", "stages", "tasks.json",
    "tensorboard", "theta_star", "train.json", "validation.json",
)  # fmt: skip
OUTPUT_PATTERNS = ("affinity_true_*.png", "truth_scatter_*.png")
#: what shows that a directory holds an earlier run (``--overwrite`` clears nothing else)
RUN_MARKERS = (
    "result.json",
    "train.json",
    "validation.json",
    "comparison.json",
    "meta_rl.json",
    "groups.json",
    "stages",
    "theta_star",
)


def _holds_a_run(out: str) -> bool:
    return any(os.path.exists(os.path.join(out, m)) for m in RUN_MARKERS)


def _clear_outputs(out: str) -> list[str]:
    """Remove from ``out`` every file and directory a command writes (:data:`OUTPUTS`,
    :data:`OUTPUT_PATTERNS`), nothing else; returns the names removed."""
    import fnmatch
    import shutil

    removed = []
    for name in sorted(os.listdir(out)):
        if name in OUTPUTS or any(fnmatch.fnmatch(name, p) for p in OUTPUT_PATTERNS):
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
            removed.append(name)
    return removed


def _make_out(out: str, args) -> str:
    """Make the output directory (process 0 alone; the others never write) and return it. A
    default one (no ``--out``) is claimed atomically (``os.mkdir``; where another run took the
    name since :func:`_resolve_out` chose it, the next free ``-2``, ``-3`` ...) and becomes
    ``runs/latest``; with ``--overwrite`` the earlier run's outputs are removed first (named on
    stderr; :func:`_check_out` refused a non-empty directory that holds no run)."""
    from pgx_jax.distributed import is_main

    if not is_main():
        return out
    if getattr(args, "out_is_default", False):
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        stem, k = out, 1
        while True:
            try:
                os.mkdir(out)
                break
            except FileExistsError:
                k += 1
                out = f"{stem}-{k}"
        args.out = out
        _link_latest(out)
        return out
    os.makedirs(out, exist_ok=True)
    if getattr(args, "overwrite", False) and not getattr(args, "resume", False) and _holds_a_run(out):
        removed = _clear_outputs(out)
        if removed:
            print(f"--overwrite: removed the earlier run's {', '.join(removed)} from {out}", file=sys.stderr)
    return out


def _truth_args(p: argparse.ArgumentParser, truth_help: str) -> None:
    """The options of the truth (``validate``, ``compare`` and ``meta-rl``)."""
    from pgx_jax.validate import TRUTHS

    p.add_argument("--truth", default="full", choices=TRUTHS, help=truth_help)
    p.add_argument(
        "--finetune-fraction",
        type=float,
        default=0.1,
        help="env steps of each subset's real fine-tuning, as a fraction of the full meta-training budget (default "
        "0.1; with --meta-policy early-F, theta* itself had the fraction F)",
    )


def _conditioning_arg(p: argparse.ArgumentParser, default: str) -> None:
    from pgx_jax.config import CONDITIONINGS

    p.add_argument(
        "--conditioning",
        default=default,
        choices=CONDITIONINGS,
        help="what the policy is told about the task: 'task_id' (the one-hot id is part of its input) or 'none' "
        f"(the environment observation alone, as in the paper's meta-RL experiments); default {default}",
    )


def _network_with(conditioning: str, network=None):
    """``network`` (default ``NetworkConfig()``) with this conditioning; ``ValueError`` naming
    ``--conditioning`` and a bad value."""
    import dataclasses

    from pgx_jax.config import NetworkConfig

    try:
        return dataclasses.replace(network or NetworkConfig(), conditioning=conditioning)
    except ValueError as e:
        raise ValueError(f"--conditioning: {e}") from None


def _pipeline_args(
    p: argparse.ArgumentParser, command: str, seed: bool = True, resume: bool = False, defaults=None
) -> None:
    """The arguments ``run``, ``validate`` and ``compare`` share (the pipeline's config);
    ``defaults`` overrides the library's (``family``, ``conditioning``, ``groups``)."""
    from pgx_jax.evaluate import EVALUATORS

    defaults = defaults or {}
    _common_args(p, command, seed, defaults)
    if resume:
        p.add_argument(
            "--resume",
            action="store_true",
            help="continue an interrupted run in --out: reuse its finished theta* (or continue its meta-training from "
            "the last saved chunk) and every finished stage saved with the same options (validate: the estimate, "
            "each truth training, the Hessian analysis; compare and meta-rl: each seed)",
        )
    groups = defaults.get("groups", "auto")
    p.add_argument("--groups", default=groups, help=f"number of groups k, or 'auto'; default {groups}")
    p.add_argument(
        "--meta-policy",
        default="auto",
        help="the theta* the estimate expands around: 'full' (meta-training's whole budget), 'early-F' (stopped "
        "after the fraction F of it), 'entropy-C' (with an entropy bonus C) or 'auto' (default: 'early-0.02' under "
        "--conditioning none, 'full' with the task id; 2%% was chosen on development layouts by "
        "benchmarks/generalisation.py)",
    )
    p.add_argument("--subsets", type=int, default=None, help="number of sampled subsets m (default: covers every pair)")
    p.add_argument("--subset-size", type=int, default=None, help="tasks per subset (default about n/2)")
    evaluator = defaults.get("evaluator", "rollout")
    p.add_argument(
        "--evaluator",
        default=evaluator,
        choices=EVALUATORS,
        help="f(S, i): 'rollout' (returns of theta_S on each task of S), 'loss' (held-out surrogate loss), 'gain' "
        "(first-order improvement of task i's held-out surrogate objective under the step) or 'alignment' (of task "
        "i's policy gradient with a unit gradient step on S; no solve); the last three need no "
        f"rollouts; default {evaluator}",
    )
    _solve_and_cluster_args(p, defaults)


def _solve_and_cluster_args(p: argparse.ArgumentParser, defaults: dict) -> None:
    """The surrogate solve's, the clustering's and the evaluation's options of :func:`_pipeline_args`."""
    from pgx_jax.cluster import K_RULES, METHODS
    from pgx_jax.features import PARAM_SETS
    from pgx_jax.surrogate import SOLVERS, STEPS

    p.add_argument(
        "--solver",
        default=None,
        choices=SOLVERS,
        help="surrogate solve: 'newton' (default; closed form from per-task statistics, then "
        "majorise-minimise steps where it has not converged) or 'lbfgs'",
    )
    p.add_argument(
        "--rho",
        type=float,
        default=None,
        help="L2 penalty relative to the data Hessian's mean eigenvalue: lambda_S = rho tr(G_S) / d",
    )
    p.add_argument(
        "--step",
        default=None,
        choices=STEPS,
        help="step size mode: 'relative' (the paper's, and the smoke budget's; --step-size is "
        "||theta_S - theta*|| / ||theta*||) or 'kl' (default at demo and full: --step-size is the mean "
        "KL(pi_theta* || pi_theta_S) in nats over the subset's states)",
    )
    p.add_argument("--step-size", type=float, default=None, help="see --step (default 0.01 either way)")
    p.add_argument(
        "--params",
        default=None,
        choices=PARAM_SETS,
        help="actor parameters the gradients and steps cover: 'all' (default), 'mean' (the mean network, no log "
        "std) or 'body' (also without the task-id rows)",
    )
    p.add_argument("--cluster", default="sdp", choices=METHODS, help="the clustering of the affinity (default sdp)")
    k_rule = defaults.get("k_rule", "silhouette")
    p.add_argument(
        "--k-rule",
        default=k_rule,
        choices=K_RULES,
        help="how --groups auto chooses k: 'silhouette' or 'eigengap' (the normalised Laplacian's largest "
        f"eigenvalue gap); default {k_rule}",
    )
    p.add_argument("--dim", type=int, default=None, help="projection dimension d (default 400; smoke 64)")
    p.add_argument(
        "--eval-episodes",
        type=int,
        default=None,
        help="evaluation episodes per task behind every f(S, i) and final return (default 32 for Brax families, 8 "
        "for host-stepped ones, 2 at smoke; validate reports the standard errors)",
    )


#: exit statuses: bad input (refused before any work, as argparse refuses a usage error) and a
#: failure while running (a non-finite training, a cluster that does not form or loses a process)
USAGE_ERROR, RUN_FAILED = 2, 1


def _fail(msg: str, code: int = USAGE_ERROR) -> int:
    print(f"pgx-jax: error: {msg}", file=sys.stderr)
    return code


def _train_all_tasks(
    config, family, key, *, show: bool, desc: str, position: int = 0, timings=None, checkpoint=None, start=None,
    progress_fn=None,
):  # fmt: skip
    """:func:`pgx_jax.train_chunked` on every task with an env-step progress bar (``show``), then
    ``check_finite`` (raises ``FloatingPointError``). Returns ``(params, metrics)``;
    ``timings``, ``checkpoint``, ``start`` and ``progress_fn`` as in ``train_chunked``."""
    import jax
    import jax.numpy as jnp

    from pgx_jax import ppo, simulators

    steps = config.num_envs * config.unroll(family.episode_length)
    total = config.num_updates(family.episode_length) * steps
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            unit="step",
            unit_scale=True,
            desc=f"{desc} (compiling)",
            position=position,
            leave=position == 0,
        )

    def on_chunk(done, total_updates):
        if bar is not None:
            bar.set_description(desc)
            bar.update(done * steps - bar.n)

    try:
        params, metrics = simulators.train_chunked(
            config,
            family,
            jnp.ones(family.n_tasks, bool),
            key,
            on_chunk=on_chunk,
            timings=timings,
            checkpoint=checkpoint,
            start=start,
            progress_fn=progress_fn,
        )
        jax.block_until_ready(params)
    finally:
        if bar is not None:
            bar.close()
    ppo.check_finite(metrics, family.task_names)
    return params, metrics


def _cmd_families(args) -> int:
    del args
    from pgx_jax.families import family_catalog
    from pgx_jax.results import markdown_table

    cols = ["family", "n", "env", "backend", "varies", "objective", "planted", "extra"]
    rows = [[row[c] for c in cols] for row in family_catalog()]
    print(markdown_table([*cols[:-2], "planted grouping (default layout)", "needs"], rows), end="")
    return 0


def _cmd_train(args) -> int:
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from pgx_jax import checkpoint
    from pgx_jax.config import budget_config
    from pgx_jax.results import markdown_table, plot_learning_curves, write_json
    from pgx_jax.simulators import evaluate_metrics, random_policy_metrics, simulator

    if args.episodes < 1:  # everything is checked before compiling
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    family = _family(args)
    config = _with_num_envs(args, budget_config(args.budget, args.family, family.n_tasks), family.n_tasks)
    config = dataclasses.replace(config, network=_network_with(args.conditioning, config.network))
    config = _set_ppo(args, config)
    config.check_for(family.n_tasks, family.episode_length)
    out = _make_out(_out_path(args), args)
    _write_layout(args, out)
    _use_compilation_cache(args)
    steps_per_update = config.num_envs * config.unroll(family.episode_length)
    total_updates = config.num_updates(family.episode_length)
    print(
        f"family {family.name}: {family.n_tasks} tasks; budget {args.budget}: "
        f"{total_updates * steps_per_update:,} env steps, {config.num_envs} envs, {total_updates} updates",
        file=sys.stderr,
    )
    key_train, key_eval = jax.random.split(jax.random.PRNGKey(args.seed))
    t0 = time.perf_counter()
    with _scalar_log(args, out) as log:
        params, metrics = _train_all_tasks(
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
    with _scalar_log(args, out) as log:
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
        "compiles": _compiles(),
        "versions": _versions(),
        "distributed": _distributed_summary(),
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


#: config fields ``--set`` may not change: each has its own option, whose checks against the
#: other options (and the family) run where the option is read. path -> (args dest, option)
SET_BY_OPTION = {
    "ppo.network.conditioning": ("conditioning", "--conditioning"),
    "ppo.num_envs": ("num_envs", "--num-envs"),
    "groups": ("groups", "--groups"),
    "evaluator": ("evaluator", "--evaluator"),
    "k_rule": ("k_rule", "--k-rule"),
    "cluster_method": ("cluster", "--cluster"),
    "eval_episodes": ("eval_episodes", "--eval-episodes"),
    "meta_policy": ("meta_policy", "--meta-policy"),
    "surrogate.solver": ("solver", "--solver"),
    "surrogate.rho": ("rho", "--rho"),
    "surrogate.step": ("step", "--step"),
    "surrogate.step_size": ("step_size", "--step-size"),
    "features.params": ("params", "--params"),
    "features.dim": ("dim", "--dim"),
    "affinity.subsets": ("subsets", "--subsets"),
    "affinity.subset_size": ("subset_size", "--subset-size"),
}


def _set_reserved(args, prefix: str = "") -> dict[str, str]:
    """The paths (relative to ``prefix``) ``--set`` refuses for this command, with the reason."""
    out = {"train_groups": f"{args.command} decides whether the groups are trained; not settable"}
    for path, (dest, option) in SET_BY_OPTION.items():
        if not path.startswith(prefix):
            continue
        has = hasattr(args, dest)
        why = f"set it with {option} (its checks run there)" if has else f"{args.command} fixes this field"
        out[path[len(prefix) :]] = why
    return out


def _family(args):
    """The command's family, stepped in ``--host-workers`` processes where asked."""
    from pgx_jax.families import make_family, with_workers

    family = make_family(args.family, _entries(args))
    return with_workers(family, args.host_workers) if getattr(args, "host_workers", 0) else family


def _build_run(args):
    """Validate every ``run`` argument and build (family, PipelineConfig) without compiling."""
    import dataclasses

    from pgx_jax.affinity import AffinityConfig
    from pgx_jax.config import with_overrides
    from pgx_jax.pipeline import pipeline_config

    family = _family(args)
    groups = _parse_groups(args.groups, family.n_tasks)
    affinity = AffinityConfig(subsets=args.subsets, subset_size=args.subset_size)
    _network_with(args.conditioning)  # names --conditioning if it is bad, before pipeline_config
    meta_policy = {} if args.meta_policy == "auto" else {"meta_policy": args.meta_policy}
    config = pipeline_config(
        args.budget,
        family,
        conditioning=args.conditioning,
        groups=groups,
        evaluator=args.evaluator,
        cluster_method=args.cluster,
        k_rule=args.k_rule,
        affinity=affinity,
        **meta_policy,
    )
    if args.eval_episodes is not None:
        config = dataclasses.replace(config, eval_episodes=args.eval_episodes)
    if args.dim is not None:
        config = dataclasses.replace(config, features=dataclasses.replace(config.features, dim=args.dim))
    if args.params is not None:
        config = dataclasses.replace(config, features=dataclasses.replace(config.features, params=args.params))
    config = dataclasses.replace(config, ppo=_with_num_envs(args, config.ppo, family.n_tasks))
    solve = _solve_overrides(args)
    if solve:  # SurrogateConfig names the bad value and what is allowed
        config = dataclasses.replace(config, surrogate=dataclasses.replace(config.surrogate, **solve))
    config = with_overrides(config, args.set, _set_reserved(args))
    config.check_for(family)
    return family, config


def _parse_groups(value: str, n: int):
    """``--groups``: 'auto' or an integer in [1, n]."""
    if value == "auto":
        return "auto"
    try:
        groups = int(value)
    except ValueError:
        raise ValueError(f"--groups must be an integer or 'auto', got {value!r}") from None
    if not 1 <= groups <= n:
        raise ValueError(f"--groups {groups} must be in [1, {n}] (the number of tasks) or 'auto'")
    return groups


def _solve_overrides(args) -> dict:
    solve = {"solver": args.solver, "rho": args.rho, "step": args.step, "step_size": args.step_size}
    return {name: v for name, v in solve.items() if v is not None}


def _dry_config(args, n: int) -> None:
    """Build the configs the command's options name, for n tasks, without a family: an unknown
    budget, conditioning, evaluator, clustering, solver, step or meta-policy fails here."""
    import dataclasses

    from pgx_jax.config import budget_config

    ppo = _with_num_envs(args, budget_config(args.budget, args.family, n), n)
    ppo = dataclasses.replace(ppo, network=_network_with(args.conditioning, ppo.network))
    if args.command == "train":
        _set_ppo(args, ppo)
        return
    from pgx_jax.config import with_overrides
    from pgx_jax.pipeline import PipelineConfig, budget_features
    from pgx_jax.surrogate import SurrogateConfig

    params = {} if args.params is None else {"params": args.params}
    dry = PipelineConfig(
        ppo=ppo,
        features=dataclasses.replace(budget_features(args.budget), **params),
        surrogate=dataclasses.replace(SurrogateConfig(), **_solve_overrides(args)),
        evaluator=args.evaluator,
        cluster_method=args.cluster,
        k_rule=args.k_rule,
        meta_policy="full" if args.meta_policy == "auto" else args.meta_policy,
    )
    dry = with_overrides(dry, args.set, _set_reserved(args))
    if getattr(args, "hessian", False) and dry.feature_config().holdout < 1:  # as ValidateConfig.check
        raise ValueError(f"validate --hessian needs held-out transitions; budget {args.budget!r} keeps none")


def _set_ppo(args, ppo):
    """``ppo`` with ``train``'s ``--set ppo.FIELD=VALUE`` assignments (``ValueError`` for any other path)."""
    from pgx_jax.config import with_overrides

    return with_overrides(ppo, args.set, _set_reserved(args, "ppo."), root="ppo.")


def _with_num_envs(args, ppo, n: int):
    """``ppo`` with ``--num-envs`` where given: a positive multiple of the n tasks (``ValueError``
    naming it otherwise; the minibatch split is checked with the family's episode length)."""
    import dataclasses

    v = getattr(args, "num_envs", None)
    if v is None:
        return ppo
    if v < 1 or v % n:
        raise ValueError(f"--num-envs must be a positive multiple of the number of tasks {n}, got {v}")
    return dataclasses.replace(ppo, num_envs=v)


def _stage_store(args, out: str, family):
    """The command's :class:`pgx_jax.stages.StageStore` in ``out``: fingerprinted by every
    option that decides a result (not ``--out``, ``--resume``, progress or the cluster's
    address) and the tasks; off in a multi-process run (its processes must agree on what they
    reuse, and need not share a file system)."""
    import hashlib

    import jax

    from pgx_jax import provenance
    from pgx_jax.stages import StageStore

    ignore = {"out", "resume", "overwrite", "out_is_default", "no_progress", "no_compile_cache", "coordinator", "log"}
    ignore |= {"num_processes", "process_id"}
    ignore |= {"distributed_timeout", "host_workers"}  # the same results whatever the number of workers
    fingerprint = {k: v for k, v in sorted(vars(args).items()) if k not in ignore}
    fingerprint["tasks"] = _entries(args)  # every parameter, not the names alone
    for name in ("test_tasks_file", "true_groups"):  # files whose content decides a result
        path = getattr(args, name, None)
        if path is not None and os.path.isfile(path):
            with open(path, "rb") as f:
                fingerprint[f"{name}_sha256"] = hashlib.sha256(f.read()).hexdigest()
    fingerprint["code"] = provenance.source_state()  # another commit, or other uncommitted edits: nothing reused
    resume = bool(getattr(args, "resume", False))
    return StageStore(out, fingerprint, resume=resume, enabled=jax.process_count() == 1)


def _entries(args) -> list[dict]:
    """The command's validated task entries: ``--tasks-file``, ``--layout`` or the family's own
    (``ValueError`` naming a bad file, layout, or both given)."""
    from pgx_jax.families import task_entries

    return task_entries(args.family, args.tasks_file, getattr(args, "layout", None))


def _write_layout(args, out: str) -> None:
    """With ``--layout random:SEED``, the drawn tasks (with their planted groups) as
    ``out/tasks.json``, a tasks file that ``--tasks-file`` reads back (process 0 writes)."""
    from pgx_jax.distributed import is_main
    from pgx_jax.families import parse_layout
    from pgx_jax.results import write_json

    if parse_layout(getattr(args, "layout", None)) is not None and is_main():
        write_json(os.path.join(out, "tasks.json"), _entries(args))


def _out_path(args) -> str:
    """The command's output directory: ``--out`` (:func:`_resolve_out` fills it in first)."""
    return args.out or os.path.join("runs", f"{args.command}-{args.family}")


#: what ``--log`` can write
LOGS = ("none", "tensorboard")


def _scalar_log(args, out: str):
    """The run's :class:`pgx_jax.results.ScalarLog`: ``out/tensorboard`` with ``--log tensorboard``."""
    from pgx_jax.results import ScalarLog

    return ScalarLog(os.path.join(out, "tensorboard") if getattr(args, "log", "none") == "tensorboard" else None)


#: where the default output directories go, and the link to the newest one
RUNS = "runs"


def _resolve_out(args) -> None:
    """Fix ``args.out`` once, before any check reads it. Without ``--out``: a new directory
    ``runs/<command>-<family>[-s<seed>]-<UTC time>`` (``-2``, ``-3`` ... where that exists),
    named by process 0 for every process; with ``--resume`` and no ``--out``: the run that
    ``runs/latest`` points to, which must be one of this command and family."""
    if args.out is not None:
        return
    from pgx_jax.distributed import from_main

    seed = getattr(args, "seed", None)
    stem = f"{args.command}-{args.family}-" + ("" if seed is None else f"s{seed}-")
    if getattr(args, "resume", False):
        latest = os.path.join(RUNS, "latest")
        # every process resumes the run process 0 sees (and all refuse together)
        target = from_main(os.path.realpath(latest) if os.path.exists(latest) else "")
        if not target:
            raise ValueError(f"--resume without --out resumes {latest}, and there is none; give the --out of the run")
        if not os.path.basename(target).startswith(stem):
            what = f"{args.command} run of {args.family}" + ("" if seed is None else f" with --seed {seed}")
            raise ValueError(
                f"--resume without --out: {latest} is {target}, not a {what}; give the --out of the run to resume"
            )
        args.out = target
        return
    import datetime

    name = stem + datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path, k = os.path.join(RUNS, name), 1
    while os.path.exists(path):
        k += 1
        path = os.path.join(RUNS, f"{name}-{k}")
    args.out = from_main(path)
    args.out_is_default = True


def _link_latest(out: str) -> None:
    """Point ``runs/latest`` at a default output directory ``out`` (process 0; replaced
    atomically; skipped where the file system has no symbolic links)."""
    from pgx_jax.distributed import is_main

    if not is_main():
        return
    tmp = os.path.join(RUNS, f".latest-{os.getpid()}")
    try:
        os.symlink(os.path.basename(out), tmp)
        os.replace(tmp, os.path.join(RUNS, "latest"))
    except OSError:
        if os.path.lexists(tmp):
            os.remove(tmp)


def _precheck(args) -> None:
    """Every check that needs no environment, run before any is built (building one compiles):
    bad input fails here in well under a second, naming the value and what is allowed, and
    nothing is written. The catalogue of what is refused: docs/bad_input.md."""
    from pgx_jax.affinity import AffinityConfig

    seed = getattr(args, "seed", None)
    if seed is not None and seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    entries = _entries(args)  # unknown family, malformed tasks file or --layout
    n = len(entries)
    workers = getattr(args, "host_workers", 0)
    if workers < 0:
        raise ValueError(f"--host-workers must be >= 0 (0: step in this process), got {workers}")
    from pgx_jax.families import HOST_FAMILIES

    if workers and args.family not in HOST_FAMILIES:
        raise ValueError(
            f"--host-workers {workers}: family {args.family} is stepped by JAX, not on the host; allowed with "
            f"{sorted(HOST_FAMILIES)}"
        )
    if args.command != "train":  # grouping commands
        if n < 2:
            raise ValueError(f"{args.tasks_file or args.family}: {n} task; grouping needs at least 2 tasks")
        _parse_groups(args.groups, n)
        for flag in ("dim", "eval_episodes"):
            v = getattr(args, flag, None)
            if v is not None and v < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {v}")
        AffinityConfig(subsets=args.subsets, subset_size=args.subset_size).check_for(n)
    _dry_config(args, n)
    out = _out_path(args)
    _check_out(out, args)
    if getattr(args, "resume", False):
        _check_resume(args, entries, out)


def _check_out(out: str, args=None) -> None:
    """``--out`` must be a directory this process can create or write into, and new or empty
    unless ``--resume`` or ``--overwrite``: a run never overwrites another by accident."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file; allowed: a directory (new or existing)")
    reuse = args is not None and (getattr(args, "resume", False) or getattr(args, "overwrite", False))
    if os.path.isdir(out) and os.listdir(out) and args is not None and not reuse:
        raise ValueError(
            f"--out {out!r} already holds files (an earlier run?); allowed: a new or empty directory, "
            "--resume to continue that run, or --overwrite to replace its files"
        )
    overwrite = args is not None and getattr(args, "overwrite", False) and not getattr(args, "resume", False)
    if overwrite and os.path.isdir(out) and os.listdir(out) and not _holds_a_run(out):
        raise ValueError(
            f"--out {out!r} holds files but no earlier pgx-jax run (none of {list(RUN_MARKERS)}): --overwrite "
            "replaces a run's outputs only; allowed: a new or empty directory, or an earlier run's"
        )
    here = os.path.abspath(out)
    while not os.path.exists(here):  # the nearest existing ancestor is where it would be made
        here = os.path.dirname(here)
    if not os.path.isdir(here) or not os.access(here, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out!r} is not writable ({here!r} is not a writable directory)")


def _check_resume(args, entries, out: str) -> None:
    """``--resume``: a finished theta* checkpoint in ``out`` of this family, tasks and
    conditioning (its meta.json read alone; the parameters are loaded, and checked against the
    network, once the family is built), or finished stages; every file in ``out/stages`` a
    stage (:func:`pgx_jax.stages.saved_stages`: never a pickle)."""
    from pgx_jax import checkpoint
    from pgx_jax.stages import saved_stages

    ckpt = os.path.join(out, "theta_star")
    try:
        saved = saved_stages(os.path.join(out, "stages"))
    except ValueError as e:  # names the file that is not a stage and what to remove
        raise ValueError(f"--resume: {e}") from None
    if args.command not in THETA_COMMANDS or not os.path.exists(os.path.join(ckpt, "meta.json")):
        if saved:
            return  # the saved stages are reused where their options match (theta*'s training among them)
        what = "no theta* checkpoint and no finished stage" if args.command in THETA_COMMANDS else "no finished stage"
        raise ValueError(
            f"--resume: nothing to resume at {out}: {what}; allowed: the --out of an earlier, interrupted run of "
            f"{args.command}"
        )
    try:
        meta = checkpoint.check_files(ckpt)
        names = [e["name"] for e in entries]
        if meta.get("family") != args.family or meta.get("tasks") != names:
            raise ValueError(
                f"checkpoint {ckpt!r} was made for family {meta.get('family')!r} with tasks {meta.get('tasks')}, "
                f"not {args.family!r} with tasks {names}"
            )
        seed = (meta.get("extra") or {}).get("seed")
        if seed is not None and seed != args.seed:
            raise ValueError(f"checkpoint {ckpt!r} holds the theta* of --seed {seed}, not --seed {args.seed}")
        saved = (meta.get("config") or {}).get("network", {}).get("conditioning")
        if saved != args.conditioning:
            raise ValueError(
                f"checkpoint {ckpt!r} holds a policy trained with conditioning {saved!r}, not --conditioning "
                f"{args.conditioning!r}"
            )
        made_from = (meta.get("extra") or {}).get("inputs_sha256")
        if made_from != _theta_inputs(args):
            raise ValueError(
                f"checkpoint {ckpt!r} was meta-trained from other task parameters or other code than this run's "
                f"({'not recorded' if made_from is None else made_from[:12]} against {_theta_inputs(args)[:12]}); "
                "use another --out"
            )
    except ValueError as e:
        raise ValueError(f"--resume: {e}") from None


def _theta_inputs(args) -> str:
    """sha256 of what theta* is made from beyond its config and seed: the tasks' parameters and
    the code (commit and uncommitted changes). Saved with theta* and required on ``--resume``."""
    import hashlib

    from pgx_jax import provenance

    inputs = {"tasks": _entries(args), "code": provenance.source_state()}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _setup(args, command: str, check=None):
    """Check every pipeline argument (and ``check(config)``, the command's own), load
    ``--resume``'s checkpoint, then (only then) create the output directory and turn on the
    compilation cache. Raises ``ValueError`` on bad input.

    Returns ``(family, config, out, theta or None)``."""

    family, config = _build_run(args)
    if check is not None:
        check(config)
    out = _out_path(args)
    theta = _resume(args, family, config, out)
    out = _make_out(out, args)
    _write_layout(args, out)
    _use_compilation_cache(args)
    return family, config, out, theta


#: the commands that save theta* in ``--out`` and reuse it on ``--resume``
THETA_COMMANDS = ("run", "validate")


def _resume(args, family, config, out: str):
    """With ``--resume``, the finished theta* checkpoint in ``out`` (``ValueError`` if there is
    none or it does not fit); else None."""
    from pgx_jax import checkpoint

    if not getattr(args, "resume", False) or args.command not in THETA_COMMANDS:
        return None
    ckpt = os.path.join(out, "theta_star")
    if not os.path.exists(os.path.join(ckpt, "meta.json")):
        return None  # meta-training resumes from its last saved chunk (_meta_train)
    try:
        theta, saved, _ = checkpoint.load_policy(ckpt, family, config.ppo)
    except ValueError as e:
        raise ValueError(f"--resume: {e}") from None
    if saved != config.meta_ppo():
        raise ValueError(
            f"--resume: the theta* at {ckpt} was meta-trained with another config ({saved.total_env_steps:,} env "
            f"steps, entropy {saved.entropy_coef}) than this run's meta-policy {config.meta_policy!r} asks "
            f"({config.meta_ppo().total_env_steps:,}, entropy {config.meta_ppo().entropy_coef}); use another --out"
        )
    return theta


def _meta_train(args, family, config, out: str, key, bar, store=None):
    """Meta-train theta* with the key policygradex would use, save it to ``out/theta_star``.
    With a ``store`` (:func:`_stage_store`) and a simulator with ``resumable_training``, the
    training's state is saved after every chunk (stage ``meta_train_partial``) and ``--resume``
    continues from the last one. Returns ``(theta, seconds of training, compilation and the
    save excluded)``."""
    import jax

    from pgx_jax import checkpoint
    from pgx_jax.simulators import simulator

    if bar is not None:
        bar.set_description("meta-train")
    k_meta = jax.random.split(key, 4)[0]  # the same key policygradex would use
    t0, compiled = time.perf_counter(), {}
    resumable = store is not None and simulator(family).resumable_training
    start, before = None, 0.0  # training seconds of the interrupted run(s), counted in the total
    if resumable and (saved := store.load("meta_train_partial"))[0]:
        *start, before = saved[1]
        total = config.meta_ppo().num_updates(family.episode_length)
        print(f"pgx-jax: resuming meta-training at update {start[2]} of {total}", file=sys.stderr, flush=True)

    def save(state, parts, done):  # the training's seconds so far: compilation apart, as below
        store.save(
            "meta_train_partial", (state, parts, done, before + time.perf_counter() - t0 - compiled["compile_s"])
        )

    from pgx_jax import compiles

    with _scalar_log(args, out) as log, compiles.stage("meta_train"):
        theta, _ = _train_all_tasks(
            config.meta_ppo(),
            family,
            k_meta,
            show=bar is not None,
            desc="  env steps",
            position=1,
            timings=compiled,
            checkpoint=save if resumable else None,
            start=start,
            progress_fn=log.progress_fn("meta_train"),
        )
    seconds = before + time.perf_counter() - t0 - compiled["compile_s"]  # compilation apart, as every other stage
    path = os.path.join(out, "theta_star")
    checkpoint.save_policy(path, theta, config.meta_ppo(), family, seed=args.seed, inputs_sha256=_theta_inputs(args))
    if resumable:
        store.discard("meta_train_partial")  # theta* is saved: its training state is obsolete
    return theta, seconds


def _cmd_run(args) -> int:
    import jax
    import numpy as np

    from pgx_jax.groups import env_steps_per_task
    from pgx_jax.pipeline import policygradex
    from pgx_jax.results import markdown_table, peak_rss_mb, plot_affinity, write_json

    family, config, out, theta = _setup(args, "run")
    key = jax.random.PRNGKey(args.seed)
    timings = {}
    stages = ["meta-train", "estimate", "cluster", "train groups"]
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(stages), desc="pipeline", unit="stage", position=0)
    if theta is None:
        store = _stage_store(args, out, family)
        theta, timings["meta_train"] = _meta_train(args, family, config, out, key, bar, store)
    if bar is not None:
        bar.update(1)

    def progress(stage):
        if bar is not None and not stage.startswith("estimate"):
            bar.update(1)
        if bar is not None:
            bar.set_description(stage)

    result = policygradex(family, config, key, theta_star=theta, progress=progress)
    if bar is not None:
        bar.update(bar.total - bar.n)
        bar.close()
    timings.update(result.timings)
    names = family.task_names
    group_of = {i: g for g, members in enumerate(result.groups) for i in members}
    write_json(os.path.join(out, "result.json"), _run_report(args, family, config, result, timings))
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
    with _scalar_log(args, out) as log:
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
    (:func:`pgx_jax.checkpoint.save_groups`), with each task's return and the evaluation's key
    and episodes, so a reloaded policy re-evaluates to the same return."""
    from pgx_jax.checkpoint import save_groups

    names = family.task_names
    index = save_groups(
        out,
        result.group_params,
        result.groups,
        result.group_config,
        family,
        _entries(args),
        seed=args.seed,
        layout=getattr(args, "layout", None),
        per_task_return={names[i]: float(result.per_task_return[i]) for i in range(family.n_tasks)},
        evaluation={"key": [int(x) for x in result.eval_key], "episodes": config.eval_episodes},
    )
    print(f"wrote {index} and {out}/groups/ (one policy per group; pgx_jax.load_groups({out!r}) reloads them)")


def _run_report(args, family, config, result, timings) -> dict:
    """``result.json`` of ``pgx-jax run``."""
    import numpy as np

    from pgx_jax.results import machine, peak_rss_mb

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
        "compiles": _compiles(),
        "flops": result.flops,
        "solve": result.solve_info,
        "peak_rss_mb": peak_rss_mb(),
        "config": config.to_dict(),
        "seed": args.seed,
        "machine": machine(),
        "versions": _versions(),
        "distributed": _distributed_summary(),
    }


def _compiles() -> dict | None:
    """The command's compiling so far (:func:`pgx_jax.compiles.summary`): seconds by stage and
    part, programs, cache hits, its share of the wall-clock."""
    from pgx_jax import compiles

    return compiles.summary()


def _stage_bar(args, stages: list[str]):
    """A per-stage progress bar (None with ``--no-progress``) and the ``progress`` callback the
    library functions take."""
    if args.no_progress:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=len(stages), desc=stages[0], unit="stage", position=0)

    def progress(stage):
        if stage in stages and stages.index(stage) > bar.n:
            bar.update(stages.index(stage) - bar.n)
        bar.set_description(stage)

    return bar, progress


def _cmd_validate(args) -> int:
    import jax

    from pgx_jax.hessian import HessianConfig
    from pgx_jax.results import markdown_table, write_json
    from pgx_jax.validate import ValidateConfig, validate

    hessian = HessianConfig(probes=args.hessian_probes, subsets=args.hessian_subsets) if args.hessian else None
    vconfig = ValidateConfig(
        truth=args.truth, finetune_fraction=args.finetune_fraction, replicates=args.replicates, hessian=hessian
    )
    family, config, out, theta = _setup(args, "validate", check=vconfig.check)
    key = jax.random.PRNGKey(args.seed)
    stages = ["meta-train", "estimate", *(f"truth: {k}" for k in vconfig.kinds), "KL", "first-order check"]
    stages += ["hessian"] if hessian else []
    bar, progress = _stage_bar(args, [*stages, "count FLOPs"])
    timings = {}
    store = _stage_store(args, out, family)
    try:
        if theta is None:
            theta, timings["meta_train"] = _meta_train(args, family, config, out, key, bar, store)
        report = validate(
            family,
            config,
            key,
            vconfig=vconfig,
            theta_star=theta,
            progress=progress,
            meta_train_s=timings.get("meta_train"),
            store=store,
        )
    finally:
        if bar is not None:
            bar.close()
    report.pop("theta_star")
    report["timings"] = {**timings, **report["timings"]}
    report.update(seed=args.seed, budget=args.budget, versions=_versions(), distributed=_distributed_summary())
    report["compiles"] = _compiles()
    write_json(os.path.join(out, "validation.json"), report)
    written = ["validation.json", *_validation_plots(out, family, config, report)]
    print(markdown_table(["check", "value"], validation_rows(report)), end="")
    print(f"wrote {out}/" + ", ".join(written))
    return 0


def _validation_plots(out: str, family, config, report) -> list[str]:
    """The figures of ``pgx-jax validate``; returns their file names."""
    from pgx_jax.results import plot_affinity, plot_approx_error, plot_estimate_vs_truth

    names = family.task_names
    plot_approx_error(
        os.path.join(out, "approx_error.png"), report["approx_error"], f"{family.name}: first-order error"
    )
    written = ["approx_error.png"]
    for kind, truth in report["truths"].items():
        main = truth["by_evaluator"][config.evaluator]
        plot_estimate_vs_truth(
            os.path.join(out, f"truth_scatter_{kind}.png"),
            main["estimated_scores"],
            truth["true_scores"],
            report["subset_masks"],
            names,
            f"{family.name}: {config.evaluator} estimate vs {kind} truth",
        )
        plot_affinity(
            os.path.join(out, f"affinity_true_{kind}.png"),
            truth["true_affinity"],
            truth["true_groups"],
            names,
            f"{family.name}: true affinity ({kind})",
        )
        written += [f"truth_scatter_{kind}.png", f"affinity_true_{kind}.png"]
    main = report["truth"]["by_evaluator"][config.evaluator]
    plot_affinity(
        os.path.join(out, "affinity_estimated.png"),
        main["estimated_affinity"],
        main["estimated_groups"],
        names,
        f"{family.name}: estimated affinity ({config.evaluator})",
    )
    return [*written, "affinity_estimated.png"]


def validation_rows(report) -> list[list]:
    """The rows of ``pgx-jax validate``'s summary table (also used by the benchmarks)."""
    rows = _estimate_rows(report)
    for kind, t in report["truths"].items():
        rows += _truth_rows(kind, t, report["speedup"]["by_truth"][kind])
    return rows


def _estimate_rows(report) -> list[list]:
    """The first-order check and the estimate's own diagnostics."""
    rows = [
        [
            f"approx. error at {float(r) * 100:g}%, of the change (surrogate / random)",
            f"{100 * a['surrogate']:.3f}% / {100 * a['random']:.3f}%",
        ]
        for r, a in report["approx_error"].items()
    ]
    a1 = report["approx_error"].get("0.01")
    if a1 is not None:
        rows.append(
            ["approx. error at 1%, of |log pi| (paper's ratio; surrogate)", f"{100 * a1['surrogate_vs_logp']:.4f}%"]
        )
    est = report["estimate"]
    rows.append(["KL(theta* || estimated theta_S), mean [min, max]", _kl_text(est["kl"])])
    if est.get("step_relative") is not None:
        rows.append(
            ["||theta_S - theta*|| / ||theta*|| of the estimate, mean [min, max]", _kl_text(est["step_relative"])]
        )
    if est["rollout_scores_se"] is not None:
        rows.append(["standard error of a rollout estimate f(S, i), mean", est["rollout_scores_se"]["mean"]])
    return rows + _hessian_rows(report.get("hessian"))


def _hessian_rows(h) -> list[list]:
    """Per objective: the trace at theta* and at theta_S, the bound against the loss range and the observed gap."""
    if h is None:
        return []
    rows = []
    for name, o in h["by_objective"].items():
        t = o["traces"]
        rows.append(
            [
                f"[hessian, {name}] Tr(H) at theta* / at theta_S (sum over layers, {h['subsets_analysed']} subsets)",
                f"{t['theta_star']['total']:.4g} / {t['estimated']['total']:.4g}",
            ]
        )
        g = o["observed_gap"]
        rows.append(
            [
                f"[hessian, {name}] bound / observed gap +- SE / loss range C (bound below C, below the gap)",
                f"{o['bound']['mean']:.4g} / {g['mean']:.4g} +- {g['se']:.2g} / {o['loss_range']['mean']:.4g} "
                f"({100 * o['below_loss_range']:.0f}%, {100 * o['below_observed_gap']:.0f}% of subsets)",
            ]
        )
        shown = "n/a" if o["bound_over_gap"] is None else f"{o['bound_over_gap']:.3g}"
        rows.append(
            [
                f"[hessian, {name}] gaps distinguishable from 0 (|gap| > 2 SE); bound / mean gap",
                f"{100 * o['gaps_distinguishable']:.0f}% of subsets; "
                + (shown if o["bound_over_gap"] is not None else "none (no positive gap distinguishable from 0)"),
            ]
        )
    return rows


def _truth_rows(kind: str, t: dict, sp: dict) -> list[list]:
    """One truth: its noise, its agreement with itself, the planted groups and each evaluator, the speedup."""
    rows = []
    if t["true_scores_se"] is not None:
        rows.append(
            [f"[{kind}] standard error of a true f(S, i) over evaluation episodes, mean", t["true_scores_se"]["mean"]]
        )
    if "kl" in t:
        rows.append([f"[{kind}] KL(theta* || trained theta_S), mean [min, max]", _kl_text(t["kl"])])
    if t["self_agreement"] is not None:
        sa = t["self_agreement"]
        rows.append(
            [
                f"[{kind}] truth vs its replicate: Spearman within task (null sd) / NMI (chance) / AMI",
                f"{sa['spearman_within_task']:.3f} ({sa['spearman_within_task_null_sd']:.2f}) / "
                f"{sa['nmi']:.3f} ({sa['nmi_chance']:.2f}) / {sa['ami']:.3f}",
            ]
        )
        rows.append(
            [
                f"[{kind}] training noise of a true f(S, i) (replicates) / its spread within a task",
                f"{sa['score_noise_sd']:.3g} / {t['within_task_spread']:.3g}",
            ]
        )
    if t["nmi_true_vs_planted"] is not None:
        rows.append(
            [
                f"[{kind}] true groups vs planted: NMI / AMI",
                f"{t['nmi_true_vs_planted']:.3f} / {t['ami_true_vs_planted']:.3f}",
            ]
        )
    for name, e in t["by_evaluator"].items():
        rows.append(
            [
                f"[{kind}] Spearman all pairs / within task, null sd, tasks ({name})",
                f"{e['spearman']:.3f} / {e['spearman_within_task']:.3f}, {e['spearman_within_task_null_sd']:.2f}, "
                f"{e['tasks_used']} of {e['tasks_total']}",
            ]
        )
        rows.append(
            [
                f"[{kind}] estimated vs true groups, k={e['k']} ({name}): NMI (chance) / AMI",
                f"{e['nmi']:.3f} ({e['nmi_chance']:.2f}) / {e['ami']:.3f}",
            ]
        )
    rows.append(
        [f"[{kind}] speedup in FLOPs / wall-clock (compile excluded)", f"{_num(sp['flops'])} / {_num(sp['wall'])}"]
    )
    if sp.get("flops_with_meta_training") is not None or sp.get("wall_with_meta_training") is not None:
        rows.append(
            [
                f"[{kind}] speedup with meta-training counted, FLOPs / wall-clock",
                f"{_num(sp.get('flops_with_meta_training'))} / {_num(sp.get('wall_with_meta_training'))}",
            ]
        )
    return rows


def _kl_text(kl) -> str:
    return f"{kl['mean']:.3g} [{kl['min']:.3g}, {kl['max']:.3g}]"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.1f}x"


def _cmd_compare(args) -> int:

    from pgx_jax.compare import GROUPINGS, compare, comparison_table, equal_total_config, ill_conditioned_note
    from pgx_jax.families import make_family
    from pgx_jax.results import markdown_table, write_json
    from pgx_jax.validate import ValidateConfig

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
            equal_total_config(config, make_family(args.family, _entries(args)))

    family, config, out, _ = _setup(args, "compare", check=check)

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
        store=_stage_store(args, out, family),
        equal_total=args.equal_total,
        save_policies=os.path.join(out, "policies") if args.save_policies else None,
        tasks=_entries(args),
    )
    report["versions"] = _versions()
    report["distributed"] = _distributed_summary()
    report["compiles"] = _compiles()
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


def _cmd_meta_rl(args) -> int:
    from pgx_jax import meta_rl
    from pgx_jax.families import draw_tasks, load_tasks_file, meta_rl_families
    from pgx_jax.maml import maml_config
    from pgx_jax.results import markdown_table, write_json
    from pgx_jax.validate import ValidateConfig

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
    sources = _entries(args)
    if args.test_tasks_file is not None:
        tests = load_tasks_file(args.family, args.test_tasks_file)
    else:
        tests = draw_tasks(args.family, sources, args.test_tasks, args.test_seed)
    true_groups = None if args.true_groups is None else _read_true_groups(args.true_groups, len(sources))
    family, config, out, _ = _setup(args, "meta-rl")
    if family.n_tasks != len(sources):
        raise AssertionError("source tasks and the built family disagree")

    def progress(msg):
        if not args.no_progress:
            print(f"[meta-rl] {msg}", file=sys.stderr, flush=True)

    def save(report):  # after every seed: an interrupted run keeps the seeds it finished
        report["versions"] = _versions()
        report["distributed"] = _distributed_summary()
        report["compiles"] = _compiles()
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
        store=_stage_store(args, out, family),
        host_workers=args.host_workers,
    )
    header, rows = meta_rl.table(report)
    print(markdown_table(header, rows), end="")
    print(f"wrote {out}/meta_rl.json and meta_rl.png")
    return 0


def _read_true_groups(path: str, n: int) -> dict[int, list[list[int]]]:
    """``--true-groups``: a JSON object {seed: groups}, each a partition of the n source tasks."""
    from pgx_jax.groups import group_masks

    try:
        with open(path) as f:
            raw = json.load(f)
        out = {int(seed): [[int(i) for i in g] for g in groups] for seed, groups in raw.items()}
    except FileNotFoundError:
        raise ValueError(f"--true-groups {path!r} does not exist") from None
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"--true-groups {path!r}: expected a JSON object {{seed: [[task, ...], ...]}} ({e})") from None
    for seed, groups in out.items():
        try:
            group_masks(groups, n)
        except (ValueError, IndexError) as e:
            raise ValueError(f"--true-groups {path!r}, seed {seed}: {e}") from None
    return out


def _distributed_summary() -> dict:
    from pgx_jax import distributed

    return distributed.summary()


def _versions():
    from pgx_jax import checkpoint

    return checkpoint.versions()


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as e:
        return _fail(str(e))
    from pgx_jax import checkpoint

    checkpoint.source_commit()  # the code this run starts with (cached; recorded in its results)
    if getattr(args, "no_compile_cache", False):  # before anything compiles (JAX decides once)
        _use_compilation_cache(args)
    commands = {
        "families": _cmd_families,
        "run": _cmd_run,
        "validate": _cmd_validate,
        "compare": _cmd_compare,
        "meta-rl": _cmd_meta_rl,
    }
    try:
        _join_cluster(args)
    except ValueError as e:
        return _fail(str(e))
    except RuntimeError as e:
        return _fail(str(e), RUN_FAILED)
    try:  # bad input is refused before anything compiles; a non-finite training stops the command
        if args.command != "families":
            _resolve_out(args)
            _precheck(args)
        from pgx_jax import compiles

        with compiles.counting() as counted:  # the command's compiling, in its result file too
            rc = commands.get(args.command, _cmd_train)(args)
        if args.command != "families":
            print(counted.line(), file=sys.stderr)
        return rc
    except ValueError as e:
        return _fail(str(e))
    except FloatingPointError as e:
        return _fail(str(e), RUN_FAILED)
    except Exception as e:
        if _lost_peer(e):  # a peer died or left a multi-process run: one clear line, not a hang
            return _fail(f"multi-process run failed (process {_process_index()}): {_first_line(e)}", RUN_FAILED)
        raise
    finally:
        _stop_workers()


def _stop_workers() -> None:
    """Stop the host environments' worker processes (``--host-workers``) the command started."""
    import sys

    if "pgx_jax.families.host_workers" in sys.modules:
        sys.modules["pgx_jax.families.host_workers"].close_all()


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else repr(e)


def _process_index() -> int:
    import jax

    return jax.process_index()


def _lost_peer(e: BaseException) -> bool:
    """Whether ``e`` is JAX's runtime failing a collective of a multi-process run, or another
    process's failure reported to this one."""
    import jax

    from pgx_jax.distributed import PeerFailed

    return jax.process_count() > 1 and isinstance(e, (jax.errors.JaxRuntimeError, PeerFailed))


if __name__ == "__main__":
    sys.exit(main())
