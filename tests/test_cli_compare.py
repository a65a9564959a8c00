"""`compare` end to end at the smoke budget (a file of its own: see test_cli_validate.py)."""

import json

import numpy as np

from pgx_jax.cli import main


def test_compare_smoke_uses_equal_budgets(tmp_path, four_goals):
    out = tmp_path / "c"
    argv = ["compare", "--budget", "smoke", "--tasks-file", four_goals, "--groups", "2", "--seeds", "1"]
    argv += ["--random-draws", "2", "--groupings", "multitask,random,policygradex", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    c = json.loads((out / "comparison.json").read_text())
    assert list(c["groupings"]) == ["multitask", "per_task", "random", "policygradex"]
    steps = {s for g in c["groupings"].values() for seed in g["env_steps_per_task"] for draw in seed for s in draw}
    assert len(steps) == 1 and steps.pop() > 0  # every group of every grouping: the same steps per task
    per_task = c["groupings"]["per_task"]
    assert np.allclose(per_task["normalized"], 1.0)  # one seed: per_task is the best single-task policy
    assert len(c["groupings"]["random"]["groups"][0]) == 2
    for g in c["groupings"].values():
        assert np.all(np.isfinite(np.array(g["per_task_return"], dtype=float)))
    assert set(c["improvement"]) == set(c["improvement_return"]) == {"multitask", "per_task", "random"}
    assert isinstance(c["ill_conditioned_tasks"], list)
