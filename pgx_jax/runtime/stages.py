"""Finished stages of a command, saved as they finish and reused by ``--resume``.

A long command (``validate``'s truth trainings, ``compare``'s seeds, ``meta-rl``'s seeds) killed
at any point (SIGTERM, SIGKILL, power loss) loses only the stage it was in: every finished stage
is in ``<out>/stages/<name>.npz``, written to a temporary file and renamed into place (a file
there is whole), with a fingerprint of everything that decides its value (the command's options,
the tasks, the seed). ``--resume`` reuses a stage whose fingerprint matches and recomputes the
others, so the resumed result equals an uninterrupted run with the same options: stages are pure
functions of their keys.

Data, never code: a stage is a :mod:`pgx_jax.runtime.codec` archive (arrays plus the tree's structure as
JSON; types rebuilt from an allowlist, never called), not a pickle, because a run directory
travels (copied from a colleague, downloaded with a result) and ``--resume`` must not run
whatever a file in it holds. A store created with ``resume`` checks every file in ``stages/``
first (:func:`saved_stages`) and refuses, before any work, one it cannot read as such (an old
``.pkl`` stage, a foreign or damaged file, a type outside the allowlist), naming it and saying
what to remove. A stage holding a value the codec cannot save fails loudly at its save.

Fault injection for tests: with ``PGX_JAX_KILL_AFTER=<stage>[:<count>]`` in the environment the
process kills itself (SIGKILL: no clean-up runs) right after its count-th save of that stage,
which is how ``tests/test_stages.py`` interrupts a run at a chosen point without a race.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

import pgx_jax.runtime.codec as codec
from pgx_jax.runtime.distributed import is_main

T = TypeVar("T")
_SAVES: collections.Counter = collections.Counter()

#: a stage's file: ``<out>/stages/<name>.npz``
SUFFIX = ".npz"


def _refused(path: str, root: str, why: str) -> ValueError:
    return ValueError(
        f"{path} is not a stage this version can read: {why}. Stages are data (.npz archives of "
        f"pgx_jax.runtime.codec) and nothing else in {root} is ever loaded; remove that file (or the whole "
        f"{root} directory: every stage is then recomputed) and resume again"
    )


def saved_stages(root: str) -> list[str]:
    """The names of the stages saved in ``root`` (a ``stages`` directory; none where it does
    not exist), every file checked to be a :mod:`pgx_jax.runtime.codec` archive of allowed types
    (its tree read, not its arrays). Names starting with ``.`` (the temporary file of a save
    that was interrupted) are ignored, and so are stages naming pgx_jax classes this version does
    not have (:class:`pgx_jax.runtime.codec.OtherVersionError`: written by other code, so their
    fingerprint could not match; recomputed and replaced).

    Raises:
        ValueError: naming the first other file (an old ``<name>.pkl``, a foreign or damaged
            file, a refused type) and what to remove.
    """
    if not os.path.isdir(root):
        return []
    names = []
    for entry in sorted(os.listdir(root)):
        if entry.startswith("."):
            continue
        path = os.path.join(root, entry)
        if entry.endswith(".pkl"):
            raise _refused(path, root, "a pickled stage of an older version (loading it could run any code)")
        if not entry.endswith(SUFFIX) or not os.path.isfile(path):
            raise _refused(path, root, f"not a {SUFFIX} file")
        try:
            codec.check_file(path)
        except codec.OtherVersionError:  # written by other code: stale, recomputed and replaced
            continue
        except ValueError as e:
            raise _refused(path, root, str(e)) from None
        names.append(entry[: -len(SUFFIX)])
    return names


def _maybe_die(name: str) -> None:
    """Kill this process after the chosen save (``PGX_JAX_KILL_AFTER``; see the module's doc)."""
    target, _, count = os.environ.get("PGX_JAX_KILL_AFTER", "").partition(":")
    if target == name:
        _SAVES[name] += 1
        if _SAVES[name] >= int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)


