"""Before any work: every argument checked against the family and the config (refusals name the bad
value and what is allowed), the family and the pipeline config built from the arguments,
``--resume`` checked and the output directory made (:func:`setup`).
"""

from __future__ import annotations

import json
import os
import sys

from pgx_jax.cli.args import entries_of
from pgx_jax.cli.outputs import THETA_COMMANDS, check_out, make_out, out_path, theta_inputs, write_layout
from pgx_jax.cli.running import use_compilation_cache


def network_with(conditioning: str, network=None):
    """``network`` (default ``NetworkConfig()``) with this conditioning; ``ValueError`` naming
    ``--conditioning`` and a bad value."""
    import dataclasses

    from pgx_jax.core.config import NetworkConfig

    try:
        return dataclasses.replace(network or NetworkConfig(), conditioning=conditioning)
    except ValueError as e:
        raise ValueError(f"--conditioning: {e}") from None


#: exit statuses: bad input (refused before any work, as argparse refuses a usage error) and a
#: failure while running (a non-finite training, a cluster that does not form or loses a process)
USAGE_ERROR, RUN_FAILED = 2, 1


def fail(msg: str, code: int = USAGE_ERROR) -> int:
    print(f"pgx-jax: error: {msg}", file=sys.stderr)
    return code


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


def family_of(args):
    """The command's family, stepped in ``--host-workers`` processes where asked."""
    from pgx_jax.families import make_family, with_workers

    family = make_family(args.family, entries_of(args))
    return with_workers(family, args.host_workers) if getattr(args, "host_workers", 0) else family


def build_run(args):
    """Validate every ``run`` argument and build (family, PipelineConfig) without compiling."""
    import dataclasses

    from pgx_jax.core.config import with_overrides
    from pgx_jax.estimation.affinity import AffinityConfig
    from pgx_jax.experiments.config import pipeline_config

    family = family_of(args)
    groups = _parse_groups(args.groups, family.n_tasks)
    affinity = AffinityConfig(subsets=args.subsets, subset_size=args.subset_size)
    network_with(args.conditioning)  # names --conditioning if it is bad, before pipeline_config
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
    config = dataclasses.replace(config, ppo=with_num_envs(args, config.ppo, family.n_tasks))
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

    from pgx_jax.core.config import budget_config

    ppo = with_num_envs(args, budget_config(args.budget, args.family, n), n)
    ppo = dataclasses.replace(ppo, network=network_with(args.conditioning, ppo.network))
    if args.command == "train":
        set_ppo(args, ppo)
        return
    from pgx_jax.core.config import with_overrides
    from pgx_jax.estimation.surrogate import SurrogateConfig
    from pgx_jax.experiments.config import PipelineConfig, budget_features

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


def set_ppo(args, ppo):
    """``ppo`` with ``train``'s ``--set ppo.FIELD=VALUE`` assignments (``ValueError`` for any other path)."""
    from pgx_jax.core.config import with_overrides

    return with_overrides(ppo, args.set, _set_reserved(args, "ppo."), root="ppo.")


def with_num_envs(args, ppo, n: int):
    """``ppo`` with ``--num-envs`` where given: a positive multiple of the n tasks (``ValueError``
    naming it otherwise; the minibatch split is checked with the family's episode length)."""
    import dataclasses

    v = getattr(args, "num_envs", None)
    if v is None:
        return ppo
    if v < 1 or v % n:
        raise ValueError(f"--num-envs must be a positive multiple of the number of tasks {n}, got {v}")
    return dataclasses.replace(ppo, num_envs=v)


def precheck(args) -> None:
    """Every check that needs no environment, run before any is built (building one compiles):
    bad input fails here in well under a second, naming the value and what is allowed, and
    nothing is written. The catalogue of what is refused: docs/bad_input.md."""
    from pgx_jax.estimation.affinity import AffinityConfig

    seed = getattr(args, "seed", None)
    if seed is not None and seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    entries = entries_of(args)  # unknown family, malformed tasks file or --layout
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
    out = out_path(args)
    check_out(out, args)
    if getattr(args, "resume", False):
        _check_resume(args, entries, out)


def _check_resume(args, entries, out: str) -> None:
    """``--resume``: a finished theta* checkpoint in ``out`` of this family, tasks and
    conditioning (its meta.json read alone; the parameters are loaded, and checked against the
    network, once the family is built), or finished stages; every file in ``out/stages`` a
    stage (:func:`pgx_jax.runtime.stages.saved_stages`: never a pickle)."""
    from pgx_jax.rl import checkpoint
    from pgx_jax.runtime.stages import saved_stages

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
        if made_from != theta_inputs(args):
            raise ValueError(
                f"checkpoint {ckpt!r} was meta-trained from other task parameters or other code than this run's "
                f"({'not recorded' if made_from is None else made_from[:12]} against {theta_inputs(args)[:12]}); "
                "use another --out"
            )
    except ValueError as e:
        raise ValueError(f"--resume: {e}") from None


def setup(args, command: str, check=None):
    """Check every pipeline argument (and ``check(config)``, the command's own), load
    ``--resume``'s checkpoint, then (only then) create the output directory and turn on the
    compilation cache. Raises ``ValueError`` on bad input.

    Returns ``(family, config, out, theta or None)``."""

    family, config = build_run(args)
    if check is not None:
        check(config)
    out = out_path(args)
    theta = _resume(args, family, config, out)
    out = make_out(out, args)
    write_layout(args, out)
    use_compilation_cache(args)
    return family, config, out, theta


def _resume(args, family, config, out: str):
    """With ``--resume``, the finished theta* checkpoint in ``out`` (``ValueError`` if there is
    none or it does not fit); else None."""
    from pgx_jax.rl import checkpoint

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


def read_true_groups(path: str, n: int) -> dict[int, list[list[int]]]:
    """``--true-groups``: a JSON object {seed: groups}, each a partition of the n source tasks."""
    from pgx_jax.experiments.groups import group_masks

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
