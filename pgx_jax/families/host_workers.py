"""Host environments stepped in worker processes: :class:`ParallelEnvBatch`.

A :class:`pgx_jax.families.HostFamily` with ``workers = W > 0`` steps its B environments in W
processes, each holding a contiguous slice of them (its own :class:`EnvPool` and a local
:class:`EnvBatch`); a step sends every worker its slice of the actions, then gathers. Each
environment is seeded and stepped exactly as in one process, so the transitions (and every
training, estimate and evaluation over them) are identical; only the wall-clock changes.

Why not ``gymnasium.vector.AsyncVectorEnv``: it runs one process per environment (a host
training holds up to ``max_envs`` = 512), steps terminated environments (ours freeze until the
next reset) and its workers are started by ``multiprocessing`` (a fork of a process running
JAX's threads, or a spawn that re-imports the caller's ``__main__``). Its transport, cloudpickle
for the environment makers (closures), is the one used here.
"""

from __future__ import annotations

import itertools
import weakref

import cloudpickle
import numpy as np

from pgx_jax.families.host import EnvBatch, HostFamily

_ids = itertools.count()
_pools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # family -> its WorkerPool


def worker_pool(family: HostFamily) -> WorkerPool:
    """``family``'s ``workers`` processes: started on its first batch and reused by the next
    ones; stopped by ``worker_pool(family).close()`` or :func:`close_all`, at exit, or when the
    family is dropped (a family passed to jitted code stays in JAX's compilation cache, a static
    argument, until ``jax.clear_caches()``). A pool whose call failed or was interrupted is
    closed, and the next batch starts a fresh one."""
    pool = _pools.get(family)
    if pool is None or pool.closed:
        pool = _pools[family] = WorkerPool(family, family.workers)
    return pool


def close_all() -> None:
    """Stop every family's worker processes (the commands call it when they end)."""
    for pool in list(_pools.values()):
        pool.close()


def open_batch(family: HostFamily, task_ids):
    """B environments of ``family`` in lock-step: an :class:`EnvBatch`, or with ``family.workers``
    a :class:`ParallelEnvBatch` (the same contract and transitions)."""
    return ParallelEnvBatch(family, task_ids) if family.workers else EnvBatch(family, task_ids)


def _serve(conn, blob: bytes) -> None:  # pragma: no cover - runs in the worker process
    """A worker's loop: ``(command, batch id, argument)`` in, ``("ok", value)`` or
    ``("error", exception)`` out, until ``quit`` or the pipe closes."""
    family = cloudpickle.loads(blob)
    batches: dict[int, EnvBatch] = {}
    while True:
        try:
            command, bid, arg = conn.recv()
        except (EOFError, OSError):
            return
        if command == "quit":
            return
        try:
            if command == "open":
                batches[bid] = EnvBatch(family, arg)
                value = None
            elif command == "reset":
                value = batches[bid].reset(arg)
            elif command == "step":
                value = batches[bid].step(arg)
            elif command == "close":
                batches.pop(bid).__exit__(None, None, None)
                value = None
            else:
                raise ValueError(f"unknown worker command {command!r}")
            conn.send(("ok", value))
        except Exception as e:  # the parent raises it, with the worker's message
            conn.send(("error", e))


def _main(fd: int) -> None:  # pragma: no cover - the worker process's entry point
    import signal
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it closes the pool
    conn = Connection(fd)
    _serve(conn, conn.recv_bytes())


