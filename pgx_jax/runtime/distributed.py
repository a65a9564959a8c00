"""Many processes, one result: JAX's multi-process runtime (``jax.distributed``) over the
many-subset axes.

A study's costly axes (the subsets of the solves, of the estimate's evaluation and of the truth
trainings; the groups of ``compare`` and ``meta-rl``) are rows of independent work, each with its
own key (derived from the row, never from the process that computes it). :func:`across_processes`
gives every process a contiguous block of the rows (padded with copies of row 0 where the count
does not divide), runs the same function on each block with the process's local devices
(:func:`pgx_jax.runtime.sharding.over_devices` under it), and gathers the blocks to every process with
JAX's own collective (``multihost_utils.process_allgather`` over all processes' devices; every
process needs the same number of local devices): no scheduler or sockets of our own. Every
process then holds the whole result; only process 0 writes files and draws progress
(:func:`is_main`).

With one process (no :func:`initialize`, the default) every function here is the identity of
the single-process path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

import pgx_jax.runtime.codec as codec

#: seconds a process waits for the others to join, or for a silent peer, before failing
DEFAULT_TIMEOUT_S = 120

#: this process's gathers so far: calls, bytes it received, seconds inside them (waiting for the
#: slowest process included): what communication cost, reported by :func:`summary`
_GATHERS = {"calls": 0, "bytes": 0, "seconds": 0.0}
#: inside :func:`map_processes`' items: every process computes alone, nothing is gathered
_ALONE = [False]


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """How this process joins the others.

    ``coordinator`` is ``HOST:PORT`` (process 0 listens there) with ``num_processes`` and
    ``process_id``, or ``"auto"``: :func:`jax.distributed.initialize` with no arguments, where JAX
    detects the cluster itself (SLURM, Cloud TPU, Open MPI).
    """

    coordinator: str
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: int = DEFAULT_TIMEOUT_S

    def __post_init__(self):
        if self.coordinator == "auto":
            if self.num_processes is not None or self.process_id is not None:
                raise ValueError("--coordinator auto detects the cluster: drop --num-processes and --process-id")
        else:
            if not re.fullmatch(r"[^\s:]+:\d{1,5}", self.coordinator or "") or not (
                0 < int(self.coordinator.rsplit(":", 1)[1]) < 65536
            ):
                raise ValueError(f"--coordinator must be HOST:PORT (port 1-65535) or 'auto', got {self.coordinator!r}")
            for name in ("num_processes", "process_id"):
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f"--{name.replace('_', '-')} is required with --coordinator HOST:PORT, got {v!r}")
            if self.num_processes < 1:
                raise ValueError(f"--num-processes must be >= 1, got {self.num_processes}")
            if not 0 <= self.process_id < self.num_processes:
                raise ValueError(
                    f"--process-id must be in [0, {self.num_processes - 1}] for {self.num_processes} processes, "
                    f"got {self.process_id}"
                )
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, int) or self.timeout_s < 1:
            raise ValueError(f"--distributed-timeout must be an integer >= 1 second, got {self.timeout_s!r}")


def initialize(spec: ClusterSpec) -> None:
    """Join the cluster (before any other JAX call of the process). On CPU the collectives are
    gloo's (XLA's CPU backend has no other cross-process implementation). A peer that never joins
    fails :func:`jax.distributed.initialize` after ``timeout_s``; one that dies later stops the
    others at their next collective within the heartbeat timeout (``timeout_s`` too)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    t = spec.timeout_s  # joining, a silent peer, and the wait for the others at exit
    kwargs = dict(initialization_timeout=t, heartbeat_timeout_seconds=t, shutdown_timeout_seconds=t)
    if spec.coordinator == "auto":
        jax.distributed.initialize(**kwargs)
    else:
        jax.distributed.initialize(spec.coordinator, spec.num_processes, spec.process_id, **kwargs)


class PeerFailed(RuntimeError):
    """Another process failed in a step this process was taking part in (its own output says why)."""


def _all_ok(run: Callable):
    """``run()`` on every process, then a collective flag: raises the local error where ``run``
    failed and :class:`PeerFailed` on the others, so no process waits in a gather for one that
    left (an error on one process only: a non-finite training, a missing file)."""
    try:
        out, err = run(), None
    except Exception as e:  # re-raised below, after the others have been told
        out, err = None, e
    ok = _allgather(np.array([err is None], np.int32), tiled=True)
    if err is not None:
        raise err
    if not ok.all():
        raise PeerFailed(f"process(es) {np.flatnonzero(ok == 0).tolist()} failed; see their own output")
    return out


