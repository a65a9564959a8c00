import jax
import numpy as np

from pgx_jax import validate
from pgx_jax.config import NetworkConfig, PPOConfig
from pgx_jax.features import collect, flat_actor
from pgx_jax.networks import init_agent


def test_first_order_error_shrinks_with_the_perturbation(reacher):
    """The first-order estimate of log pi is exact up to second order: its error must fall
    quadratically as the step shrinks, along random directions."""
    net = NetworkConfig(depth=2, width=32)
    params = init_agent(net, reacher.obs_size, reacher.action_size, jax.random.PRNGKey(0))
    theta, _ = flat_actor(params)
    cfg_data = collect(
        PPOConfig(total_env_steps=1, network=net), _feature_cfg(), reacher, params, jax.random.PRNGKey(1)
    )
    obs = cfg_data["obs"].reshape(-1, reacher.obs_size)
    act = cfg_data["action"].reshape(-1, reacher.action_size)
    sizes = (0.001, 0.01, 0.05)
    for k in range(2):
        direction = jax.random.normal(jax.random.PRNGKey(10 + k), theta.shape)
        err = np.asarray(validate.approximation_error(net, reacher, params, obs, act, direction, sizes))
        assert np.all(np.isfinite(err)) and np.all(err >= 0)
        assert err[0] < err[1] < err[2], err
        assert err[0] < 1e-3
        # the remainder is second order: a 10x larger step gives about 100x the error. A wrong
        # linear term (e.g. none at all) leaves a first-order remainder, only about 10x.
        assert err[1] / err[0] > 30, err


def _feature_cfg():
    from pgx_jax.features import FeatureConfig

    return FeatureConfig(dim=4, transitions=100, holdout=0)
