"""Interruption-safe runs (issue 18, part 2): finished stages are saved atomically and reused
by ``--resume`` only under the same options; chunked training continues from a checkpoint to the
very result of an uninterrupted run; a ``validate`` killed during meta-training and again between
the estimate and the truth resumes to the result of a run that was never killed (that test is
in test_cli_validate.py, after the in-process run whose compiled programs it reuses)."""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgx_jax import simulators
from pgx_jax.core.config import PPOConfig
from pgx_jax.runtime import codec
from pgx_jax.runtime.stages import StageStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stages_are_reused_only_on_resume_and_under_the_same_fingerprint(tmp_path):
    calls = []

    def work(x):
        calls.append(x)
        return {"value": np.arange(3) * x}

    first = StageStore(str(tmp_path), {"seed": 0}, resume=False)
    assert first.run("a", lambda: work(2))["value"].tolist() == [0, 2, 4]
    assert os.listdir(tmp_path / "stages") == ["a.npz"]  # whole files only: no temporary left behind
    again = StageStore(str(tmp_path), {"seed": 0}, resume=True)
    assert again.run("a", lambda: work(3))["value"].tolist() == [0, 2, 4] and calls == [2]
    assert again.summary()["reused"] == ["a"]
    other = StageStore(str(tmp_path), {"seed": 1}, resume=True)  # other options: recomputed
    assert other.run("a", lambda: work(5))["value"].tolist() == [0, 5, 10] and calls == [2, 5]
    fresh = StageStore(str(tmp_path), {"seed": 1}, resume=False)  # no --resume: recomputed
    fresh.run("a", lambda: work(7))
    assert calls == [2, 5, 7]
    torn = tmp_path / "stages" / "a.npz"
    torn.write_bytes(torn.read_bytes()[:100])  # a torn (or replaced) file is never trusted, nor recomputed over
    refused = re.escape(str(torn)) + " is not a stage this version can read.*remove that file"
    with pytest.raises(ValueError, match=refused):
        StageStore(str(tmp_path), {"seed": 1}, resume=True)
    assert StageStore(str(tmp_path), {"seed": 1}, resume=False).run("a", lambda: work(9))["value"][1] == 9
    with pytest.raises(ValueError, match="bad stage name"):
        again.path("../x")


@pytest.mark.user_xla_flags
def test_chunked_training_continues_from_a_checkpoint_to_the_uninterrupted_result(fast_family):
    """Checkpoints after every chunk; a training started from the one after chunk 1 of 3 ends
    where the uninterrupted training ends, parameters and metrics alike (the same compiled chunks
    on the same states)."""
    config = PPOConfig(total_env_steps=480, num_envs=8, num_epochs=1, num_minibatches=2)
    mask, key = jnp.ones(4, bool), jax.random.PRNGKey(3)
    saved = []

    def keep(state, parts, done):
        saved.append(codec.from_bytes(codec.to_bytes(jax.device_get((state, parts, done)))))  # as a stage keeps it

    params, metrics = simulators.train_chunked(config, fast_family, mask, key, max_chunks=3, checkpoint=keep)
    assert [done for _, _, done in saved] == [2, 4, 6]
    ran = []
    again, metrics_again = simulators.train_chunked(
        config, fast_family, mask, key, max_chunks=3, start=saved[0], on_chunk=lambda done, total: ran.append(done)
    )
    assert ran == [4, 6]  # the two chunks left, not the whole training again
    jax.tree.map(np.testing.assert_array_equal, again, params)
    jax.tree.map(np.testing.assert_array_equal, metrics_again, metrics)


def test_theta_star_is_reused_only_for_the_same_task_parameters(tmp_path):
    """Reviewer's finding (issue 30): --resume matched theta* by task names, so a theta* trained
    at another gravity was reused. What theta* is made from is now saved with it and compared."""
    import json as _json

    from pgx_jax.cli.args import build_parser
    from pgx_jax.cli.outputs import theta_inputs
    from pgx_jax.families import task_entries

    entries = task_entries("pendulum-physics")
    heavier = [dict(e) for e in entries]
    heavier[0]["gravity"] = heavier[0]["gravity"] + 5.0
    paths = []
    for name, content in (("a.json", entries), ("b.json", entries), ("c.json", heavier)):
        (tmp_path / name).write_text(_json.dumps(content))
        paths.append(str(tmp_path / name))
    digests = [theta_inputs(build_parser().parse_args(["run", "--tasks-file", p])) for p in paths]
    assert digests[0] == digests[1] != digests[2]


def test_a_stage_written_by_other_code_is_recomputed_not_refused(tmp_path):
    """A stage naming a pgx_jax class this version lacks (a run made before a module moved) cannot
    have this run's fingerprint: it is not listed, not loaded and is replaced on save; a foreign
    type in a stage is still refused."""
    import io
    import json

    stages = tmp_path / "stages"
    stages.mkdir()
    text = json.dumps({"format": codec.FORMAT, "root": ["namedtuple", "pgx_jax.config:PPOConfig", []]}).encode()
    buf = io.BytesIO()
    np.savez(buf, tree=np.frombuffer(text, np.uint8))
    (stages / "estimate.npz").write_bytes(buf.getvalue())
    store = StageStore(str(tmp_path), {"seed": 0}, resume=True)
    assert store.load("estimate") == (False, None)
    assert store.run("estimate", lambda: 7) == 7 and store.reused == []
    assert StageStore(str(tmp_path), {"seed": 0}, resume=True).load("estimate") == (True, 7)
    text = json.dumps({"format": codec.FORMAT, "root": ["namedtuple", "os:system", []]}).encode()
    buf = io.BytesIO()
    np.savez(buf, tree=np.frombuffer(text, np.uint8))
    (stages / "truth.npz").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="truth.npz is not a stage this version can read: .*refused type 'os:system'"):
        StageStore(str(tmp_path), {"seed": 0}, resume=True)