#: fields :func:`check_agree` compares in one collective (a fixed size: processes whose code
#: differs must still exchange arrays of one shape)
MAX_FIELDS = 31


def _digest(text: str | bytes) -> int:
    import hashlib

    data = text.encode() if isinstance(text, str) else text
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little", signed=True)


def check_agree(fields: dict[str, str | bytes], what: str = "") -> None:
    """Raise ``ValueError`` on every process unless all processes hold the same value of every
    field (compared by a 64-bit prefix of its sha256), naming the first field (in ``fields``'
    order) that differs and the processes whose value differs from process 0's: processes that
    computed, read or were given different inputs would otherwise mix their rows without a word.
    One collective of a fixed shape; a no-op with one process and inside :func:`alone` (there a
    process computes alone, and the others are not there to compare with)."""
    if jax.process_count() == 1 or _ALONE[0]:
        return
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"check_agree compares at most {MAX_FIELDS} fields, got {len(fields)}")
    names = list(fields)
    mine = np.zeros(MAX_FIELDS + 1, np.int64)
    mine[0] = _digest("\0".join(names))  # the field names themselves: other code may ask other things
    mine[1 : len(names) + 1] = [_digest(v) for v in fields.values()]
    everyone = _allgather(mine, tiled=False)  # [P, MAX_FIELDS + 1]
    differ = everyone != everyone[0]
    if not differ.any():
        return
    where = "" if not what else f" {what}"
    if differ[:, 0].any():
        others = [int(q) for q in np.flatnonzero(differ[:, 0])]
        raise ValueError(f"the processes compare different fields{where}: process(es) {others} run other code than 0")
    first = int(np.flatnonzero(differ[:, 1:].any(0))[0])
    others = [int(q) for q in np.flatnonzero(differ[:, first + 1])]
    raise ValueError(
        f"the processes disagree on {names[first]}{where}: process(es) {others} hold another value than process 0; "
        "start every process with the same options, task files, code and packages"
    )


def check_same(text: str, what: str) -> None:
    """:func:`check_agree` of one field ``what`` (e.g. the command line without ``--process-id``)."""
    check_agree({what: text})


def tree_digest(tree) -> str:
    """sha256 over a pytree's structure and every leaf's dtype, shape and bytes (host copies)."""
    import hashlib

    h = hashlib.sha256(str(jax.tree.structure(tree)).encode())
    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(jax.device_get(leaf))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_same_tree(tree, what: str) -> None:
    """:func:`check_agree` of a pytree each process computed for itself (theta*, the gradient
    features, ...), bit for bit: processes whose arithmetic differs are refused before any row
    computed from it is gathered. A no-op with one process (nothing is hashed)."""
    if jax.process_count() == 1 or _ALONE[0]:
        return
    check_agree({what: tree_digest(tree)})


def process_count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """Whether this is process 0, the one that writes files and draws progress."""
    return jax.process_index() == 0


def writes_own() -> bool:
    """Whether this process writes the files of what it is computing: process 0, or any process
    computing an item of :func:`map_processes` alone (no other process computes that item)."""
    return _ALONE[0] or is_main()


def from_main(text: str, size: int = 1024) -> str:
    """Process 0's ``text`` (UTF-8, at most ``size`` bytes) on every process: a choice that only
    one process may make (a name with the time in it, say). With one process, ``text``."""
    if jax.process_count() == 1:
        return text
    raw = text.encode()
    if len(raw) > size:
        raise ValueError(f"from_main: {len(raw)} bytes, more than {size}")
    row = np.zeros(size + 1, np.uint8)
    row[0], row[1 : 1 + len(raw)] = 1, np.frombuffer(raw, np.uint8)
    got = _allgather(row, tiled=False)  # [P, size + 1]
    first = got[0]
    return bytes(first[1:]).rstrip(b"\0").decode()


