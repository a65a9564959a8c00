"""The command line's arguments: one parser, each option declared once and shared by the commands
that take it, and the defaults of ``run`` and ``meta-rl``.
"""

from __future__ import annotations

import argparse

#: What ``pgx-jax run`` does with no options: task-agnostic pendulum-physics (``conditioning
#: none``: one policy cannot balance pendulums whose motors are wired forward and reversed, so
#: grouping matters), theta* stopped at 2% of meta-training (``--meta-policy auto``), the
#: ``alignment`` evaluator and k by the eigengap: the estimator a development / test protocol
#: chose on randomly drawn layouts other than this one (benchmarks/generalisation.py; figures in
#: benchmarks/RESULTS.md). The other commands keep the library's defaults.
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


class UsageError(ValueError):
    """A command line argparse refuses (an unknown option, a value outside its choices)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals raised as :class:`UsageError` so that ``main`` reports them
    as every other bad input: one line, exit status 2, nothing written."""

    def error(self, message: str):
        raise UsageError(message)


def _version_arg(p: argparse.ArgumentParser) -> None:
    from pgx_jax import __version__
    from pgx_jax.runtime import provenance

    version = f"pgx-jax {__version__} ({provenance.source_state()['describe']})"
    p.add_argument("--version", action="version", version=version, help="the version and the commit, then exit")


def build_parser() -> argparse.ArgumentParser:
    from pgx_jax.experiments.groupings import GROUPINGS

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
    from pgx_jax.experiments.meta_rl import DEFAULT_GROUPINGS, GROUPINGS, ROUTING
    from pgx_jax.families import meta_rl_families

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
    from pgx_jax.core.config import BUDGETS
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
    from pgx_jax.runtime.distributed import DEFAULT_TIMEOUT_S

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


def _truth_args(p: argparse.ArgumentParser, truth_help: str) -> None:
    """The options of the truth (``validate``, ``compare`` and ``meta-rl``)."""
    from pgx_jax.experiments.config import TRUTHS

    p.add_argument("--truth", default="full", choices=TRUTHS, help=truth_help)
    p.add_argument(
        "--finetune-fraction",
        type=float,
        default=0.1,
        help="env steps of each subset's real fine-tuning, as a fraction of the full meta-training budget (default "
        "0.1; with --meta-policy early-F, theta* itself had the fraction F)",
    )


def _conditioning_arg(p: argparse.ArgumentParser, default: str) -> None:
    from pgx_jax.core.config import CONDITIONINGS

    p.add_argument(
        "--conditioning",
        default=default,
        choices=CONDITIONINGS,
        help="what the policy is told about the task: 'task_id' (the one-hot id is part of its input) or 'none' "
        f"(the environment observation alone, as in the paper's meta-RL experiments); default {default}",
    )


def _pipeline_args(
    p: argparse.ArgumentParser, command: str, seed: bool = True, resume: bool = False, defaults=None
) -> None:
    """The arguments ``run``, ``validate`` and ``compare`` share (the pipeline's config);
    ``defaults`` overrides the library's (``family``, ``conditioning``, ``groups``)."""
    from pgx_jax.estimation.evaluators import EVALUATORS

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
    from pgx_jax.estimation.cluster import K_RULES, METHODS
    from pgx_jax.estimation.features import PARAM_SETS
    from pgx_jax.estimation.surrogate import SOLVERS, STEPS

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


def entries_of(args) -> list[dict]:
    """The command's validated task entries: ``--tasks-file``, ``--layout`` or the family's own
    (``ValueError`` naming a bad file, layout, or both given)."""
    from pgx_jax.families import task_entries

    return task_entries(args.family, args.tasks_file, getattr(args, "layout", None))


#: what ``--log`` can write
LOGS = ("none", "tensorboard")
