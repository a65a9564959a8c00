"""A command's output directory: where it goes (``--out``, ``runs/<name>``, the ``latest`` link), what
a finished run leaves there, the stage store that ``--resume`` reads and the scalar log.
"""

from __future__ import annotations

import json
import os
import sys

from pgx_jax.cli.args import entries_of


def run_inputs(args) -> dict[str, str]:
    """What every process of a run must share, as text: the options (without ``--process-id``),
    the tasks' parameters and the other input files' bytes (not their paths: two processes in
    different directories may read different files under one name), the code (commit and
    uncommitted diff) and the package versions (:func:`pgx_jax.runtime.distributed.check_agree` names
    the first that differs)."""
    import hashlib
    import json

    from pgx_jax.rl import checkpoint
    from pgx_jax.runtime import provenance

    own = ("process_id", "no_progress", "no_compile_cache", "host_workers")  # a process's own choice, not its result's
    # paths name files whose bytes are compared below; only process 0 writes into --out
    paths = ("out", "tasks_file", "test_tasks_file", "true_groups")
    argv = [f"{k}={v}" for k, v in sorted(vars(args).items()) if k not in own + paths]
    try:
        tasks = json.dumps(entries_of(args), sort_keys=True, default=str)
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


def make_out(out: str, args) -> str:
    """Make the output directory (process 0 alone; the others never write) and return it. A
    default one (no ``--out``) is claimed atomically (``os.mkdir``; where another run took the
    name since :func:`resolve_out` chose it, the next free ``-2``, ``-3`` ...) and becomes
    ``runs/latest``; with ``--overwrite`` the earlier run's outputs are removed first (named on
    stderr; :func:`check_out` refused a non-empty directory that holds no run)."""
    from pgx_jax.runtime.distributed import is_main

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
        link_latest(out)
        return out
    os.makedirs(out, exist_ok=True)
    if getattr(args, "overwrite", False) and not getattr(args, "resume", False) and _holds_a_run(out):
        removed = _clear_outputs(out)
        if removed:
            print(f"--overwrite: removed the earlier run's {', '.join(removed)} from {out}", file=sys.stderr)
    return out


def stage_store(args, out: str, family):
    """The command's :class:`pgx_jax.runtime.stages.StageStore` in ``out``: fingerprinted by every
    option that decides a result (not ``--out``, ``--resume``, progress or the cluster's
    address) and the tasks; off in a multi-process run (its processes must agree on what they
    reuse, and need not share a file system)."""
    import hashlib

    import jax

    from pgx_jax.runtime import provenance
    from pgx_jax.runtime.stages import StageStore

    ignore = {"out", "resume", "overwrite", "out_is_default", "no_progress", "no_compile_cache", "coordinator", "log"}
    ignore |= {"num_processes", "process_id"}
    ignore |= {"distributed_timeout", "host_workers"}  # the same results whatever the number of workers
    fingerprint = {k: v for k, v in sorted(vars(args).items()) if k not in ignore}
    fingerprint["tasks"] = entries_of(args)  # every parameter, not the names alone
    for name in ("test_tasks_file", "true_groups"):  # files whose content decides a result
        path = getattr(args, name, None)
        if path is not None and os.path.isfile(path):
            with open(path, "rb") as f:
                fingerprint[f"{name}_sha256"] = hashlib.sha256(f.read()).hexdigest()
    fingerprint["code"] = provenance.source_state()  # another commit, or other uncommitted edits: nothing reused
    resume = bool(getattr(args, "resume", False))
    return StageStore(out, fingerprint, resume=resume, enabled=jax.process_count() == 1)


def write_layout(args, out: str) -> None:
    """With ``--layout random:SEED``, the drawn tasks (with their planted groups) as
    ``out/tasks.json``, a tasks file that ``--tasks-file`` reads back (process 0 writes)."""
    from pgx_jax.families import parse_layout
    from pgx_jax.runtime.distributed import is_main
    from pgx_jax.runtime.results import write_json

    if parse_layout(getattr(args, "layout", None)) is not None and is_main():
        write_json(os.path.join(out, "tasks.json"), entries_of(args))


def out_path(args) -> str:
    """The command's output directory: ``--out`` (:func:`resolve_out` fills it in first)."""
    return args.out or os.path.join("runs", f"{args.command}-{args.family}")


def scalar_log(args, out: str):
    """The run's :class:`pgx_jax.runtime.results.ScalarLog`: ``out/tensorboard`` with ``--log tensorboard``."""
    from pgx_jax.runtime.results import ScalarLog

    return ScalarLog(os.path.join(out, "tensorboard") if getattr(args, "log", "none") == "tensorboard" else None)


#: where the default output directories go, and the link to the newest one
RUNS = "runs"


def resolve_out(args) -> None:
    """Fix ``args.out`` once, before any check reads it. Without ``--out``: a new directory
    ``runs/<command>-<family>[-s<seed>]-<UTC time>`` (``-2``, ``-3`` ... where that exists),
    named by process 0 for every process; with ``--resume`` and no ``--out``: the run that
    ``runs/latest`` points to, which must be one of this command and family."""
    if args.out is not None:
        return
    from pgx_jax.runtime.distributed import from_main

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


def link_latest(out: str) -> None:
    """Point ``runs/latest`` at a default output directory ``out`` (process 0; replaced
    atomically; skipped where the file system has no symbolic links)."""
    from pgx_jax.runtime.distributed import is_main

    if not is_main():
        return
    tmp = os.path.join(RUNS, f".latest-{os.getpid()}")
    try:
        os.symlink(os.path.basename(out), tmp)
        os.replace(tmp, os.path.join(RUNS, "latest"))
    except OSError:
        if os.path.lexists(tmp):
            os.remove(tmp)


def check_out(out: str, args=None) -> None:
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


def theta_inputs(args) -> str:
    """sha256 of what theta* is made from beyond its config and seed: the tasks' parameters and
    the code (commit and uncommitted changes). Saved with theta* and required on ``--resume``."""
    import hashlib

    from pgx_jax.runtime import provenance

    inputs = {"tasks": entries_of(args), "code": provenance.source_state()}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


#: the commands that save theta* in ``--out`` and reuse it on ``--resume``
THETA_COMMANDS = ("run", "validate")