def block(rows: int, processes: int | None = None, index: int | None = None) -> tuple[int, int, int]:
    """``(lo, hi, padded)``: this process's rows [lo, hi) of ``rows`` padded to ``padded``, a
    multiple of the process count (rows >= ``rows`` are padding)."""
    p = jax.process_count() if processes is None else processes
    i = jax.process_index() if index is None else index
    per = -(-rows // p)
    return i * per, (i + 1) * per, per * p


def across_processes(fn: Callable, xs):
    """``fn(xs)`` for a pytree ``xs`` with leading axis [S], each process computing a contiguous
    block of the rows; every process returns the whole result (numpy, leading [S]).

    ``fn`` must treat rows independently (a row's output a function of that row alone): then
    the result does not depend on the number of processes, up to the floating-point effects of a
    different batch shape in vmapped programs. With one process this is ``fn(xs)``.
    """
    if jax.process_count() == 1 or _ALONE[0]:
        return fn(xs)
    s = jax.tree.leaves(xs)[0].shape[0]
    lo, hi, padded = block(s)
    host = jax.tree.map(np.asarray, xs)
    if padded > s:
        host = jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[:1], padded - s, 0)]), host)
    mine = _all_ok(lambda: jax.tree.map(np.asarray, fn(jax.tree.map(lambda x: x[lo:hi], host))))
    return jax.tree.map(lambda x: x[:s], _allgather(mine, tiled=True))


def _as_words(x) -> np.ndarray:
    """``x`` (host copy) with every element wider than 4 bytes as its uint32 words on a new last
    axis: JAX without x64 would cast int64 / float64 to 32 bits on the way through a device."""
    x = np.ascontiguousarray(x)
    return x[..., None].view(np.uint32) if x.dtype.itemsize > 4 else x


def _from_words(x: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(like.dtype)[..., 0] if like.dtype.itemsize > 4 else x


def _allgather(tree, tiled: bool):
    """``multihost_utils.process_allgather`` to numpy, bit for bit in every dtype (64-bit ones
    travel as uint32 words), its cost counted in :func:`summary`."""
    from jax.experimental import multihost_utils

    t0 = time.perf_counter()
    host = jax.tree.map(lambda x: np.ascontiguousarray(jax.device_get(x)), tree)
    words = jax.tree.map(_as_words, host)
    got = jax.tree.map(np.asarray, multihost_utils.process_allgather(words, tiled=tiled))
    out = jax.tree.map(_from_words, got, host)
    _GATHERS["calls"] += 1
    _GATHERS["bytes"] += sum(x.nbytes for x in jax.tree.leaves(out))
    _GATHERS["seconds"] += time.perf_counter() - t0
    return out


@contextlib.contextmanager
def alone():
    """Within: :func:`across_processes` computes every row in this process (no collective)."""
    before = _ALONE[0]
    _ALONE[0] = True
    try:
        yield
    finally:
        _ALONE[0] = before


def map_processes(fn: Callable, items: Sequence) -> list:
    """``[fn(item) for item in items]`` with item i computed by process ``i % P`` alone
    (:func:`alone`: the rows inside it are not split), the results then gathered to every
    process in order, as data (:mod:`pgx_jax.runtime.codec`: ``TypeError`` naming a value it cannot
    save; a peer's bytes are never unpickled). Used over seeds: a seed's result is then exactly
    a one-process run's (the same programs on the same shapes), and nothing is exchanged until
    the end. With one process, or fewer items than processes (the rows inside are then split
    instead), this is the plain loop."""
    p = jax.process_count()
    if p == 1 or _ALONE[0] or len(items) < p:
        return [fn(item) for item in items]
    me = jax.process_index()
    with alone():
        mine = _all_ok(lambda: {i: fn(item) for i, item in enumerate(items) if i % p == me})
    data = np.frombuffer(codec.to_bytes(mine), np.uint8)
    sizes = _allgather(np.array([data.size], np.int64), tiled=True)  # [P]
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    everyone = _allgather(padded, tiled=False)  # [P, max size]
    out = {}
    for q in range(p):
        out.update(codec.from_bytes(everyone[q, : int(sizes[q])].tobytes()))
    return [out[i] for i in range(len(items))]


def summary() -> dict:
    """The run's processes and what gathering cost this process (reported in every result)."""
    return {
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "gathers": _GATHERS["calls"],
        "gathered_bytes": _GATHERS["bytes"],
        "gather_s": _GATHERS["seconds"],
        "gather_note": "process 0's gathers; gather_s includes waiting for the slowest process",
    }
