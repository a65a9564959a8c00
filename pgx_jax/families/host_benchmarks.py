"""The paper's benchmarks as host-stepped families: gymnasium classic control and Box2D,
Meta-World MT10 and highway-env, each an optional extra.

Every family here is a :class:`pgx_jax.families.HostFamily` built by name with
:func:`pgx_jax.make_family`, like the Brax families. A missing package raises
:class:`MissingExtraError` naming the ``pip install`` to run, before anything is built.

========================  =============================  ==========================================
family                    package (extra)                tasks
========================  =============================  ==========================================
``cartpole-physics``      gymnasium (``gym``)            10 carts: gravity, pole mass and length,
                                                         motor polarity (planted: polarity)
``lunarlander-gravity``   gymnasium[box2d] (``box2d``)   10 landers, gravity -1.5 to -11.5 m/s^2
                                                         (planted: weak / strong gravity)
``highway-density``       highway-env (``highway``)      10 traffic densities 0.5 to 3.0
                                                         (planted: sparse / dense)
``metaworld-mt10``        metaworld (``metaworld``)      the 10 MT10 manipulation tasks, success
                                                         rate reported next to the return
========================  =============================  ==========================================
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pgx_jax.families.base import planted_summary, range_validator
from pgx_jax.families.host import HostFamily


class MissingExtraError(ImportError):
    """A family needs a package that is not installed; the message says what to install."""


def require(module: str, family: str, pip: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"family {family!r} needs the {module!r} package, which is not installed ({e}). "
            f"Install it with: pip install {pip} (or, from a clone of pgx_jax: pip install -e '.[envs]')"
        ) from None


@dataclasses.dataclass(frozen=True)
class HostSpec:
    """How to build a named family by its own function (same task-entry validation as the Brax
    specs): the host families here, and JAX families whose content comes from an optional package
    (``metaworld-mt10-mjx``, :mod:`pgx_jax.families.mt10_family`)."""

    env: str  # shown by `pgx-jax families`
    module: str  # the package the family needs
    pip: str  # what to pip install when it is missing
    fields: Mapping[str, tuple[int, ...]]
    validate: Callable[[str, np.ndarray], str | None]
    default_tasks: Callable[[], list[dict]]
    build: Callable[[list[dict], int], Any]  # (validated entries, episode_length) -> HostFamily or TaskFamily
    episode_length: int
    objective: str
    varies: str
    backend: str = "host (gymnasium)"
    #: ``(rng, m) -> m task entries`` drawn from the distribution the default tasks come from
    #: (``pgx-jax meta-rl``'s unseen tasks); None: the family has none
    task_distribution: Callable[[np.random.Generator, int], list[dict]] | None = None


# --- CartPole: the paper's classic-control benchmark, physics varied --------------------------


def _cartpole_default_tasks() -> list[dict]:
    """As ``pendulum-physics``: 5 variants (gravity, pole mass, pole length) with the motor wired
    forward, the same 5 reversed; the planted groups are the motor polarity."""
    variants = [(9.8, 0.1, 0.5), (1.62, 0.1, 0.5), (19.6, 0.1, 0.5), (9.8, 0.3, 0.25), (9.8, 0.05, 1.0)]
    return [
        {
            "name": f"{'fwd' if motor > 0 else 'rev'}_g{g:g}_m{m:g}_l{length:g}",
            "gravity": g,
            "masspole": m,
            "length": length,
            "motor": motor,
            "group": group,
        }
        for group, motor in enumerate((1.0, -1.0))
        for g, m, length in variants
    ]


def _cartpole_distribution(rng, m: int) -> list[dict]:
    """Carts drawn from the box the default ten span, as ``pendulum-physics``'s poles: gravity
    between the Moon's and twice Earth's, pole mass 0.05-0.3 kg, half-length 0.25-1 m (both
    uniform in the logarithm, as the defaults are spread), the motor forward or reversed
    (p = 1/2). All vary at once, so a test cart is a combination no source task has."""
    log_uniform = lambda lo, hi: float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # noqa: E731
    return [
        {
            "name": f"test{i:02d}",
            "gravity": float(rng.uniform(1.62, 19.6)),
            "masspole": log_uniform(0.05, 0.3),
            "length": log_uniform(0.25, 1.0),
            "motor": float(rng.choice((-1.0, 1.0))),
        }
        for i in range(m)
    ]


_check_cartpole = range_validator(
    {"gravity": (0.1, 50.0), "masspole": (0.01, 5.0), "length": (0.05, 5.0), "motor": (-5.0, 5.0)}
)


def _make_cartpole(task: Mapping, episode_length: int):
    gym = require("gymnasium", "cartpole-physics", '"gymnasium[classic-control]==1.3.0"')
    env = gym.make("CartPole-v1", max_episode_steps=episode_length).unwrapped
    env.gravity = float(task["gravity"])
    env.masspole = float(task["masspole"])
    env.length = float(task["length"])  # half the pole's length, as gymnasium defines it
    env.force_mag = 10.0 * float(task["motor"])
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length
    return env


def _build_cartpole(entries: list[dict], episode_length: int) -> HostFamily:
    return _family(
        "cartpole-physics",
        entries,
        episode_length,
        lambda i: _make_cartpole(entries[i], episode_length),
        env_obs_size=4,
        action_size=1,
        to_env_action=_sign_to_discrete,
    )


def _sign_to_discrete(a: np.ndarray) -> int:
    """One continuous action to CartPole's two: push right when a > 0. The Gaussian policy's
    score-function gradient stays unbiased: the env action is a function of the sampled a."""
    return int(a[0] > 0.0)


# --- LunarLander: varied gravity ---------------------------------------------------------------


def _lunar_default_tasks() -> list[dict]:
    gravities = (-1.5, -2.5, -3.5, -4.5, -5.5, -7.5, -8.5, -9.5, -10.5, -11.5)
    return [{"name": f"g{g:g}", "gravity": g, "group": int(g < -6.5)} for g in gravities]


def _check_lunar(field, v):
    if not -12.0 < float(v) < 0.0:
        return f"gravity {float(v)} must lie in (-12, 0) (gymnasium's LunarLander range)"
    return None


def _make_lunar(task: Mapping, episode_length: int):
    gym = require("gymnasium", "lunarlander-gravity", '"gymnasium[box2d]==1.3.0"')
    require("Box2D", "lunarlander-gravity", '"gymnasium[box2d]==1.3.0"')
    return gym.make(
        "LunarLander-v3", continuous=True, gravity=float(task["gravity"]), max_episode_steps=episode_length
    ).unwrapped


def _build_lunar(entries: list[dict], episode_length: int) -> HostFamily:
    return _family(
        "lunarlander-gravity",
        entries,
        episode_length,
        lambda i: _make_lunar(entries[i], episode_length),
        env_obs_size=8,
        action_size=2,
        to_env_action=lambda a: a,
    )


# --- highway-env: traffic density -------------------------------------------------------------


def _highway_default_tasks() -> list[dict]:
    densities = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0)
    return [{"name": f"density{d:g}", "density": d, "group": int(d > 1.75)} for d in densities]


def _highway_distribution(rng, m: int) -> list[dict]:
    """Traffic densities drawn uniformly from the span of the default ten, 0.5 to 3.0."""
    return [{"name": f"test{i:02d}", "density": float(rng.uniform(0.5, 3.0))} for i in range(m)]


def _check_density(field, v):
    if not 0.1 <= float(v) <= 5.0:
        return f"density {float(v)} is outside [0.1, 5.0]"
    return None


def _make_highway(task: Mapping, episode_length: int):
    gym = require("gymnasium", "highway-density", '"highway-env==1.12.1"')
    require("highway_env", "highway-density", '"highway-env==1.12.1"')
    config = {
        "vehicles_density": float(task["density"]),
        "action": {"type": "ContinuousAction"},
        "duration": episode_length,  # seconds at 1 policy step per second: one step a second
        "policy_frequency": 1,
    }
    return gym.make("highway-fast-v0", config=config).unwrapped


def _build_highway(entries: list[dict], episode_length: int) -> HostFamily:
    return _family(
        "highway-density",
        entries,
        episode_length,
        lambda i: _make_highway(entries[i], episode_length),
        env_obs_size=25,
        action_size=2,
        to_env_action=lambda a: a,
        max_envs=128,
    )


# --- Meta-World MT10 ----------------------------------------------------------------------------

MT10_TASKS = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)


def _mt10_default_tasks() -> list[dict]:
    return [{"name": name} for name in MT10_TASKS]


@functools.cache
def _mt10_benchmark(seed: int):
    metaworld = require("metaworld", "metaworld-mt10", '"metaworld==3.1.1"')
    return metaworld.MT10(seed=seed)  # ~10 s to build: once per process


def _make_mt10(name: str, seed: int = 0):
    bench = _mt10_benchmark(seed)
    env = bench.train_classes[name]()
    env.set_task(next(t for t in bench.train_tasks if t.env_name == name))  # one fixed goal per task
    return env


def _build_mt10(entries: list[dict], episode_length: int) -> HostFamily:
    unknown = [e["name"] for e in entries if e["name"] not in MT10_TASKS]
    if unknown:
        raise ValueError(f"metaworld-mt10: unknown tasks {unknown}; MT10's tasks are {list(MT10_TASKS)}")
    if episode_length > 500:
        raise ValueError(f"metaworld-mt10: episode_length {episode_length} exceeds Meta-World's 500-step limit")
    require("metaworld", "metaworld-mt10", '"metaworld==3.1.1"')
    names = [e["name"] for e in entries]
    return _family(
        "metaworld-mt10",
        entries,
        episode_length,
        lambda i: _make_mt10(names[i]),
        env_obs_size=39,
        action_size=4,
        to_env_action=lambda a: a,
        metric=("success_rate", lambda info: float(info.get("success", 0.0)), "max"),
        max_envs=160,
    )


def _lunar_distribution(rng, m: int) -> list[dict]:
    """Landers under gravity drawn uniformly from the span of the default ten, -11.5 to -1.5 m/s^2."""
    return [{"name": f"test{i:02d}", "gravity": float(rng.uniform(-11.5, -1.5))} for i in range(m)]


def _family(name, entries, episode_length, make_env, **kwargs) -> HostFamily:
    """A HostFamily over validated ``entries``; ``make_env(task_index)`` builds an env."""
    fields = [k for k in entries[0] if k not in ("name", "group")]
    groups = [e["group"] for e in entries] if "group" in entries[0] else None
    spec = HOST_FAMILIES[name]
    return HostFamily(
        name=name,
        make_env=make_env,
        task_names=tuple(e["name"] for e in entries),
        groups=None if groups is None else tuple(groups),
        episode_length=int(episode_length),
        params={f: [e[f] for e in entries] for f in fields},
        objective=spec.objective,
        backend=spec.backend,
        **kwargs,
    )


HOST_FAMILIES: dict[str, HostSpec] = {
    "cartpole-physics": HostSpec(
        env="gymnasium CartPole-v1",
        module="gymnasium",
        pip='"gymnasium[classic-control]==1.3.0"',
        fields={"gravity": (), "masspole": (), "length": (), "motor": ()},
        validate=_check_cartpole,
        default_tasks=_cartpole_default_tasks,
        build=_build_cartpole,
        episode_length=200,
        objective="+1 per step until the pole falls (|angle| > 12 deg) or the cart leaves the track",
        varies="dynamics",
        task_distribution=_cartpole_distribution,
    ),
    "lunarlander-gravity": HostSpec(
        env="gymnasium LunarLander-v3 (continuous)",
        module="Box2D",
        pip='"gymnasium[box2d]==1.3.0"',
        fields={"gravity": ()},
        validate=_check_lunar,
        default_tasks=_lunar_default_tasks,
        build=_build_lunar,
        episode_length=200,
        objective="LunarLander shaped landing reward under the task's gravity",
        varies="dynamics",
        backend="host (gymnasium, Box2D)",
        task_distribution=_lunar_distribution,
    ),
    "highway-density": HostSpec(
        env="highway-env highway-fast-v0",
        module="highway_env",
        pip='"highway-env==1.12.1"',
        fields={"density": ()},
        validate=_check_density,
        default_tasks=_highway_default_tasks,
        build=_build_highway,
        episode_length=30,
        objective="highway-env reward (speed, lane, no crash) in the task's traffic density",
        varies="dynamics",
        backend="host (highway-env)",
        task_distribution=_highway_distribution,
    ),
    "metaworld-mt10": HostSpec(
        env="Meta-World MT10",
        module="metaworld",
        pip='"metaworld==3.1.1"',
        fields={},
        validate=lambda field, v: None,
        default_tasks=_mt10_default_tasks,
        build=_build_mt10,
        episode_length=150,
        objective="Meta-World v3 dense reward (0-10 per step); success rate reported",
        varies="reward and dynamics (10 different manipulation tasks)",
        backend="host (Meta-World, MuJoCo)",
    ),
}


def installed(name: str, specs: Mapping[str, HostSpec] | None = None) -> bool:
    """Whether the package family ``name`` of ``specs`` (default :data:`HOST_FAMILIES`) needs can be imported."""
    try:
        importlib.import_module((specs or HOST_FAMILIES)[name].module)
        return True
    except ImportError:
        return False


def make_host_family(
    name: str, entries: Sequence[Mapping], episode_length: int | None = None, spec: HostSpec | None = None
):
    """Build family ``name`` of ``spec`` (default: the host family's) from validated task
    ``entries`` (see :func:`pgx_jax.make_family`)."""
    spec = spec or HOST_FAMILIES[name]
    require(spec.module, name, spec.pip)
    return spec.build([dict(e) for e in entries], int(episode_length or spec.episode_length))


def catalog_rows(specs: Mapping[str, HostSpec] | None = None) -> list[dict[str, Any]]:
    """The ``pgx-jax families`` rows of ``specs`` (default :data:`HOST_FAMILIES`)."""
    specs = HOST_FAMILIES if specs is None else specs
    return [
        {
            "family": name,
            "n": len(spec.default_tasks()),
            "env": spec.env,
            "backend": spec.backend,
            "varies": spec.varies,
            "objective": spec.objective,
            "planted": planted_summary(spec.default_tasks()),
            "extra": spec.pip + ("" if installed(name, specs) else " (not installed)"),
        }
        for name, spec in specs.items()
    ]
