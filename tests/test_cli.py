import json

import pytest

from pgx_jax import checkpoint
from pgx_jax.cli import main


def test_train_smoke_writes_results(tmp_path, reacher, capsys):
    out = tmp_path / "run"
    assert main(["train", "--budget", "smoke", "--out", str(out), "--no-progress", "--episodes", "2"]) == 0
    result = json.loads((out / "train.json").read_text())
    assert result["tasks"] == list(reacher.task_names)
    assert set(result["per_task_return"]) == set(reacher.task_names)
    assert result["env_steps"] > 0 and result["config"]["num_envs"] % 9 == 0
    assert len(result["learning_curve"]["episode_return"]) == len(result["learning_curve"]["env_steps"])
    assert (out / "learning_curve.png").stat().st_size > 1000
    params, config, meta = checkpoint.load_policy(out / "policy", reacher)
    assert meta["extra"] == {"seed": 0}
    table = capsys.readouterr().out
    assert "| task | return |" in table and "r2g2" in table


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--family", "walker"], "unknown family 'walker'"),
        (["train", "--budget", "huge"], "unknown budget 'huge'"),
        (["train", "--episodes", "0"], "--episodes must be >= 1"),
    ],
)
def test_bad_arguments_fail_before_training(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_bad_tasks_file_fails_before_training(tmp_path, capsys):
    f = tmp_path / "t.json"
    f.write_text(json.dumps([{"name": "a", "goal": [1.0, 1.0]}]))
    assert main(["train", "--tasks-file", str(f), "--out", str(tmp_path / "x")]) == 2
    assert "outside the reachable annulus" in capsys.readouterr().err


def test_families_lists_all(capsys):
    assert main(["families"]) == 0
    out = capsys.readouterr().out
    for name in ("reacher-goals", "cheetah-vel", "ant-dir"):
        assert name in out