class WorkerPool:
    """W worker processes for one family.

    Each is a fresh interpreter (``python -c``, never a fork of a process running JAX's threads,
    and never a re-import of the caller's ``__main__``, which ``multiprocessing``'s spawn does: a
    script or notebook without a ``__main__`` guard would start itself again) with the caller's
    ``sys.path`` and working directory, talking over a socket pair; the family (its ``make_env``
    closures) travels by cloudpickle (functions of importable modules by reference)."""

    def __init__(self, family, workers: int):
        import dataclasses
        import os
        import socket
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        blob = cloudpickle.dumps(dataclasses.replace(family, workers=0))  # each worker steps its slice itself
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path))
        self.conns, self.procs = [], []
        try:
            for _ in range(workers):
                mine, theirs = socket.socketpair()
                fd = theirs.fileno()
                code = f"from pgx_jax.families.host_workers import _main; _main({fd})"
                try:
                    proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(fd,), env=env, cwd=os.getcwd())
                finally:
                    theirs.close()
                self.conns.append(Connection(mine.detach()))
                self.procs.append(proc)
            for conn in self.conns:
                conn.send_bytes(blob)
        except BaseException:
            _stop(self.conns, self.procs)
            raise
        self._finalizer = weakref.finalize(self, _stop, self.conns, self.procs)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        self._finalizer()

    def gather(self, requests: list[tuple[int, tuple]]) -> list[tuple[str, object]]:
        """Send ``(worker, (command, batch id, argument))`` to each worker named, then gather
        their ``(status, value)`` answers in the same order (the workers run concurrently). A
        call that cannot complete (a worker died, an interrupt) closes the pool: the workers'
        answers would otherwise be read by the next call."""
        try:
            for w, message in requests:
                self.conns[w].send(message)
            return [self._receive(w) for w, _ in requests]
        except BaseException:
            self.close()
            raise

    def _receive(self, w: int):
        try:
            return self.conns[w].recv()
        except (EOFError, OSError):
            code = self.procs[w].poll()
            raise RuntimeError(f"host environment worker {w} died (exit code {code}); see its output above") from None

    def call(self, requests: list[tuple[int, tuple]]) -> list:
        """:meth:`gather`, raising the first worker's error (with its message), else the values."""
        answers = self.gather(requests)
        for status, value in answers:
            if status == "error":
                raise value
        return [value for _, value in answers]


def _stop(conns, procs) -> None:
    import subprocess

    for conn in conns:
        try:
            conn.send(("quit", -1, None))
        except OSError:
            pass
        finally:
            conn.close()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ParallelEnvBatch:
    """:class:`pgx_jax.families.host.EnvBatch`'s contract, its B environments split over the
    family's worker processes in contiguous slices (``reset``, ``step``, ``obs``)."""

    def __init__(self, family, task_ids):
        self.family = family
        self.task_ids = np.asarray(task_ids, np.int64).reshape(-1)
        pool = worker_pool(family)
        parts = np.array_split(np.arange(self.task_ids.size), len(pool.conns))
        slices = [(w, p[0], p[-1] + 1) for w, p in enumerate(parts) if p.size]
        self.bid = next(_ids)
        self.pool, self.slices = pool, []
        answers = pool.gather([(w, ("open", self.bid, self.task_ids[lo:hi])) for w, lo, hi in slices])
        self.slices = [sl for sl, (status, _) in zip(slices, answers, strict=True) if status == "ok"]
        failed = [value for status, value in answers if status == "error"]
        if failed:  # the workers that opened their slice close it again: no environment left held
            self.__exit__(type(failed[0]), failed[0], None)
            raise failed[0]
        self.obs = np.zeros((self.task_ids.size, family.obs_size), np.float32)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        slices, self.slices = self.slices, []
        if not slices or self.pool.closed:
            return
        try:
            self.pool.call([(w, ("close", self.bid, None)) for w, _, _ in slices])
        except Exception:
            if exc[0] is None:  # an error while closing is raised only where none is on its way
                raise

    def reset(self, seed) -> np.ndarray:
        """As :meth:`EnvBatch.reset`: env i is seeded ``seed + i`` (an int) or ``seed[i]``."""
        b = self.task_ids.size
        seeds = int(seed) + np.arange(b) if np.ndim(seed) == 0 else np.asarray(seed).reshape(-1)
        parts = self.pool.call([(w, ("reset", self.bid, seeds[lo:hi])) for w, lo, hi in self.slices])
        self.obs = np.concatenate(parts)
        return self.obs

    def step(self, actions: np.ndarray):
        """As :meth:`EnvBatch.step`: ``(next_obs [B, O], reward, terminal, valid, metric)``."""
        actions = np.asarray(actions)
        parts = self.pool.call([(w, ("step", self.bid, actions[lo:hi])) for w, lo, hi in self.slices])
        out = tuple(np.concatenate(field) for field in zip(*parts, strict=True))
        self.obs = out[0]
        return out
