"""Physics variants: tasks share the reward and differ in the dynamics (``system_fn``).

``pendulum-physics`` (gravity, pole mass and length, motor polarity: the CartPole analogue) and
``cheetah-gravity`` (gravity and torso mass: the LunarLander analogue).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from pgx_jax.families.base import FamilySpec, default_reset, range_validator

STANDARD_GRAVITY = 9.81


def _pendulum_system(sys, params):
    """Inverted pendulum with the task's gravity, pole mass and length (scales of the default
    pole: its mass, its centre of mass and its inertia, a rod's m l^2) and motor gear (a negative
    gear is a motor wired the other way round)."""
    inertia = sys.link.inertia
    m, length = params["pole_mass"], params["pole_length"]
    inertia = inertia.replace(
        mass=inertia.mass.at[1].multiply(m),
        i=inertia.i.at[1].multiply(m * length * length),
        transform=inertia.transform.replace(pos=inertia.transform.pos.at[1].multiply(length)),
    )
    gravity = jnp.zeros(3).at[2].set(-params["gravity"])
    actuator = sys.actuator.replace(gear=sys.actuator.gear * params["motor"])
    return sys.replace(link=sys.link.replace(inertia=inertia), gravity=gravity, actuator=actuator)


PENDULUM_MAX_ANGLE = 0.2  # Brax's inverted_pendulum terminates beyond this pole angle (rad)


def _pendulum_reward(state, action, params):
    del action, params
    return 1.0 - state.done  # one per step the pole stays up (Brax's reward, 0 on the falling step)


def _pendulum_default_tasks() -> list[dict]:
    """10 poles: 5 with the motor wired forward, 5 reversed (the planted groups); within each,
    gravity from the Moon's to twice Earth's, pole mass x0.5-2 and length x0.5-1.5."""
    variants = [  # (gravity m/s^2, pole mass scale, pole length scale)
        (9.81, 1.0, 1.0),
        (1.62, 1.0, 1.0),
        (19.6, 1.0, 1.0),
        (9.81, 2.0, 0.5),
        (9.81, 0.5, 1.5),
    ]
    tasks = []
    for group, motor in enumerate((1.0, -1.0)):
        for g, m, length in variants:
            tasks.append(
                {
                    "name": f"{'fwd' if motor > 0 else 'rev'}_g{g:g}_m{m:g}_l{length:g}",
                    "gravity": g,
                    "pole_mass": m,
                    "pole_length": length,
                    "motor": motor,
                    "group": group,
                }
            )
    return tasks


def _pendulum_distribution(rng, m: int) -> list[dict]:
    """Poles drawn uniformly from the box the default ten span: gravity between the Moon's and
    twice Earth's, pole mass x0.5-2, length x0.5-1.5, the motor forward or reversed (p = 1/2).
    All three vary at once where each default pole varies one from Earth's standard pole, so a
    test pole is usually a combination no source task has (the motor's sign always is one)."""
    return [
        {
            "name": f"test{i:02d}",
            "gravity": float(rng.uniform(1.62, 19.6)),
            "pole_mass": float(rng.uniform(0.5, 2.0)),
            "pole_length": float(rng.uniform(0.5, 1.5)),
            "motor": float(rng.choice((-1.0, 1.0))),
        }
        for i in range(m)
    ]


def _cheetah_gravity_distribution(rng, m: int) -> list[dict]:
    """Worlds drawn from the range the default eight span: gravity 1.62-19.6 m/s^2 (uniform in
    its logarithm, as the defaults are spread) and torso mass x0.7-1.5."""
    return [
        {
            "name": f"test{i:02d}",
            "gravity": float(np.exp(rng.uniform(np.log(1.62), np.log(19.6)))),
            "torso_mass": float(rng.uniform(0.7, 1.5)),
        }
        for i in range(m)
    ]


_check_physics = range_validator(
    {
        "gravity": (0.0, 50.0),
        "pole_mass": (0.1, 10.0),
        "pole_length": (0.25, 4.0),
        "motor": (-5.0, 5.0),
        "torso_mass": (0.1, 10.0),
    }
)


def _gravity_system(sys, params):
    """The task's gravity (m/s^2, pointing down) and torso mass scale (inertia scaled with it)."""
    inertia = sys.link.inertia
    m = params["torso_mass"]
    inertia = inertia.replace(mass=inertia.mass.at[0].multiply(m), i=inertia.i.at[0].multiply(m))
    return sys.replace(link=sys.link.replace(inertia=inertia), gravity=jnp.zeros(3).at[2].set(-params["gravity"]))


CHEETAH_GRAVITY_CTRL_COST = 0.1


def _forward_reward(state, action, params):
    del params
    return state.metrics["x_velocity"] - CHEETAH_GRAVITY_CTRL_COST * jnp.sum(jnp.square(action))


def forward_velocity(state, action, params):
    del action, params
    return state.metrics["x_velocity"]


def _cheetah_gravity_default_tasks() -> list[dict]:
    """8 worlds: 4 of low gravity (0.15-0.5 g), 4 of high gravity (1-2 g) (the planted groups),
    each with a lighter and a heavier torso."""
    tasks = []
    for group, gravities in enumerate(((1.62, 3.71), (9.81, 19.6))):
        for g in gravities:
            for m in (0.7, 1.5):
                tasks.append({"name": f"g{g:g}_m{m:g}", "gravity": g, "torso_mass": m, "group": group})
    return tasks


SPECS: dict[str, FamilySpec] = {
    "pendulum-physics": FamilySpec(
        env_name="inverted_pendulum",
        env_kwargs={},
        fields={"gravity": (), "pole_mass": (), "pole_length": (), "motor": ()},
        validate=_check_physics,
        default_tasks=_pendulum_default_tasks,
        reward_fn=_pendulum_reward,
        reset_fn=default_reset,
        episode_length=200,
        objective=f"+1 per step while |pole angle| < {PENDULUM_MAX_ANGLE} rad (CartPole analogue)",
        system_fn=_pendulum_system,
        varies="dynamics",
        task_distribution=_pendulum_distribution,
    ),
    "cheetah-gravity": FamilySpec(
        env_name="halfcheetah",
        env_kwargs={},
        fields={"gravity": (), "torso_mass": ()},
        validate=_check_physics,
        default_tasks=_cheetah_gravity_default_tasks,
        reward_fn=_forward_reward,
        reset_fn=default_reset,
        episode_length=100,
        objective=f"v_x - {CHEETAH_GRAVITY_CTRL_COST}*|a|^2 under the task's gravity and torso mass",
        metric=("mean_forward_velocity", forward_velocity, "mean"),
        system_fn=_gravity_system,
        varies="dynamics",
        task_distribution=_cheetah_gravity_distribution,
    ),
}
