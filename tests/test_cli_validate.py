"""`validate` end to end at the smoke budget, and the bad arguments of `validate` and `compare`
(a file of its own: the slowest CLI test beside `compare`'s, each in its own file so that
pytest-xdist's loadfile runs them on different workers)."""

import json

import numpy as np
import pytest

from pgx_jax.cli import main


def test_validate_smoke_writes_complete_json(tmp_path, four_goals, capsys):
    out = tmp_path / "v"
    argv = ["validate", "--budget", "smoke", "--tasks-file", four_goals, "--groups", "2", "--out", str(out)]
    hessian = ["--hessian", "--hessian-probes", "2", "--hessian-subsets", "2"]
    assert main(argv + ["--replicates", "2", "--truth", "both", "--no-progress", *hessian]) == 0
    v = json.loads((out / "validation.json").read_text())
    h = v["hessian"]  # the generalisation analysis of the first 2 estimated policies
    assert h["objective"] == "ppo" and h["subsets_analysed"] == 2 and h["probes"] == 2
    assert set(h["by_objective"]) == {"ppo", "log_likelihood"} and h["bound"] == h["by_objective"]["ppo"]["bound"]
    for o in h["by_objective"].values():
        for point in ("estimated", "theta_star"):
            assert len(o["traces"][point]["mean"]) == len(h["layers"]) == len(o["traces"][point]["se"])
            assert np.all(np.array(o["traces"][point]["se"]) > 0)
        assert len(o["bound"]["per_subset"]) == 2 and o["bound"]["mean"] > 0
        assert np.isfinite(o["observed_gap"]["mean"]) and o["loss_range"]["mean"] > 0
        assert all(n > 0 for n in o["n"])
    assert set(v["approx_error"]) == {"0.001", "0.005", "0.01", "0.05"}
    for kind in ("random", "random_vs_logp"):
        errs = [v["approx_error"][r][kind] for r in ("0.001", "0.005", "0.01", "0.05")]
        assert all(0 <= a < b for a, b in zip(errs, errs[1:], strict=False)), errs  # shrinks with the step
    step = v["estimate"]["step_relative"]
    assert len(step["per_subset"]) == v["subsets"] and 0 < step["min"] <= step["max"] < 1
    assert v["versions"]["pgx_jax_commit"] != ""
    kl = v["estimate"]["kl"]
    assert len(kl["per_subset"]) == v["subsets"] and 0 < kl["min"] <= kl["mean"] <= kl["max"]
    assert v["estimate"]["rollout_scores_se"]["mean"] >= 0
    assert list(v["truths"]) == ["full", "finetune"] and v["truth"]["kind"] == "full"
    masks = np.array(v["subset_masks"], bool)
    for kind, truth in v["truths"].items():
        for key in ("spearman", "spearman_within_task", "mean_rel_error", "nmi", "true_scores", "true_affinity"):
            assert key in truth
        assert set(truth["by_evaluator"]) == {"rollout", "loss", "gain"}
        true = np.array(truth["true_scores"], dtype=float)
        assert np.all(np.isfinite(true[masks])) and np.all(np.isnan(true[~masks]))
        groups = truth["by_evaluator"]["rollout"]["true_groups"]
        assert sorted(i for g in groups for i in g) == [0, 1, 2, 3] and len(groups) == 2
        assert min(truth["env_steps_per_subset"]) > 0
        (rep,) = truth["replicates"]  # the second training of every subset, against the first
        again = np.array(truth["replicate_scores"][0], dtype=float)
        assert not np.allclose(again[masks], true[masks])  # trained with its own keys
        assert rep["score_noise_sd"] > 0 and truth["self_agreement"]["score_noise_sd"] == rep["score_noise_sd"]
        for key in ("ami", "nmi_chance", "spearman_within_task_null_sd", "tasks_used"):
            assert key in truth and key in truth["by_evaluator"]["gain"]
        assert truth["tasks_used"] <= truth["by_evaluator"]["rollout"]["tasks_total"] <= 4
        sp = v["speedup"]["by_truth"][kind]
        assert sp["reference"]["flops"] > 0 and sp["flops"] > 0 and sp["wall"] > 0
        for png in (f"truth_scatter_{kind}.png", f"affinity_true_{kind}.png"):
            assert (out / png).stat().st_size > 1000
    # full training gives every task of a subset the per-task budget of any group
    full, ft = v["truths"]["full"], v["truths"]["finetune"]
    assert len(set(full["env_steps_per_task"])) == 1 and len(set(ft["env_steps_per_subset"])) == 1
    assert "kl" in ft and "kl" not in full
    sp = v["speedup"]
    assert sp["against"] == "full" and sp["flops"] == sp["by_truth"]["full"]["flops"]
    assert sp["estimation"]["flops"] > 0 and sp["estimation"]["linesearch_trips_per_iteration"] is None  # newton
    solve = v["estimate"]["solve"]
    assert solve["solver"] == "newton" and len(solve["grad_ratio"]["per_subset"]) == v["subsets"]
    assert solve["kl"]["max"] > 0
    for png in ("approx_error.png", "affinity_estimated.png"):
        assert (out / png).stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "[full] speedup in FLOPs" in printed and "[hessian, log_likelihood] bound" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["validate", "--finetune-fraction", "0"], "finetune_fraction must be > 0"),
        (["validate", "--groups", "12"], "--groups 12 must be in [1, 9]"),
        (["compare", "--groupings", "multitask,oracle"], "unknown ['oracle']"),
        (["compare", "--seeds", "0"], "--seeds must be >= 1"),
        (["compare", "--evaluator", "magic"], "unknown evaluator 'magic'"),
        (["validate", "--truth", "oracle"], "unknown truth 'oracle'"),
        (["compare", "--truth", "oracle"], "unknown truth 'oracle'"),
        (["validate", "--conditioning", "task"], "--conditioning: unknown conditioning 'task'"),
        (["run", "--eval-episodes", "0"], "--eval-episodes must be >= 1"),
        (["validate", "--hessian", "--hessian-probes", "1"], "hessian probes must be >= 2"),
        (["validate", "--hessian", "--hessian-subsets", "0"], "hessian subsets must be a positive integer"),
    ],
)
def test_bad_validate_and_compare_arguments_fail_first(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
