"""Command-line interface: ``pgx-jax run``, ``validate``, ``compare``, ``meta-rl``, ``train`` and ``families``.

Every argument is checked before anything is compiled; outputs are written atomically.
"""

from __future__ import annotations

import sys

from pgx_jax.cli.args import UsageError, build_parser
from pgx_jax.cli.compare import cmd_compare
from pgx_jax.cli.meta_rl import cmd_meta_rl
from pgx_jax.cli.outputs import resolve_out
from pgx_jax.cli.prepare import RUN_FAILED, USAGE_ERROR, fail, precheck
from pgx_jax.cli.run import cmd_run
from pgx_jax.cli.running import (
    first_line,
    join_cluster,
    lost_peer,
    process_index,
    stop_workers,
    use_compilation_cache,
)
from pgx_jax.cli.train import cmd_families, cmd_train
from pgx_jax.cli.validate import cmd_validate

__all__ = ["main", "USAGE_ERROR", "RUN_FAILED"]


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return fail(str(e))
    from pgx_jax.rl import checkpoint

    checkpoint.source_commit()  # the code this run starts with (cached; recorded in its results)
    if getattr(args, "no_compile_cache", False):  # before anything compiles (JAX decides once)
        use_compilation_cache(args)
    commands = {
        "families": cmd_families,
        "run": cmd_run,
        "validate": cmd_validate,
        "compare": cmd_compare,
        "meta-rl": cmd_meta_rl,
    }
    try:
        join_cluster(args)
    except ValueError as e:
        return fail(str(e))
    except RuntimeError as e:
        return fail(str(e), RUN_FAILED)
    try:  # bad input is refused before anything compiles; a non-finite training stops the command
        if args.command != "families":
            resolve_out(args)
            precheck(args)
        from pgx_jax.runtime import compiles

        with compiles.counting() as counted:  # the command's compiling, in its result file too
            rc = commands.get(args.command, cmd_train)(args)
        if args.command != "families":
            print(counted.line(), file=sys.stderr)
        return rc
    except ValueError as e:
        return fail(str(e))
    except FloatingPointError as e:
        return fail(str(e), RUN_FAILED)
    except Exception as e:
        if lost_peer(e):  # a peer died or left a multi-process run: one clear line, not a hang
            return fail(f"multi-process run failed (process {process_index()}): {first_line(e)}", RUN_FAILED)
        raise
    finally:
        stop_workers()


if __name__ == "__main__":
    sys.exit(main())
