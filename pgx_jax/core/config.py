"""Frozen, validated configuration: the network, PPO, and the PPO config of a named budget.

Configs are hashable (static jit arguments) and never mutated; derived sizes are properties.
Budgets are named presets: ``smoke`` (tests: seconds of compute after compile), ``demo``
(the default: meaningful learning on a 2-core CPU in a few minutes per training) and ``full``
(paper scale, for accelerators); their numbers are in :mod:`pgx_jax.core.budgets`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import pgx_jax.core.budgets as budgets
from pgx_jax.core.budgets import BUDGETS

ACTIVATIONS = ("tanh", "relu", "elu", "swish")
CONDITIONINGS = ("task_id", "none")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """Actor and critic MLPs. The paper uses 2-, 4- and 8-layer MLPs.

    ``conditioning`` says what the networks are told about the task: ``"task_id"`` (default)
    feeds them the one-hot task id every family appends to the observation, so one network can
    serve every task; ``"none"`` feeds zeros in its place (the input is the environment
    observation alone, as in the paper's meta-RL experiments), so tasks that want different
    behaviour from the same observations compete for one policy. The input size is the same
    either way (the id's first-layer rows then get no gradient), so parameter layouts, features
    and checkpoints do not depend on it.
    """

    depth: int = 2
    width: int = 64
    activation: str = "tanh"
    init_log_std: float = -0.5
    conditioning: str = "task_id"

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError(f"network depth must be >= 1, got {self.depth}")
        if self.width < 1:
            raise ValueError(f"network width must be >= 1, got {self.width}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; known: {list(ACTIVATIONS)}")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {self.conditioning!r}; known: {list(CONDITIONINGS)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PPOConfig:
    """Hyperparameters of one PPO training run.

    ``reward_scale`` multiplies the rewards PPO learns from (not the reported returns): keeping
    value targets of order 1 keeps the critic's gradients from swamping the update.

    ``unroll_length`` of None means one whole episode per update; otherwise it must divide the
    family's episode length (episodes of all environments start and end together).
    """

    total_env_steps: int
    num_envs: int = 256
    unroll_length: int | None = None
    num_epochs: int = 4
    num_minibatches: int = 4
    learning_rate: float = 3e-4
    max_grad_norm: float = 0.5
    discount: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    reward_scale: float = 1.0
    normalize_observations: bool = True
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)

    def __post_init__(self):
        positive_ints = ("total_env_steps", "num_envs", "num_epochs", "num_minibatches")
        for name in positive_ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.unroll_length is not None and self.unroll_length < 1:
            raise ValueError(f"unroll_length must be a positive integer or None, got {self.unroll_length!r}")
        for name in ("learning_rate", "max_grad_norm", "clip_eps", "reward_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("discount", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("value_coef", "entropy_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def unroll(self, episode_length: int) -> int:
        """Steps T per update for a family with this episode length."""
        return episode_length if self.unroll_length is None else self.unroll_length

    def num_updates(self, episode_length: int) -> int:
        """PPO updates U: total env steps over the steps of one update (at least one)."""
        return max(1, self.total_env_steps // (self.num_envs * self.unroll(episode_length)))

    def check_for(self, n_tasks: int, episode_length: int) -> None:
        """Raise ``ValueError`` if this config cannot train a family of this shape."""
        t = self.unroll(episode_length)
        if episode_length % t:
            raise ValueError(
                f"unroll_length {t} must divide the episode length {episode_length} "
                f"(divisors: {[d for d in range(1, episode_length + 1) if episode_length % d == 0]})"
            )
        if self.num_envs % n_tasks:
            raise ValueError(
                f"num_envs {self.num_envs} must be a multiple of the number of tasks {n_tasks} "
                "so that a full mask spreads environments evenly"
            )
        if (self.num_envs * t) % self.num_minibatches:
            raise ValueError(
                f"num_envs * unroll_length = {self.num_envs * t} is not divisible by "
                f"num_minibatches {self.num_minibatches}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PPOConfig:
        d = dict(d)
        d["network"] = NetworkConfig(**d.get("network", {}))
        return cls(**d)


def budget_config(
    budget: str, family_name: str = "reacher-goals", n_tasks: int | None = None, **overrides
) -> PPOConfig:
    """The PPO config of a named budget for a family.

    Args:
        budget: ``smoke``, ``demo`` or ``full``.
        family_name: scales the env-step budget (locomotion is ~10x slower per step than reacher).
        n_tasks: if given, ``num_envs`` is rounded up to a multiple of it and of the minibatch count.
        **overrides: any :class:`PPOConfig` field.
    """
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; known budgets: {list(BUDGETS)}")
    steps = budgets.STEPS.get(family_name, budgets.DEFAULT_STEPS)[budget]
    num_envs = budgets.NUM_ENVS[budget]
    if family_name in budgets.LOCOMOTION and budget == "demo":
        num_envs = 128
    fields = {"total_env_steps": steps, "num_envs": num_envs, **budgets.FAMILY_FIELDS.get(family_name, {})}
    if budget == "smoke":
        fields.update(num_epochs=2, num_minibatches=2)
    fields.update(overrides)
    if n_tasks and "num_envs" not in overrides:
        multiple = math.lcm(n_tasks, fields.get("num_minibatches", 4))
        fields["num_envs"] = -(-fields["num_envs"] // multiple) * multiple
    if isinstance(fields.get("network"), Mapping):
        fields["network"] = NetworkConfig(**fields["network"])
    return PPOConfig(**fields)


def with_overrides(config, assignments, reserved: Mapping[str, str] | None = None, root: str = "") -> Any:
    """``config`` (a frozen dataclass, with dataclasses nested in it) with ``path=value``
    assignments applied in order, each by ``dataclasses.replace``, so every config's own checks
    run on the result.

    ``path`` names a field through the nested configs (``ppo.learning_rate``,
    ``ppo.network.width``, ``surrogate.rho``, ``eval_episodes``); ``value`` is a Python literal
    (``1e-3``, ``128``, ``True``, ``None``, ``(64, 64)``) or a bare word, read as a string. It must
    be of the field's declared type (its annotation: ``int | None`` takes an int or None,
    ``int | str`` either; an int or float for a float, never a bool for an int). ``reserved``
    maps paths that may not be set this way to the reason (the command-line option that sets
    them, with its own checks). ``root`` is the path of ``config`` itself in the assignments
    (``"ppo."``: ``ppo.learning_rate=1e-3`` sets ``config.learning_rate``; other paths are
    refused). ``ValueError`` names the assignment as given and what is allowed: the fields at
    that level, the type, or the reason.
    """
    import ast

    for item in assignments:
        path, sep, text = str(item).partition("=")
        if not sep or not path:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. ppo.learning_rate=1e-3")
        if not path.startswith(root):
            raise ValueError(f"--set {item!r}: only the fields of {root[:-1]} can be set here: {root}FIELD=VALUE")
        path = path[len(root) :]
        if reserved and path in reserved:
            raise ValueError(f"--set {item!r}: {reserved[path]}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        try:
            config = _assign(config, path.split("."), value, item)
        except ValueError as e:  # a config's own check names the value; say which assignment made it
            raise ValueError(str(e) if str(e).startswith("--set") else f"--set {item!r}: {e}") from None
    return config


def _assign(obj, names: list[str], value, item: str):
    fields = {f.name: f for f in dataclasses.fields(obj)}
    head = names[0]
    if head not in fields:
        raise ValueError(f"--set {item!r}: no field {head!r} here; allowed: {sorted(fields)}")
    current = getattr(obj, head)
    if len(names) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"--set {item!r}: {head!r} has no fields (its value is {current!r})")
        return dataclasses.replace(obj, **{head: _assign(current, names[1:], value, item)})
    if dataclasses.is_dataclass(current):
        allowed = sorted(f.name for f in dataclasses.fields(current))
        raise ValueError(f"--set {item!r}: {head!r} is a config; set one of its fields: {allowed}")
    import typing

    hint = typing.get_type_hints(type(obj)).get(head)
    return dataclasses.replace(obj, **{head: _typed(hint, current, value, item)})


def _accepts(hint, value):
    """``(True, value as that type)`` if ``value`` is of the annotation ``hint``, else ``(False, None)``."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            ok, v = _accepts(arm, value)
            if ok:
                return True, v
        return False, None
    if hint is type(None):
        return value is None, None
    if origin is tuple or hint is tuple:
        return isinstance(value, (tuple, list)), tuple(value) if isinstance(value, (tuple, list)) else None
    if hint is Any:
        return True, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # an annotation this reader does not know: the config's own check decides


def _typed(hint, current, value, item: str):
    """``value`` as the field's declared type ``hint`` (``ValueError`` if it is not one)."""
    import typing

    if hint is None:  # no annotation: the type of the current value
        hint = Any if current is None else type(current)
    ok, converted = _accepts(hint, value)
    if not ok:
        shown = " | ".join(getattr(a, "__name__", str(a)) for a in (typing.get_args(hint) or (hint,)))
        shown = shown.replace("NoneType", "None")
        raise ValueError(f"--set {item!r}: expected {shown} (the field is {current!r}), got {value!r}")
    return converted
