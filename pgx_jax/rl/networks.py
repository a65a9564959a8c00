"""Actor and critic MLPs (flax), the Gaussian policy, and the observation normaliser.

The policy is a diagonal Gaussian with a state-independent learned log standard deviation;
actions are clipped to [-1, 1] by the environment step, log-probabilities are of the
unclipped sample (as in purejaxrl and CleanRL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from pgx_jax.core.config import NetworkConfig
from pgx_jax.core.types import Family, PRNGKey, PyTree

_ACT = {"tanh": nn.tanh, "relu": nn.relu, "elu": nn.elu, "swish": nn.swish}


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units, then a linear head of ``out`` units."""

    hidden: Sequence[int]
    out: int
    activation: str = "tanh"
    head_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        act = _ACT[self.activation]
        for w in self.hidden:
            x = act(nn.Dense(w, kernel_init=nn.initializers.orthogonal(math.sqrt(2)))(x))
        return nn.Dense(self.out, kernel_init=nn.initializers.orthogonal(self.head_scale))(x)


class Actor(nn.Module):
    """Mean [A] of the Gaussian policy and its state-independent log std [A]."""

    net: NetworkConfig
    action_size: int

    @nn.compact
    def __call__(self, obs):
        hidden = (self.net.width,) * self.net.depth
        mean = MLP(hidden, self.action_size, self.net.activation, head_scale=0.01)(obs)
        log_std = self.param("log_std", nn.initializers.constant(self.net.init_log_std), (self.action_size,))
        return mean, jnp.broadcast_to(log_std, mean.shape)


class Critic(nn.Module):
    """State value []."""

    net: NetworkConfig

    @nn.compact
    def __call__(self, obs):
        hidden = (self.net.width,) * self.net.depth
        return MLP(hidden, 1, self.net.activation, head_scale=1.0)(obs)[..., 0]


@struct.dataclass
class NormalizerState:
    """Running mean and variance of observations (parallel Welford/Chan update).

    Attributes:
        mean: float32 [O]; var: float32 [O]; count: float32 [].
    """

    mean: jax.Array
    var: jax.Array
    count: jax.Array


@struct.dataclass
class AgentParams:
    """Everything a trained policy needs: actor and critic params and the observation normaliser."""

    actor: PyTree
    critic: PyTree
    normalizer: NormalizerState


def normalizer_init(obs_size: int) -> NormalizerState:
    return NormalizerState(jnp.zeros(obs_size), jnp.ones(obs_size), jnp.zeros(()))


def normalizer_update(state: NormalizerState, obs: jax.Array, weight: jax.Array) -> NormalizerState:
    """Merge a weighted batch of observations (float32 [B, O], weights [B]) into the statistics."""
    n = jnp.sum(weight)
    safe_n = jnp.maximum(n, 1.0)
    batch_mean = jnp.sum(obs * weight[:, None], 0) / safe_n
    batch_var = jnp.sum(jnp.square(obs - batch_mean) * weight[:, None], 0) / safe_n
    total = state.count + n
    delta = batch_mean - state.mean
    frac = jnp.where(total > 0, n / jnp.maximum(total, 1.0), 0.0)
    mean = state.mean + delta * frac
    m2 = state.var * state.count + batch_var * n + jnp.square(delta) * state.count * frac
    var = jnp.where(total > 0, m2 / jnp.maximum(total, 1.0), state.var)
    return NormalizerState(mean, var, total)


def normalize(state: NormalizerState, obs: jax.Array, n_tasks: int, conditioning: str = "task_id") -> jax.Array:
    """The networks' input: the environment part of ``obs`` [..., O] standardised, then the
    trailing one-hot task id as is (``conditioning="task_id"``) or zeros (``"none"``: the
    networks are not told the task; see :class:`pgx_jax.core.config.NetworkConfig`)."""
    env_part = (obs[..., :-n_tasks] - state.mean[:-n_tasks]) / jnp.sqrt(state.var[:-n_tasks] + 1e-8)
    task_part = obs[..., -n_tasks:]
    if conditioning == "none":
        task_part = jnp.zeros_like(task_part)
    return jnp.concatenate([jnp.clip(env_part, -10.0, 10.0), task_part], axis=-1)


def net_input(net: NetworkConfig, state: NormalizerState, obs: jax.Array, n_tasks: int) -> jax.Array:
    """:func:`normalize` with the network's own conditioning: what actor and critic see."""
    return normalize(state, obs, n_tasks, net.conditioning)