class StageStore:
    """Where a command's finished stages go, and whether to reuse them.

    Args:
        out: the command's output directory (None: nothing is saved or reused).
        fingerprint: JSON-able; a saved stage is reused only under an equal one.
        resume: reuse matching saved stages (``--resume``); without it every stage is computed
            and saved over what is there.
        enabled: False turns the store off (a multi-process run without a shared file system
            could not agree on what to reuse: see :func:`pgx_jax.cli`).

    Raises:
        ValueError: with ``resume``, a file in ``<out>/stages`` that is not a stage
            (:func:`saved_stages`), before any stage runs.
    """

    def __init__(self, out: str | None, fingerprint: Any, *, resume: bool, enabled: bool = True):
        self.root = None if out is None or not enabled else os.path.join(out, "stages")
        self.fingerprint = json.dumps(fingerprint, sort_keys=True, default=str)
        self.resume = resume
        self.reused: list[str] = []
        self.computed: list[str] = []
        if self.root is not None and resume:
            saved_stages(self.root)

    def path(self, name: str) -> str:
        if not name or any(c in name for c in "/\\") or name.startswith("."):
            raise ValueError(f"bad stage name {name!r}")
        return os.path.join(self.root, f"{name}{SUFFIX}")

    def load(self, name: str):
        """``(True, value)`` of a saved stage with this fingerprint (recorded as reused), else
        ``(False, None)``; ``ValueError`` (as :func:`saved_stages`) for a file that is not a stage."""
        if self.root is None or not self.resume or not os.path.exists(self.path(name)):
            return False, None
        with open(self.path(name), "rb") as f:
            data = f.read()
        try:
            saved = codec.from_bytes(data)
        except codec.OtherVersionError:  # written by other code: its fingerprint cannot match
            return False, None
        except ValueError as e:  # replaced or damaged since the store checked it: never trusted
            raise _refused(self.path(name), self.root, str(e)) from None
        if not isinstance(saved, dict) or saved.get("fingerprint") != self.fingerprint:
            return False, None
        self.reused.append(name)
        return True, saved["value"]

    def save(self, name: str, value) -> None:
        """``value`` saved as the stage ``name`` (process 0 alone), atomically; ``TypeError``
        naming a type :mod:`pgx_jax.runtime.codec` cannot save (nothing is then written)."""
        if self.root is None or not is_main():
            return
        import jax

        data = codec.to_bytes({"fingerprint": self.fingerprint, "value": jax.device_get(value)})
        os.makedirs(self.root, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # on disk before it takes the name: a power loss leaves old or new
            os.replace(tmp, self.path(name))
            dir_fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself
            finally:
                os.close(dir_fd)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        _maybe_die(name)

    def discard(self, name: str) -> None:
        """Remove a saved stage that a later one has made obsolete (process 0 alone)."""
        if self.root is not None and is_main() and os.path.exists(self.path(name)):
            os.remove(self.path(name))

    def run(self, name: str, fn: Callable[[], T]) -> T:
        """The stage ``name``: reused if saved with this fingerprint (and ``resume``), else
        ``fn()``, saved atomically before it is returned."""
        found, value = self.load(name)
        if found:
            return value
        value = fn()
        self.save(name, value)
        if self.root is not None:  # a disabled store (e.g. the shared NONE) keeps no record
            self.computed.append(name)
        return value

    def staged(self, prefix: str, fn: Callable[[Any], T]) -> Callable[[Any], T]:
        """``fn`` with each call ``fn(x)`` a stage of its own, ``<prefix>_<x>`` (e.g. one per seed)."""
        return lambda x: self.run(f"{prefix}_{x}", lambda: fn(x))

    def summary(self) -> dict | None:
        """What was reused and computed, or None for a store that saves nothing."""
        if self.root is None:
            return None
        return {"reused": list(self.reused), "computed": list(self.computed), "resume": self.resume}


#: a store that saves and reuses nothing (library calls without an output directory)
NONE = StageStore(None, None, resume=False)
