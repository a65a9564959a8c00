"""Compile time counted per stage, and the persistent cache every command uses (issue 31, item 3)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from pgx_jax.runtime import compiles


def test_counting_attributes_a_compile_to_its_stage_and_a_cached_call_to_none():
    f = jax.jit(lambda x: jnp.sin(x) * 3.0 + jnp.cos(x) ** 2)
    x = jnp.arange(17.0)  # a shape no other test compiles
    with compiles.counting() as outer:
        with compiles.stage("mine"):
            with compiles.counting() as inner:
                f(x).block_until_ready()
        with compiles.stage("again"):
            f(x).block_until_ready()  # jit's in-memory cache: nothing built
    assert inner.programs == 1 and inner.total() > 0
    assert set(inner.seconds) == {"mine"} and set(inner.seconds["mine"]) == {"trace_s", "lower_s", "backend_s"}
    report = outer.report()
    assert report["programs"] == 1 and "again" not in report["by_stage"]
    assert report["compile_s"] == pytest.approx(inner.total())
    assert 0 < report["compile_share"] <= 1 and report["wall_s"] >= report["compile_s"]
    assert compiles.outermost() is None and compiles.summary() is None  # every block closed


CHILD = """
import sys
from pgx_jax.runtime import compiles
import jax, jax.numpy as jnp
compiles.use_cache(sys.argv[1] or "", say=False)
x = jax.device_put(__import__("numpy").ones((5, 7), "float32"))
with compiles.counting() as c:
    jax.jit(lambda x: jnp.tanh(x) @ x.T)(x).block_until_ready()
print(c.programs, c.cache_hits)
"""


def _child(cache: str) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "PGX_JAX_CACHE")}
    out = subprocess.run([sys.executable, "-c", CHILD, cache], env=env, capture_output=True, text=True, check=True)
    programs, hits = map(int, out.stdout.split())
    return programs, hits


def test_the_cache_serves_the_next_process_even_a_fast_compile(tmp_path):
    """The program compiles in milliseconds, under JAX's default one-second threshold for caching:
    use_cache keeps it anyway, and the next process reads it instead of compiling."""
    cache = str(tmp_path / "cache")
    assert _child(cache) == (1, 0)
    assert os.listdir(cache)
    assert _child(cache) == (1, 1)
    assert _child("") == (1, 0)  # off: compiled again


@pytest.mark.slow
def test_no_compile_cache_turns_it_off_for_a_command(tmp_path):
    """The same command twice over one cache, which JAX's own JAX_COMPILATION_CACHE_DIR names
    too: the second, with --no-compile-cache, reads nothing from it (JAX decides once per process
    whether a cache is used, so the flag acts before anything compiles)."""
    cache = tmp_path / "cache"
    env = {**os.environ, "PGX_JAX_CACHE": str(cache), "JAX_COMPILATION_CACHE_DIR": str(cache)}
    argv = ["train", "--family", "pendulum-physics", "--budget", "smoke", "--episodes", "1", "--no-progress"]
    reports = []
    for i, flag in enumerate(([], ["--no-compile-cache"])):
        out = tmp_path / f"t{i}"
        cmd = [sys.executable, "-m", "pgx_jax.cli", *argv, "--out", str(out), *flag]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        assert ("compilation cache:" in p.stderr) == (not flag) and "compiling:" in p.stderr
        reports.append(json.loads((out / "train.json").read_text())["compiles"])
    assert os.listdir(cache)  # the first run filled it
    assert reports[1]["cache_hits"] == 0 and reports[1]["programs"] > 0 and reports[1]["compile_s"] > 0
