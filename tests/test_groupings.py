"""What every grouping's choice consumed (issue 29, part 4): PolicyGradEx's estimate, the
gradient-similarity baseline's sample, the truth's trainings and meta-RL's routing probes are
counted beside the groups' training. Counted from the configs, checked against what the stages
are documented to run; nothing here trains."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pgx_jax import make_family
from pgx_jax.estimation.affinity import sample_subsets
from pgx_jax.experiments.compare import _budget_cell, _seed_report
from pgx_jax.experiments.config import ValidateConfig, pipeline_config
from pgx_jax.experiments.cost import estimation_env_steps
from pgx_jax.experiments.groupings import selection_env_steps
from pgx_jax.experiments.groups import group_updates
from pgx_jax.experiments.meta_rl import count_selection
from pgx_jax.experiments.truth import truth_env_steps


@pytest.fixture(scope="module")
def pendulum():
    family = make_family("pendulum-physics")
    config = pipeline_config("demo", family, conditioning="none")
    return family, config, sample_subsets(0, family.n_tasks, config.affinity)


def test_the_estimate_counts_meta_training_features_sample_and_evaluation(pendulum):
    family, config, subsets = pendulum
    n, L = family.n_tasks, family.episode_length
    spent = estimation_env_steps(config, family, subsets)
    meta = config.meta_ppo()  # early-0.02 without the task id: 2% of the budget
    assert meta.total_env_steps == 20_000
    np.testing.assert_allclose(spent["meta_train"], meta.num_updates(L) * meta.num_envs * meta.unroll(L) / n)
    per_update = meta.num_envs * meta.unroll(L)
    assert 20_000 - per_update < spent["meta_train"][0] * n <= 20_000  # the fraction asked for, in whole updates
    # 2,048 training and 512 held-out transitions: 11 + 3 whole episodes of 200 steps
    np.testing.assert_array_equal(spent["features"], 14 * L)
    # the separate 32,768-transition sample behind b_i: 164 episodes; b_i is read from it
    np.testing.assert_array_equal(spent["gradient_sample"], 164 * L)
    np.testing.assert_array_equal(spent["b_sample"], spent["gradient_sample"])
    np.testing.assert_array_equal(spent["evaluate"], subsets.sum(0) * config.eval_episodes * L)
    parts = spent["meta_train"] + spent["features"] + spent["gradient_sample"] + spent["evaluate"]
    np.testing.assert_allclose(spent["total"], parts)
    # the rollout evaluation is most of it here: more than the groups' own training per task
    assert (
        spent["total"].mean()
        > group_updates(config.ppo, family, [5])[0] * config.ppo.num_envs * config.ppo.unroll(L) / 5
    )
    gain = estimation_env_steps(dataclasses.replace(config, evaluator="gain"), family, subsets)
    np.testing.assert_array_equal(gain["evaluate"], 0)


def test_without_a_separate_sample_b_is_read_from_the_training_episodes(pendulum):
    family, config, subsets = pendulum
    smoke = pipeline_config("smoke", family)
    spent = estimation_env_steps(smoke, family, subsets)
    np.testing.assert_array_equal(spent["gradient_sample"], 0)
    np.testing.assert_array_equal(spent["b_sample"], 2 * family.episode_length)  # 256 transitions: 2 episodes


def test_the_full_truth_trains_every_subset_with_the_per_task_budget(pendulum):
    """Each subset of s tasks trains s times one task's budget, so a task's share is that budget
    once per subset holding it; the fine-tune truth shares its fixed steps among the subset."""
    family, config, subsets = pendulum
    per_task = {
        s: group_updates(config.ppo, family, [s])[0] * config.ppo.num_envs * config.ppo.unroll(200) / s for s in (5,)
    }
    full = truth_env_steps("full", ValidateConfig(), config, family, subsets)
    np.testing.assert_allclose(full, subsets.sum(0) * per_task[5])
    vconfig = ValidateConfig(truth="finetune", finetune_fraction=0.1)
    fine = truth_env_steps("finetune", vconfig, config, family, subsets)
    steps = vconfig.finetune(config.ppo, 200)
    one = steps.num_updates(200) * steps.num_envs * steps.unroll(200)
    np.testing.assert_allclose(fine, subsets.sum(0) * one / 5)


def test_each_grouping_is_charged_what_its_choice_consumed(pendulum):
    family, config, subsets = pendulum
    names = ["multitask", "per_task", "random", "gradient_similarity", "ground_truth", "policygradex"]
    spent = selection_env_steps(config, family, subsets, ValidateConfig(), names)
    est = estimation_env_steps(config, family, subsets)
    for free in ("multitask", "per_task", "random"):
        np.testing.assert_array_equal(spent[free], 0)
    np.testing.assert_allclose(spent["policygradex"], est["total"])
    np.testing.assert_allclose(spent["gradient_similarity"], est["meta_train"] + est["b_sample"])
    evaluation = subsets.sum(0) * config.eval_episodes * family.episode_length
    truth = truth_env_steps("full", ValidateConfig(), config, family, subsets)
    np.testing.assert_allclose(spent["ground_truth"], truth + evaluation)
    assert list(spent) == names
    fine = ValidateConfig(truth="finetune")
    spent = selection_env_steps(config, family, subsets, fine, ["ground_truth"])
    want = truth_env_steps("finetune", fine, config, family, subsets) + evaluation + est["meta_train"]
    np.testing.assert_allclose(spent["ground_truth"], want)  # fine-tunes start from theta*


def test_the_report_adds_training_and_selection_per_task():
    n = 4
    chosen = {"multitask": [[[0, 1, 2, 3]]], "random": [[[0, 1], [2, 3]], [[0, 2], [1, 3]]]}
    groups = [(0, 1, 2, 3), (0, 1), (2, 3), (0, 2), (1, 3)]
    returns = {g: np.arange(n, dtype=float) for g in groups}
    steps = {g: 100.0 for g in groups}
    spent = {"multitask": np.zeros(n), "random": np.array([10.0, 20.0, 30.0, 40.0])}
    out = _seed_report(chosen, returns, {g: None for g in groups}, steps, spent, n)
    assert out["multitask"]["total_env_steps_per_task"] == 100.0
    assert out["random"]["total_env_steps_per_task"] == 125.0
    grouping = {"env_steps_per_task": [out["random"]["env_steps_per_task"]], "total_env_steps_per_task": [125.0]}
    assert _budget_cell(grouping) == "100 / 125"
    assert _budget_cell({"env_steps_per_task": [[[100.0]]]}) == "100 / -"  # a report from before


def test_meta_rl_charges_routing_probes_only_where_there_is_a_choice():
    scored = {"multitask": {"env_steps_per_source_task": [500.0]}, "random": {"env_steps_per_source_task": [500.0] * 4}}
    chosen = {"multitask": [[(0, 1, 2)]], "random": [[(0,), (1, 2)], [(0, 1), (2,)]]}
    spent = {"multitask": np.zeros(3), "random": np.zeros(3)}
    count_selection(scored, chosen, spent, probe_steps=2000)
    assert scored["multitask"]["routing_env_steps_per_test_task"] == 0
    assert scored["random"]["routing_env_steps_per_test_task"] == 4000  # two groups probed per test task
    assert scored["random"]["total_env_steps_per_source_task"] == 500.0


def test_equal_totals_shorten_the_groups_by_what_the_estimate_consumed(pendulum):
    """B' = B - E in whole updates: the shortened groups' training plus the estimate is at most
    the budget and within one update of it; where the estimate takes it all, refused."""
    from pgx_jax.experiments.compare import equal_total_config
    from pgx_jax.experiments.groups import env_steps_per_task

    family, config, subsets = pendulum
    gain = dataclasses.replace(config, evaluator="gain")
    spent = float(estimation_env_steps(gain, family, subsets)["total"].mean())
    short = equal_total_config(gain, family, spent)
    budget, left = env_steps_per_task(config.ppo, family), env_steps_per_task(short.ppo, family)
    per_update = config.ppo.num_envs * config.ppo.unroll(family.episode_length)
    assert budget - per_update < left + spent <= budget
    assert dataclasses.replace(short, ppo=config.ppo) == gain  # only the training budget changed
    with pytest.raises(ValueError, match=r"the estimate consumes 1[0-9]{2},[0-9]{3} env steps per task, the groups'"):
        equal_total_config(config, family)  # the rollout evaluator's episodes alone exceed the budget


def test_compare_refuses_equal_totals_that_leave_no_training(tmp_path, capsys):
    from pgx_jax.cli import main

    out = tmp_path / "out"
    argv = ["compare", "--family", "pendulum-physics", "--conditioning", "none", "--equal-total", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 2
    assert "equal totals: the estimate consumes" in capsys.readouterr().err
    assert not out.exists()


def test_compare_trains_the_shortened_groups_with_the_same_keys_and_compares_them_with_free_groupings(
    pendulum, monkeypatch
):
    """compare(equal_total=True) with the choice and the training replaced by recorders: the
    shortened groups are PolicyGradEx's, trained with the same key, for B - E in whole updates,
    reported as policygradex_equal_total with its total at most B, and compared with the free
    groupings only."""
    import jax

    from pgx_jax import simulators
    from pgx_jax.experiments import compare as compare_mod
    from pgx_jax.experiments.groups import env_steps_per_task

    family, config, subsets = pendulum
    config = dataclasses.replace(config, evaluator="gain")
    n = family.n_tasks
    groups = [list(range(0, 5)), list(range(5, 10))]
    names = ["multitask", "gradient_similarity", "policygradex"]
    spent = selection_env_steps(config, family, subsets, ValidateConfig(), names)
    spent.update(per_task=np.zeros(n))
    calls = []

    def choose(family, config, seed, **kwargs):
        chosen = {"per_task": [[[i] for i in range(n)]], "multitask": [[list(range(n))]]}
        chosen.update(gradient_similarity=[groups], policygradex=[groups])
        return chosen, spent

    def train(cfg, family, distinct, key, say):
        calls.append((cfg, [tuple(g) for g in distinct], np.asarray(jax.random.key_data(key))))
        steps = env_steps_per_task(cfg.ppo, family)
        returns = {tuple(g): np.full(n, 100.0 if cfg is config else 90.0) for g in distinct}
        return returns, {tuple(g): None for g in distinct}, {tuple(g): float(steps) for g in distinct}, ({}, key)

    monkeypatch.setattr(compare_mod, "choose_groupings", choose)
    monkeypatch.setattr(compare_mod, "_train_and_evaluate", train)
    monkeypatch.setattr(simulators, "random_policy_returns", lambda family, ids, key, episodes: np.zeros(n))
    report = compare_mod.compare(family, config, [0], groupings=names, equal_total=True)
    (_, _, key_full), (short_cfg, short_groups, key_short) = calls
    assert short_groups == [tuple(g) for g in groups] and np.array_equal(key_full, key_short)
    budget, left = env_steps_per_task(config.ppo, family), env_steps_per_task(short_cfg.ppo, family)
    per_update = config.ppo.num_envs * config.ppo.unroll(family.episode_length)
    total = report["groupings"]["policygradex_equal_total"]["total_env_steps_per_task"][0]
    assert total == pytest.approx(left + float(np.mean(spent["policygradex"])))
    assert budget - per_update < total <= budget
    assert set(report["improvement_equal_total"]) == {"multitask", "per_task"}  # not gradient similarity
    assert report["improvement_equal_total"]["multitask"]["relative"] == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="equal totals shorten policygradex's groups"):
        compare_mod.compare(family, config, [0], groupings=["multitask"], equal_total=True)


def test_compare_end_to_end_on_a_cheap_family(fast_family):
    """pgx_jax.experiments.compare with every grouping, one seed, on four tasks of brax's trivial
    env (the fast tier's whole compare): each grouping is a partition trained at the same env
    steps per task; PolicyGradEx's groups are ``policygradex``'s for the seed's key; what a
    choice consumed is zero for the free groupings and largest for the truth's."""
    import jax

    import pgx_jax
    from pgx_jax.experiments.compare import compare
    from pgx_jax.experiments.config import pipeline_config

    config = pipeline_config("smoke", fast_family, groups=2)
    report = compare(fast_family, config, [0], random_draws=1)
    groupings = report["groupings"]
    assert set(groupings) == {"multitask", "per_task", "random", "gradient_similarity", "ground_truth", "policygradex"}
    for name, g in groupings.items():  # per seed the groups (random: per seed, per draw)
        partitions = [d for seed in g["groups"] for d in seed] if name == "random" else g["groups"]
        assert partitions and all(sorted(t for grp in p for t in grp) == [0, 1, 2, 3] for p in partitions), name
        assert np.unique(np.asarray(g["env_steps_per_task"], float)).tolist() == [4800.0], name
    run = pgx_jax.policygradex(fast_family, dataclasses.replace(config, train_groups=False), jax.random.PRNGKey(0))
    assert groupings["policygradex"]["groups"][0] == run.groups
    spent = {name: float(np.mean(g["selection_env_steps_per_task"])) for name, g in groupings.items()}
    assert spent["multitask"] == spent["per_task"] == spent["random"] == 0.0
    assert 0 < spent["gradient_similarity"] and 0 < spent["policygradex"] < spent["ground_truth"]
