"""The JAX simulator: Brax / MJX families stepped inside the compiled programs.

Every operation is one jitted call with the family and configs static: S trainings are
:func:`pgx_jax.rl.ppo.train` vmapped over masks and keys, the evaluation of S policies is a
``lax.map`` over them, the rollout evaluator shards the subset axis over the local devices.
Programs can be compiled ahead (compile and run timed apart) and their FLOPs counted.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from pgx_jax.core.config import NetworkConfig, PPOConfig
from pgx_jax.core.types import PRNGKey
from pgx_jax.estimation.evaluators import rollout_stats, subset_stats
from pgx_jax.estimation.features import FeatureConfig, collect, gradient_features
from pgx_jax.rl import maml, ppo
from pgx_jax.rl.evaluate import episode_stats, random_act
from pgx_jax.rl.networks import AgentParams, make_act
from pgx_jax.runtime.flops import count_flops, xla_flops
from pgx_jax.runtime.sharding import over_devices

#: :func:`pgx_jax.rl.ppo.train` compiled (``config`` and ``family`` static): one cache for all callers
_train_one = jax.jit(ppo.train, static_argnums=(0, 1))
_train_many = jax.jit(ppo.train_vmapped, static_argnums=(0, 1))
_train_blocks = jax.jit(ppo.train_blocks, static_argnums=(0, 1), static_argnames=("block",))
_features = jax.jit(gradient_features, static_argnums=(0, 1, 2))
_meta_train = jax.jit(maml.meta_train_vmapped, static_argnums=(0, 1, 4))
_meta_probe = jax.jit(maml.probe_returns, static_argnums=(0, 1))
_meta_adapt = jax.jit(maml.adaptation_curves, static_argnums=(0, 1))


@functools.partial(jax.jit, static_argnames=("net", "family", "episodes", "kmax", "batch"))
def _subset_eval(params, masks, key, *, net, family, episodes, kmax, batch):
    def one(args):
        p, m = args
        return subset_stats(p, family, m, key, network=net, episodes=episodes, max_subset_size=kmax)

    return jax.lax.map(one, (params, masks), batch_size=batch)


@functools.partial(jax.jit, static_argnames=("net", "family", "episodes", "batch", "kmax", "devices"))
def _rollout(params, feats, betas, scales, masks, key, *, net, family, episodes, batch, kmax, devices):
    def score(args):
        b, c, m = args
        kwargs = dict(network=net, episodes=episodes, subset_batch=batch, max_subset_size=kmax)
        return rollout_stats(params, family, feats, b, c, m, key, **kwargs)

    return over_devices(score, (betas, scales, masks), devices)


class JaxSimulator:
    """:class:`pgx_jax.simulators.Simulator` for a :class:`pgx_jax.families.TaskFamily`."""

    counts_flops = True
    # one vmapped rollout makes 32 episodes cheap (pendulum-physics, demo: a fine-tune truth's
    # f(S, i) has standard error 0.22 at 32, a fifth of its spread over subsets)
    eval_episodes = 32
    # b_i from 32768 transitions per task (one backward pass each): on task-agnostic cheetah-vel
    # the tasks' mean gradients then agree across independent draws at r = 0.91 (0.24 at 2048)
    # and the loss / gain estimates' groups are the planted split (benchmarks/RESULTS.md, issue 13)
    gradient_transitions = 32768

    def __init__(self, family):
        self.family = family

    # --- training ---------------------------------------------------------------------------

    def train_many(self, config: PPOConfig, masks, keys, init_params, active_updates, *, on_update=None, block=None):
        del on_update  # one call: nothing to report between updates
        args = (config, self.family, jnp.asarray(masks), keys, init_params, active_updates)
        if block is not None:  # still one call: a lax.map over blocks of one shape
            return _train_blocks(*args, block=block)
        return _train_many(*args)

    def train_many_timed(self, config: PPOConfig, masks, keys, init_params, active_updates):
        masks = jnp.asarray(masks)
        t0 = time.perf_counter()
        # compiled ahead of time, so compile and run are timed apart without training twice
        compiled = _train_many.lower(config, self.family, masks, keys, init_params, active_updates).compile()
        info = {"compile_s": time.perf_counter() - t0}
        t0 = time.perf_counter()
        params, metrics = compiled(masks, keys, init_params, active_updates)
        jax.block_until_ready(params)
        info["train_s"] = time.perf_counter() - t0
        traced = lambda m, k, p, a: ppo.train_vmapped(config, self.family, m, k, p, a)  # noqa: E731
        info["flops_train"] = count_flops(traced, masks, keys, init_params, active_updates).flops
        info["xla_flops_train"] = xla_flops(compiled)
        return params, metrics, info

    def train_one(self, config: PPOConfig, mask, key: PRNGKey, init_params):
        return _train_one(config, self.family, jnp.asarray(mask), key, init_params)

    def train_timed(self, config: PPOConfig, mask, key: PRNGKey):
        t0 = time.perf_counter()
        compiled = _train_one.lower(config, self.family, jnp.asarray(mask), key, None).compile()
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        params, metrics = compiled(jnp.asarray(mask), key, None)
        jax.block_until_ready(params)
        return params, metrics, time.perf_counter() - t0, compile_s

    resumable_training = True

    def train_chunked(
        self, config: PPOConfig, mask, key: PRNGKey, init_params, *, max_chunks, on_chunk, timings, checkpoint=None,
        start=None, on_metrics=None,
    ):  # fmt: skip
        family = self.family
        total = config.num_updates(family.episode_length)
        chunk = total // max(d for d in range(1, min(max_chunks, total) + 1) if total % d == 0)
        t0 = time.perf_counter()
        args = (jnp.asarray(mask), key, init_params)
        init = jax.jit(ppo.init_state, static_argnums=(0, 1)).lower(config, family, *args).compile()
        state = init(*args)
        step = jax.jit(ppo.run_updates, static_argnums=(0, 1, 3)).lower(config, family, state, chunk).compile()
        if timings is not None:
            timings["compile_s"] = time.perf_counter() - t0  # the first init call's run is in it: milliseconds
        parts, first = [], chunk
        if start is not None:  # (state, metrics of the chunks done, updates done) from ``checkpoint``
            state, parts, done = start
            parts, first = list(parts), done + chunk
        for done in range(first, total + 1, chunk):
            state, metrics = step(state)
            parts.append(metrics)
            if checkpoint is not None:
                checkpoint(state, parts, done)
            if on_chunk is not None:
                jax.block_until_ready(metrics)
                on_chunk(done, total)
            if on_metrics is not None:
                on_metrics(done, jax.device_get(metrics))
        metrics = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
        return state.params, metrics

    # --- features ---------------------------------------------------------------------------

    def features_xla_flops(self, ppo_config: PPOConfig, cfg: FeatureConfig, params: AgentParams, key: PRNGKey):
        return xla_flops(_features.lower(ppo_config, cfg, self.family, params, key).compile())

    def collect(self, ppo_config: PPOConfig, cfg: FeatureConfig, params: AgentParams, key: PRNGKey):
        return collect(ppo_config, cfg, self.family, params, key)

    def gradient_features(self, ppo_config: PPOConfig, cfg: FeatureConfig, params: AgentParams, key: PRNGKey):
        return _features(ppo_config, cfg, self.family, params, key)

    # --- evaluation -------------------------------------------------------------------------

    def evaluate(self, params, task_ids, key: PRNGKey, episodes: int, *, network: NetworkConfig, deterministic):
        # pure: traceable in params, task ids and key (vmap it, or compile it with :meth:`compile`)
        family = self.family
        if params is None:
            act = random_act(family.action_size)
        else:
            act = make_act(network, family.action_size, family.n_tasks, params, deterministic=deterministic)
        return episode_stats(family, act, task_ids, key, episodes)

    def compile(self, fn):
        return jax.jit(fn)

    def _subset_static(self, masks, network, episodes, batch, max_subset_size=None) -> dict:
        kmax = int(np.asarray(masks).sum(1).max()) if max_subset_size is None else max_subset_size
        return dict(net=network, family=self.family, episodes=episodes, kmax=kmax, batch=batch)

    def policies_on_subsets(self, params, masks, key: PRNGKey, *, network, episodes, batch, max_subset_size=None):
        static = self._subset_static(masks, network, episodes, batch, max_subset_size)
        return {name: np.asarray(v) for name, v in _subset_eval(params, jnp.asarray(masks), key, **static).items()}

    def policies_on_subsets_timed(self, params, masks, key: PRNGKey, *, network, episodes, batch):
        static = self._subset_static(masks, network, episodes, batch)
        masks = jnp.asarray(masks)
        compiled = _subset_eval.lower(params, masks, key, **static).compile()
        t0 = time.perf_counter()
        stats = {name: np.asarray(v) for name, v in compiled(params, masks, key).items()}
        info = {"evaluate_s": time.perf_counter() - t0}
        traced = lambda p, m: _subset_eval(p, m, key, **static)  # noqa: E731
        info["flops_evaluate"] = count_flops(traced, params, masks).flops
        return stats, info

    def estimates_on_subsets(
        self, theta_star, feats, betas, scales, masks, key, *, network, episodes, batch, kmax, devices
    ):
        return _rollout(
            theta_star,
            feats,
            betas,
            scales,
            masks,
            key,
            net=network,
            family=self.family,
            episodes=episodes,
            batch=batch,
            kmax=kmax,
            devices=devices,
        )

    # --- meta-RL (MAML): one compiled call each ---------------------------------------------

    def meta_train_many(self, mconfig, masks, keys, num_iterations, active_iterations, init_params):
        return _meta_train(mconfig, self.family, masks, keys, num_iterations, active_iterations, init_params)

    def meta_probe(self, mconfig, params, task_ids, key):
        return _meta_probe(mconfig, self.family, params, task_ids, key)

    def meta_adapt(self, mconfig, params, task_ids, key):
        return _meta_adapt(mconfig, self.family, params, task_ids, key)
