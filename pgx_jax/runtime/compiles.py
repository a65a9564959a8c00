"""Seconds spent compiling, per stage, counted from JAX's own monitoring events; and the
persistent compilation cache every command uses.

For every program it builds, JAX reports the seconds it spent tracing the Python function to a
jaxpr, lowering the jaxpr to MLIR and compiling that in XLA's backend, where the last is only a
read when the persistent cache holds the program (a hit). :func:`counting` sums these over a
block of code, split by the stage that :func:`stage` names at the time, so a command's
wall-clock divides into compiling and computing. Eagerly run operations (host families step on
the host) compile small programs too, and count.

This module imports nothing of pgx_jax: any layer may label its stages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator

#: JAX's duration events of building one program -> the part of compiling each measures
EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "backend_s",  # XLA, or a read of the cache
}
CACHE_HIT = "/jax/compilation_cache/cache_hits"
#: where compiled programs are kept across runs unless ``PGX_JAX_CACHE`` says otherwise
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "pgx_jax", "jax")


@dataclasses.dataclass
class Counter:
    """What :func:`counting` saw: ``seconds[stage][part]`` (part: trace_s, lower_s, backend_s),
    ``programs`` (backend compiles, cache reads included) and ``cache_hits``."""

    seconds: dict = dataclasses.field(default_factory=dict)
    programs: int = 0
    cache_hits: int = 0
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def total(self) -> float:
        return float(sum(sum(parts.values()) for parts in self.seconds.values()))

    def report(self) -> dict:
        """For a result file: ``compile_s`` (all parts, all stages), ``by_stage`` {stage: s},
        ``parts`` {part: s}, ``programs``, ``cache_hits``, ``wall_s`` (since the block began)
        and ``compile_share`` (compile_s / wall_s)."""
        wall_s = time.perf_counter() - self.started
        parts = {p: 0.0 for p in EVENTS.values()}
        for by_part in self.seconds.values():
            for p, s in by_part.items():
                parts[p] += s
        out = {
            "compile_s": self.total(),
            "by_stage": {name: float(sum(v.values())) for name, v in self.seconds.items()},
            "parts": parts,
            "programs": self.programs,
            "cache_hits": self.cache_hits,
        }
        out.update(wall_s=float(wall_s), compile_share=self.total() / wall_s if wall_s > 0 else None)
        return out

    def line(self) -> str:
        r = self.report()
        return (
            f"compiling: {r['compile_s']:.1f} s of {r['wall_s']:.1f} s ({100 * r['compile_share']:.0f}%), "
            f"{r['programs']} programs, {r['cache_hits']} from the cache"
        )


_COUNTERS: list[Counter] = []
_STAGE: list[str] = ["other"]
_LISTENING = [False]


def _on_duration(event: str, duration: float, **_) -> None:
    part = EVENTS.get(event)
    if part is None:
        return
    for c in _COUNTERS:
        by_part = c.seconds.setdefault(_STAGE[-1], {})
        by_part[part] = by_part.get(part, 0.0) + float(duration)
        if part == "backend_s":
            c.programs += 1


def _on_event(event: str, **_) -> None:
    if event == CACHE_HIT:
        for c in _COUNTERS:
            c.cache_hits += 1


def _listen() -> None:
    if not _LISTENING[0]:
        import jax

        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        jax.monitoring.register_event_listener(_on_event)
        _LISTENING[0] = True


@contextlib.contextmanager
def counting() -> Iterator[Counter]:
    """Count the compiling inside the block (nested blocks each count all of theirs)."""
    _listen()
    c = Counter()
    _COUNTERS.append(c)
    try:
        yield c
    finally:
        _COUNTERS.remove(c)


def outermost() -> Counter | None:
    """The counter of the outermost :func:`counting` block now open (a command's), or None."""
    return _COUNTERS[0] if _COUNTERS else None


def summary() -> dict | None:
    """:meth:`Counter.report` of :func:`outermost`, or None outside any counting block."""
    c = outermost()
    return None if c is None else c.report()


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Attribute the compiling inside the block to stage ``name`` (the innermost name wins)."""
    _STAGE.append(name)
    try:
        yield
    finally:
        _STAGE.pop()


def use_cache(path: str | None = None, *, say: bool = True) -> str | None:
    """Keep every compiled program across runs in ``path`` (default ``$PGX_JAX_CACHE``, else
    :data:`DEFAULT_CACHE`; ``""`` turns any cache off, JAX's own ``JAX_COMPILATION_CACHE_DIR``
    included) and return it. Every program is kept,
    however fast it compiled: JAX's default keeps only those that took a second or more, and the
    many small ones then compiled again in every run. With ``say``, the location is printed to
    stderr once per process."""
    import jax

    path = os.environ.get("PGX_JAX_CACHE", DEFAULT_CACHE) if path is None else path
    if not path:  # off, also where JAX_COMPILATION_CACHE_DIR would have turned it on (call it before
        # anything compiles: JAX decides once per process whether a cache is used)
        jax.config.update("jax_enable_compilation_cache", False)
        jax.config.update("jax_compilation_cache_dir", None)
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if say and not _SAID[0]:
        print(f"compilation cache: {path} (--no-compile-cache or PGX_JAX_CACHE='' to turn it off)", file=sys.stderr)
        _SAID[0] = True
    return path


_SAID = [False]
