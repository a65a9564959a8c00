import json
import os

import jax
import numpy as np
import pytest

from pgx_jax.core.config import NetworkConfig, PPOConfig
from pgx_jax.rl import checkpoint
from pgx_jax.rl.networks import init_agent, normalizer_update


@pytest.fixture()
def saved(tmp_path, fast_family):
    config = PPOConfig(total_env_steps=100, num_envs=8, network=NetworkConfig(depth=3, width=16))
    params = init_agent(config.network, fast_family.obs_size, fast_family.action_size, jax.random.PRNGKey(3))
    obs = jax.random.normal(jax.random.PRNGKey(4), (32, fast_family.obs_size))
    params = params.replace(normalizer=normalizer_update(params.normalizer, obs, np.ones(32, np.float32)))
    path = tmp_path / "policy"
    checkpoint.save_policy(path, params, config, fast_family, note="test")
    return path, params, config


def test_round_trip_is_exact(saved, fast_family):
    path, params, config = saved
    loaded, loaded_config, meta = checkpoint.load_policy(path, fast_family, config)
    assert loaded_config == config
    jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(params))
    assert meta["family"] == "fast-push" and meta["extra"] == {"note": "test"}
    assert meta["versions"]["jax"] == jax.__version__
    assert sorted(os.listdir(path.parent)) == ["policy"]  # no temporary leftovers


def test_other_family_is_a_clear_error(saved, reacher):
    path, _, _ = saved
    with pytest.raises(ValueError, match=r"made for family 'fast-push'.*not 'reacher-goals'"):
        checkpoint.load_policy(path, reacher)


def test_other_network_is_a_clear_error(saved, fast_family):
    path, _, config = saved
    other = PPOConfig(total_env_steps=100, num_envs=8, network=NetworkConfig(depth=2, width=16))
    with pytest.raises(ValueError, match="does not match the requested network"):
        checkpoint.load_policy(path, fast_family, other)


def test_other_conditioning_is_refused_naming_both(saved, fast_family):
    path, _, config = saved
    blind = NetworkConfig(depth=3, width=16, conditioning="none")  # same shapes, told nothing of the task
    with pytest.raises(
        ValueError, match="trained with conditioning 'task_id'; the requested network has conditioning 'none'"
    ):
        checkpoint.load_policy(path, fast_family, PPOConfig(total_env_steps=100, num_envs=8, network=blind))


def test_a_blind_policy_acts_the_same_whatever_task_id_it_is_shown(fast_family):
    """conditioning="none": the one-hot task id reaches neither actor nor critic."""
    from pgx_jax.rl import networks

    n = fast_family.n_tasks
    obs = jax.random.normal(jax.random.PRNGKey(5), (n, fast_family.obs_size))
    env_part = np.repeat(np.asarray(obs[:1, : fast_family.obs_size - n]), n, 0)
    shown = np.concatenate([env_part, np.eye(n, dtype=np.float32)], 1)  # same state, each task's id
    for conditioning, same in (("none", True), ("task_id", False)):
        net = NetworkConfig(depth=2, width=16, conditioning=conditioning)
        params = init_agent(net, fast_family.obs_size, fast_family.action_size, jax.random.PRNGKey(6))
        x = networks.net_input(net, params.normalizer, shown, n)
        mean, log_std = networks.policy_apply(net, fast_family.action_size, params.actor, x)
        value = networks.value_apply(net, params.critic, x)
        spread = float(np.ptp(np.asarray(mean), 0).max() + np.ptp(np.asarray(value)))
        assert (spread == 0.0) is same, (conditioning, spread)


def test_corrupt_checkpoints_fail_clearly(saved, tmp_path):
    path, _, _ = saved
    with pytest.raises(ValueError, match="not a pgx_jax checkpoint"):
        checkpoint.load_policy(tmp_path / "nowhere")
    (path / "params.msgpack").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="params.msgpack is corrupt"):
        checkpoint.load_policy(path)
    meta = json.loads((path / "meta.json").read_text())
    meta["shapes"][".actor['params']['log_std']"] = [7]
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="stored shapes do not match"):
        checkpoint.load_policy(path)
    (path / "meta.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt"):
        checkpoint.load_policy(path)


def test_nonfinite_params_are_not_saved(saved, fast_family, tmp_path):
    _, params, config = saved
    bad = params.replace(normalizer=params.normalizer.replace(mean=params.normalizer.mean * np.nan))
    with pytest.raises(FloatingPointError):
        checkpoint.save_policy(tmp_path / "bad", bad, config, fast_family)
    assert not (tmp_path / "bad").exists()


def test_an_interrupted_group_save_never_leaves_an_index_naming_replaced_policies(
    saved, fast_family, tmp_path, monkeypatch
):
    """save_groups over an earlier run's groups, interrupted where the new policies replace the
    old ones: no groups.json is left (load_groups refuses, rather than loading the wrong
    policies); completed, the index names exactly the new policies."""
    _, params, config = saved
    two = jax.tree.map(lambda x: np.stack([np.asarray(x), np.asarray(x) + 1]), params)
    tasks = [{"name": n} for n in fast_family.task_names]
    out = tmp_path / "run"
    checkpoint.save_groups(out, two, [[0, 1], [2, 3]], config, fast_family, tasks)
    real = os.replace

    def interrupted(src, dst):
        if os.path.basename(os.fspath(dst)) == "groups":
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_groups(out, two, [[0], [1, 2, 3]], config, fast_family, tasks)
    monkeypatch.setattr(checkpoint.os, "replace", real)
    assert not (out / "groups.json").exists()
    assert not [p for p in os.listdir(out) if p.startswith(".groups-")]  # the temporary directory is gone
    checkpoint.save_groups(out, two, [[0], [1, 2, 3]], config, fast_family, tasks)
    index = json.loads((out / "groups.json").read_text())
    assert [g["task_ids"] for g in index["groups"]] == [[0], [1, 2, 3]]
    assert sorted(os.listdir(out / "groups")) == ["0", "1"]
