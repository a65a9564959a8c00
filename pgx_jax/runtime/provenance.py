"""Which code made a result: the git commit of pgx_jax's checkout, whether its code was clean,
and a hash of its uncommitted changes (recorded in every result file and stage fingerprint;
:func:`require_clean` guards the benchmarks whose files are cited)."""

from __future__ import annotations

import functools
import os
from typing import Any

#: the paths whose uncommitted changes make a tree dirty: the code, not the results it writes
CODE_PATHS = ("pgx_jax", "benchmarks", "pyproject.toml", ":(exclude)benchmarks/results")


def _git(args: list[str], cwd: str) -> bytes | None:
    import subprocess

    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


@functools.cache
def source_state() -> dict[str, Any]:
    """The code pgx_jax is imported from: :func:`code_state` of this package's checkout. Cached:
    the first call's answer holds for the process (the CLI asks at start, so an edit during a
    long run does not relabel it)."""
    return code_state(os.path.dirname(os.path.abspath(__file__)))


def code_state(here: str) -> dict[str, Any]:
    """The git checkout holding the directory ``here``: ``{"commit", "describe", "clean", "diff_sha256"}``.

    ``commit`` is the full hash of HEAD, ``describe`` ``git describe --always`` with ``-dirty``
    appended where the code is not clean.
    ``clean`` is True when :data:`CODE_PATHS` (the package, the benchmark scripts, pyproject)
    have no uncommitted change, tracked or untracked (ignored files do not count);
    ``diff_sha256`` hashes HEAD and the name and current bytes of every changed or untracked
    file there (not git's diff text, which follows the user's git config), None when clean; a
    failing ``git diff`` counts as dirty ("unknown" hash). Outside a git checkout (an installed wheel) every field
    is ``"unknown"`` and ``clean`` None."""
    import hashlib

    top = _git(["rev-parse", "--show-toplevel"], here)
    head = _git(["rev-parse", "HEAD"], here)
    describe = _git(["describe", "--always"], here)
    if top is None or head is None or describe is None:
        return {"commit": "unknown", "describe": "unknown", "clean": None, "diff_sha256": "unknown"}
    root = top.decode().strip()
    changed = _git(["diff", "HEAD", "--name-only", "--no-renames", "--no-relative", "-z", "--", *CODE_PATHS], root)
    untracked = _git(["ls-files", "--others", "--exclude-standard", "-z", "--", *CODE_PATHS], root)
    if changed is None or untracked is None:  # git failed: not known to be clean, so not clean
        return {
            "commit": head.decode().strip(),
            "describe": describe.decode().strip() + "-dirty",
            "clean": False,
            "diff_sha256": "unknown (git diff failed)",
        }
    names = sorted({n for n in (changed + b"\0" + untracked).decode().split("\0") if n})
    # the changed files' names and bytes as they are now, not git's diff text: that follows the
    # user's git config (prefixes, colour, diff algorithm, external diff programs)
    h = hashlib.sha256(head)
    for name in names:
        h.update(b"\0file\0" + name.encode() + b"\0")
        try:
            with open(os.path.join(root, name), "rb") as f:
                h.update(f.read())
        except FileNotFoundError:
            h.update(b"<deleted>")
        except OSError:
            h.update(b"<unreadable>")
    clean = not names
    return {
        "commit": head.decode().strip(),
        "describe": describe.decode().strip() + ("" if clean else "-dirty"),
        "clean": clean,
        "diff_sha256": None if clean else h.hexdigest(),
    }


def source_commit() -> str:
    """``git describe --always`` of the checkout pgx_jax is imported from, ``-dirty`` where its
    code has uncommitted changes, or ``"unknown"`` (an installed wheel, no git);
    :func:`source_state` has the rest."""
    return source_state()["describe"]


class DirtyTreeError(ValueError):
    """The code has uncommitted changes where a run's files must name their code (:func:`require_clean`)."""


def require_clean(allow_dirty: bool) -> dict[str, Any]:
    """The :func:`source_state` of a run whose files are cited: :class:`DirtyTreeError` naming
    the commit and the diff's hash when the code is not clean, unless ``allow_dirty`` (then the
    files record ``pgx_jax_clean: false`` and the diff's hash through :func:`versions`)."""
    state = source_state()
    if state["clean"] is False and not allow_dirty:
        raise DirtyTreeError(
            f"the code at {state['describe']} has uncommitted changes in {', '.join(CODE_PATHS[:3])} "
            f"(diff sha256 {state['diff_sha256'][:12]}): commit them first, so that the files this writes say "
            "which code made them, or pass --allow-dirty (the files then record the tree as dirty)"
        )
    return state
