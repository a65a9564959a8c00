"""How far a reader walks to follow one parameter through a command (issue 33).

Runs ``pgx-jax compare`` (or another command) at the smoke budget in this process under
``sys.setprofile`` and records every call of a pgx_jax function that receives the pipeline's
configuration (an argument that is a ``PipelineConfig``, the object every option of the estimate
travels in) or one of its parts (the ``PPOConfig``, ``FeatureConfig``, ``SurrogateConfig``,
``AffinityConfig`` it holds). From that sequence, in call order:

- ``files``: the distinct pgx_jax source files such a call enters;
- ``moves``: how often the next function a reader meets (each read once, at its first call) is in
  another file; ``moves_all_calls`` counts along every call, loops included;
- ``functions``: the distinct functions;
- ``lines_of_files_entered``, ``largest_file_entered``: the size of what those files hold.

The same command on two checkouts (``PYTHONPATH=<checkout>``) compares their layouts.
Writes benchmarks/results/code_walk_<label>.json and .md.
Usage: [PYTHONPATH=CHECKOUT] python benchmarks/code_walk.py --label after [-- the command and its arguments]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
COMMAND = ["compare", "--family", "cartpole-physics", "--budget", "smoke", "--groups", "2", "--seeds", "1"]
COMMAND += ["--random-draws", "2", "--no-progress"]
CONFIG_TYPES = ("PipelineConfig", "PPOConfig", "FeatureConfig", "SurrogateConfig", "AffinityConfig")


def walk(argv: list[str], package_dir: str) -> list[tuple[str, str]]:
    """(file relative to the package's parent, function) of every call that receives a config."""
    from pgx_jax.cli import main

    root = os.path.dirname(package_dir) + os.sep
    calls = []

    def profile(frame, event, arg):
        if event != "call" or not frame.f_code.co_filename.startswith(package_dir):
            return
        code = frame.f_code
        args = [frame.f_locals.get(n) for n in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]]
        if any(dataclasses.is_dataclass(a) and type(a).__name__ in CONFIG_TYPES for a in args):
            calls.append((code.co_filename[len(root) :], code.co_qualname))

    sys.setprofile(profile)
    try:
        rc = main(argv)
    finally:
        sys.setprofile(None)
    if rc != 0:
        raise SystemExit(f"the command failed with status {rc}")
    return calls


def summary(calls: list[tuple[str, str]]) -> dict:
    """The walk as a reader takes it: each function read once, at its first call; ``moves`` the
    file changes along that order (``moves_all_calls`` along every call, loops included)."""
    first = list(dict.fromkeys(calls))
    files = sorted({f for f, _ in calls})
    moves = sum(1 for a, b in zip(first, first[1:], strict=False) if a[0] != b[0])
    every = sum(1 for a, b in zip(calls, calls[1:], strict=False) if a[0] != b[0])
    return {
        "files": len(files),
        "moves": moves,
        "functions": len(first),
        "moves_all_calls": every,
        "calls": len(calls),
        "file_list": files,
        "walk": [f"{f}:{q}" for f, q in first],
    }


def _imported(new: str, old: str):
    """``new`` (module:name) of the layered package, or ``old`` of the flat one before issue 33
    (tried first: an editable install would otherwise serve the new path from another checkout)."""
    import importlib

    for spec in (old, new):
        module, _, name = spec.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError:
            continue
    raise ImportError(f"neither {new} nor {old}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--label", required=True, help="names the result files (e.g. before, after)")
    p.add_argument("extra", nargs="*", help="the command and its arguments (default: compare at the smoke budget)")
    parse_benchmark_args = _imported(
        "pgx_jax.runtime.results:parse_benchmark_args", "pgx_jax.results:parse_benchmark_args"
    )
    args = parse_benchmark_args(p)
    source_state = _imported("pgx_jax.runtime.provenance:source_state", "pgx_jax.provenance:source_state")
    import pgx_jax

    package_dir = os.path.dirname(os.path.abspath(pgx_jax.__file__))
    argv = (args.extra or COMMAND) + ["--out", tempfile.mkdtemp(prefix="pgx_code_walk_")]
    report = {"command": ["pgx-jax", *argv[:-2]], "source": source_state(), **summary(walk(argv, package_dir))}
    sizes = {
        f: len(open(os.path.join(os.path.dirname(package_dir), f)).read().splitlines()) for f in report["file_list"]
    }
    report["lines_of_files_entered"] = sum(sizes.values())  # what a reader scans to follow the walk
    report["largest_file_entered"] = max(sizes.items(), key=lambda kv: kv[1])
    os.makedirs(HERE, exist_ok=True)
    with open(os.path.join(HERE, f"code_walk_{args.label}.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k not in ("file_list", "walk")}, indent=1))


if __name__ == "__main__":
    main()