def init_agent(net: NetworkConfig, obs_size: int, action_size: int, key: PRNGKey) -> AgentParams:
    """Fresh actor, critic and normaliser for observations of size ``obs_size``."""
    k_actor, k_critic = jax.random.split(key)
    dummy = jnp.zeros((1, obs_size))
    return AgentParams(
        actor=Actor(net, action_size).init(k_actor, dummy),
        critic=Critic(net).init(k_critic, dummy),
        normalizer=normalizer_init(obs_size),
    )


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array) -> jax.Array:
    """Log density [...] of ``action`` [..., A] under the diagonal Gaussian."""
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    return jnp.sum(log_std + 0.5 * math.log(2 * math.pi * math.e), axis=-1)


def policy_apply(net: NetworkConfig, action_size: int, actor_params: PyTree, obs: jax.Array):
    """(mean, log_std), each float32 [..., A], for already-normalised ``obs`` [..., O]."""
    return Actor(net, action_size).apply(actor_params, obs)


def value_apply(net: NetworkConfig, critic_params: PyTree, obs: jax.Array) -> jax.Array:
    """Value float32 [...] for already-normalised ``obs`` [..., O]."""
    return Critic(net).apply(critic_params, obs)


def make_act(net: NetworkConfig, action_size: int, n_tasks: int, params: AgentParams, *, deterministic: bool = False):
    """The policy as a rollout act function: raw obs [E, O] and a key -> (action [E, A], log_prob [E])."""

    def act(obs, key):
        mean, log_std = policy_apply(net, action_size, params.actor, net_input(net, params.normalizer, obs, n_tasks))
        action = mean if deterministic else mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return action, gaussian_log_prob(mean, log_std, action)

    return act


def make_policy(params: AgentParams, config, n_tasks: int, *, deterministic: bool = True):
    """A trained policy as a plain function: ``act(obs, key=None) -> action``.

    Args:
        params: the policy (``load_policy``'s first value, or one group of ``train_groups``).
        config: its :class:`pgx_jax.core.config.PPOConfig` or :class:`NetworkConfig` (the network
            and conditioning it was trained with).
        n_tasks: the number of tasks of the family it was trained on (the observation ends with
            their one-hot id, which the network reads or, with conditioning ``"none"``, zeroes).
        deterministic: act with the Gaussian's mean (the evaluation's policy) or sample from it.

    Returns:
        ``act(obs float [..., O], key) -> action float [..., A]``, jittable and vmappable; ``obs``
        is the family's observation (environment observation, then the one-hot task id: O is
        the size the policy was trained on, else ``ValueError`` naming both); ``key`` is needed
        only to sample. The action is the network's, unclipped: a JAX family's step clips it to
        [-1, 1]; a host family's environment takes ``family.to_env_action(action)`` (the
        gymnasium adapters' map to the space's bounds or discrete actions).
    """
    net = config if isinstance(config, NetworkConfig) else config.network
    action_size = int(params.actor["params"]["log_std"].shape[-1])
    obs_size = int(jnp.shape(params.normalizer.mean)[-1])
    inner = make_act(net, action_size, n_tasks, params, deterministic=deterministic)

    def act(obs, key: PRNGKey | None = None):
        if key is None:
            if not deterministic:
                raise ValueError("a sampling policy (deterministic=False) needs a key")
            key = jax.random.PRNGKey(0)  # unused by the mean
        obs = jnp.asarray(obs, jnp.float32)
        if obs.ndim == 0 or obs.shape[-1] != obs_size:
            raise ValueError(
                f"observation of shape {tuple(obs.shape)}; this policy takes [..., {obs_size}] (the environment's "
                f"observation, then the one-hot id of the {n_tasks} tasks)"
            )
        batched = obs[None] if obs.ndim == 1 else obs
        action = inner(batched, key)[0]
        return action[0] if obs.ndim == 1 else action

    return act


def flat_actor(params: AgentParams):
    """(theta float32 [P], unravel) for the actor (policy) parameters."""
    return ravel_pytree(params.actor)


def with_actor(params: AgentParams, theta: jax.Array) -> AgentParams:
    """``params`` with the actor replaced by the flattened ``theta`` [P]."""
    _, unravel = flat_actor(params)
    return params.replace(actor=unravel(theta))


def log_prob_fn(net: NetworkConfig, family: Family, params: AgentParams):
    """``(theta [P], obs [O], action [A]) -> log pi_theta(a|s)`` with theta* 's normaliser."""
    _, unravel = flat_actor(params)

    def f(theta, obs, action):
        obs = net_input(net, params.normalizer, obs, family.n_tasks)
        mean, log_std = policy_apply(net, family.action_size, unravel(theta), obs)
        return gaussian_log_prob(mean, log_std, action)

    return f
