"""Command-line interface: ``pgx-jax run``, ``validate``, ``compare``, ``meta-rl``, ``train`` and ``families``.

Every argument is checked before anything is compiled; outputs are written atomically.
"""

from __future__ import annotations

import sys

from pgx_jax.cli.args import UsageError, build_parser
from pgx_jax.cli.compare import _cmd_compare
from pgx_jax.cli.meta_rl import _cmd_meta_rl
from pgx_jax.cli.outputs import resolve_out
from pgx_jax.cli.prepare import RUN_FAILED, USAGE_ERROR, _fail, _precheck
from pgx_jax.cli.run import _cmd_run
from pgx_jax.cli.running import (
    _first_line,
    _join_cluster,
    _lost_peer,
    _process_index,
    _stop_workers,
    use_compilation_cache,
)
from pgx_jax.cli.train import _cmd_families, _cmd_train
from pgx_jax.cli.validate import _cmd_validate

__all__ = ["main", "USAGE_ERROR", "RUN_FAILED"]


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return _fail(str(e))
    from pgx_jax.rl import checkpoint

    checkpoint.source_commit()  # the code this run starts with (cached; recorded in its results)
    if getattr(args, "no_compile_cache", False):  # before anything compiles (JAX decides once)
        use_compilation_cache(args)
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
            resolve_out(args)
            _precheck(args)
        from pgx_jax.runtime import compiles

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


if __name__ == "__main__":
    sys.exit(main())
