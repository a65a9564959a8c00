"""Running ``pgx-jax`` in subprocesses for the tests: one process, two joined as a cluster, or a
``validate`` killed by fault injection. The subprocesses inherit the session's compilation cache
(conftest), so a command whose programs an earlier test compiled costs its tracing and running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def cli(argv, **kwargs) -> subprocess.Popen:
    """``python -m pgx_jax.cli *argv`` on one CPU device, with pipes for its output."""
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    return subprocess.Popen([sys.executable, "-m", "pgx_jax.cli", *argv], cwd=ROOT, env=env, **pipes, **kwargs)


def one_and_two(argv, tmp_path, name: str) -> tuple[dict, dict]:
    """The command in one process and in two; returns the JSON file ``name`` of each."""
    one, two = tmp_path / "one", tmp_path / "two"
    common = [*argv, "--no-progress"]
    cluster = ["--coordinator", f"localhost:{free_port()}", "--num-processes", "2", "--distributed-timeout", "60"]
    procs = [cli([*common, "--out", str(two), *cluster, "--process-id", str(i)]) for i in (1, 0)]
    single = cli([*common, "--out", str(one)])
    outs = [p.communicate(timeout=1500) for p in procs]
    out_one = single.communicate(timeout=1500)
    for p, (_, stderr) in zip([*procs, single], [*outs, out_one], strict=True):
        assert p.returncode == 0, stderr[-3000:]
    assert outs[0][0].strip() == "" or "Gloo" in outs[0][0]  # process 1 prints nothing of its own
    assert (two / name).exists() and (one / name).exists()
    return json.loads((one / name).read_text()), json.loads((two / name).read_text())


def validate(out, *extra, kill_after=None) -> subprocess.CompletedProcess:
    """``validate`` at smoke with the finetune truth, SIGKILLed after the stage ``kill_after``
    (``PGX_JAX_KILL_AFTER``, see :mod:`pgx_jax.runtime.stages`) when given."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("PGX_JAX_KILL_AFTER", None)
    if kill_after:
        env["PGX_JAX_KILL_AFTER"] = kill_after
    argv = [sys.executable, "-m", "pgx_jax.cli", "validate", "--budget", "smoke", "--groups", "2", "--truth"]
    argv += ["finetune", "--no-progress", "--out", str(out), *extra]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
