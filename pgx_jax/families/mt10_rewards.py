"""Meta-World's dense rewards as pure JAX functions: the shaping primitives of
``metaworld.utils.reward_utils`` and the tasks' rewards and success flags.

MT10 uses reward function version "v2" (the default of every v3 env class and of
``metaworld.make_mt_envs``); only that version is written here. Each function takes float32
arrays and is jittable and vmappable; the tasks' hyper-parameters are keyword arguments with
Meta-World's values as defaults.

Primitives (``x`` any shape; ``margin`` may be traced):

- ``tolerance(x, lower, upper, margin, sigmoid)`` = 1 inside [lower, upper]; outside, the
  sigmoid of ``d = distance to the nearest bound / margin``, scaled to equal 0.1 at ``d = 1``:
  gaussian ``exp(-d^2 ln 10)``, long_tail ``1 / (9 d^2 + 1)``; with ``margin == 0``, 0 outside;
- ``hamacher_product(a, b)`` = ``ab / (a + b - ab)`` for a, b in [0, 1] (0 where a = b = 0).
"""

from __future__ import annotations

import jax.numpy as jnp

#: tolerance()'s value at one margin from the bounds (Meta-World's _DEFAULT_VALUE_AT_MARGIN)
VALUE_AT_MARGIN = 0.1
SIGMOIDS = ("gaussian", "long_tail")


def _sigmoid(d, sigmoid: str):
    if sigmoid == "gaussian":
        return jnp.exp(-0.5 * d**2 * (-2.0 * jnp.log(VALUE_AT_MARGIN)))
    if sigmoid == "long_tail":
        return 1.0 / (d**2 * (1.0 / VALUE_AT_MARGIN - 1.0) + 1.0)
    raise ValueError(f"unknown sigmoid {sigmoid!r}; MT10's rewards use {SIGMOIDS}")


def tolerance(x, lower: float = 0.0, upper: float = 0.0, margin=0.0, sigmoid: str = "gaussian"):
    """Meta-World's ``tolerance(x, bounds=(lower, upper), margin, sigmoid)`` (module docstring), same shape as ``x``."""
    if lower > upper:
        raise ValueError(f"tolerance: lower bound {lower} above upper bound {upper}")
    x = jnp.asarray(x, jnp.float32)
    margin = jnp.asarray(margin, jnp.float32)
    inside = (lower <= x) & (x <= upper)
    d = jnp.where(x < lower, lower - x, x - upper) / jnp.where(margin > 0, margin, 1.0)
    outside = jnp.where(margin > 0, _sigmoid(d, sigmoid), 0.0)
    return jnp.where(inside, 1.0, outside)


def hamacher_product(a, b):
    """``ab / (a + b - ab)``, 0 where the denominator is 0 (a = b = 0); a, b in [0, 1]."""
    den = a + b - a * b
    return jnp.where(den > 0, a * b / jnp.where(den > 0, den, 1.0), 0.0)


def reach_reward(tcp, target, hand_init, radius: float = 0.05):
    """reach-v3 (v2 reward): ``(reward, success)`` with ``d = |tcp - target|``,
    ``reward = 10 * tolerance(d, 0, radius, margin=|hand_init - target|, long_tail)`` and
    success ``d <= 0.05``. ``tcp``, ``target``, ``hand_init``: float32 [3]."""
    d = jnp.linalg.norm(tcp - target)
    in_place = tolerance(d, 0.0, radius, jnp.linalg.norm(hand_init - target), "long_tail")
    return 10.0 * in_place, (d <= 0.05).astype(jnp.float32)


def gripper_caging_reward(
    action,
    obj,
    tcp,
    left_pad,
    right_pad,
    obj_init,
    init_tcp,
    *,
    obj_radius: float,
    pad_success_thresh: float,
    object_reach_radius: float,
    xz_thresh: float,
    desired_gripper_effort: float = 1.0,
    high_density: bool = False,
    medium_density: bool = False,
):
    """Meta-World's ``SawyerXYZEnv._gripper_caging_reward``, in [0, 1]. Inputs float32 [3]
    (``action`` [4]): the object, the tcp, the pads' body positions, the object's and the tcp's
    positions at the reset.

    caging_y = H(tol(|pad_y - obj_y|, obj_radius, pad_success_thresh, margin_i)) over both pads,
    margin_i = ||pad_y - obj_init_y| - pad_success_thresh|; caging_xz = tol(|tcp_xz - obj_xz|, 0,
    xz_thresh, |obj_init_xz - init_tcp_xz| - xz_thresh); caging = H(caging_y, caging_xz);
    gripping = clip(a_3, 0, effort) / effort where caging > 0.97, else 0; the reward is
    H(caging, gripping), averaged with caging (high density) or with the reach tolerance
    tol(|obj - tcp|, 0, object_reach_radius, ||obj_init - init_tcp| - object_reach_radius|)
    (medium density). All tolerances long_tail; H: :func:`hamacher_product`."""
    if high_density and medium_density:
        raise ValueError("gripper_caging_reward: high_density and medium_density exclude each other")
    pads_y = jnp.stack([left_pad[1], right_pad[1]])
    margins = jnp.abs(jnp.abs(pads_y - obj_init[1]) - pad_success_thresh)
    lr = tolerance(jnp.abs(pads_y - obj[1]), obj_radius, pad_success_thresh, margins, "long_tail")
    caging_y = hamacher_product(lr[0], lr[1])
    xz = jnp.array([0, 2])
    xz_margin = jnp.linalg.norm(obj_init[xz] - init_tcp[xz]) - xz_thresh
    caging_xz = tolerance(jnp.linalg.norm(tcp[xz] - obj[xz]), 0.0, xz_thresh, xz_margin, "long_tail")
    closed = jnp.clip(action[-1], 0.0, desired_gripper_effort) / desired_gripper_effort
    caging = hamacher_product(caging_y, caging_xz)
    out = hamacher_product(caging, jnp.where(caging > 0.97, closed, 0.0))
    if high_density:
        out = (out + caging) / 2
    if medium_density:
        margin = jnp.abs(jnp.linalg.norm(obj_init - init_tcp) - object_reach_radius)
        reach = tolerance(jnp.linalg.norm(obj - tcp), 0.0, object_reach_radius, margin, "long_tail")
        out = (out + reach) / 2
    return out


def push_reward(action, obj, tcp, tcp_opened, target, obj_init, init_tcp, left_pad, right_pad, radius: float = 0.05):
    """push-v3 (v2 reward): ``(reward, success)``. ``g`` = :func:`gripper_caging_reward` (object
    radius 0.015, pad threshold 0.05, reach radius 0.01, xz threshold 0.005, high density);
    reward ``2g``, then ``1 + 4g + 5 tol(|obj - target|, 0, radius, |obj_init - target|)`` where
    the tcp is within 2 cm of the object with the gripper open (``tcp_opened > 0``), and 10 where
    the object is within ``radius`` of the target; success ``|obj - target| <= radius``."""
    to_target = jnp.linalg.norm(obj - target)
    in_place = tolerance(to_target, 0.0, radius, jnp.linalg.norm(obj_init - target), "long_tail")
    grasped = gripper_caging_reward(
        action, obj, tcp, left_pad, right_pad, obj_init, init_tcp,
        obj_radius=0.015, pad_success_thresh=0.05, object_reach_radius=0.01, xz_thresh=0.005, high_density=True,
    )  # fmt: skip
    reward = 2.0 * grasped
    near = (jnp.linalg.norm(obj - tcp) < 0.02) & (tcp_opened > 0)
    reward = jnp.where(near, 1.0 + 2.0 * reward + 5.0 * in_place, reward)
    reward = jnp.where(to_target < radius, 10.0, reward)
    return reward, (to_target <= radius).astype(jnp.float32)


def drawer_open_reward(hand, handle, target, init_tcp, max_dist: float = 0.2):
    """drawer-open-v3 (v2 reward): ``(reward, success)`` with ``e = |handle - target|``, reward
    ``5 (tol(|(handle - hand) * (3, 3, 1)|, 0, 0.01, |(target + (0, max_dist, 0) - init_tcp) * (3, 3, 1)|)
    + tol(e, 0, 0.02, max_dist))`` (long_tail) and success ``e <= 0.03``. ``hand``: the
    observation's hand position (not the tcp), ``handle``: its object block's position."""
    error = jnp.linalg.norm(handle - target)
    opening = tolerance(error, 0.0, 0.02, max_dist, "long_tail")
    scale = jnp.array([3.0, 3.0, 1.0])
    handle_init = target + jnp.array([0.0, max_dist, 0.0])
    margin = jnp.linalg.norm((handle_init - init_tcp) * scale)
    caging = tolerance(jnp.linalg.norm((handle - hand) * scale), 0.0, 0.01, margin, "long_tail")
    return 5.0 * (caging + opening), (error <= 0.03).astype(jnp.float32)


def drawer_close_reward(action, handle, tcp, target, obj_init, init_tcp, radius: float = 0.05):
    """drawer-close-v3 (v2 reward): ``(reward, success)``. ``d = |handle - target|``; in_place =
    tol(d, 0, radius, ||obj_init - target| - radius|) (long_tail); reach = H(tol(|handle - tcp|,
    0, 0.005, ||obj_init - init_tcp| - 0.005|) (gaussian), clip(a_3, 0, 1)); reward
    ``10 H(reach, in_place)``, 10 where ``d <= radius + 0.015``, which is also success. Meta-World
    reads the base class's radius 0.05 here, not the env's own ``_TARGET_RADIUS`` (0.04)."""
    d = jnp.linalg.norm(handle - target)
    in_place = tolerance(d, 0.0, radius, jnp.abs(jnp.linalg.norm(obj_init - target) - radius), "long_tail")
    margin = jnp.abs(jnp.linalg.norm(obj_init - init_tcp) - 0.005)
    reach = tolerance(jnp.linalg.norm(handle - tcp), 0.0, 0.005, margin, "gaussian")
    reach = hamacher_product(reach, jnp.clip(action[-1], 0.0, 1.0))
    done = d <= radius + 0.015
    return 10.0 * jnp.where(done, 1.0, hamacher_product(reach, in_place)), done.astype(jnp.float32)


def button_press_topdown_reward(button, tcp, tcp_opened, target, init_tcp, obj_to_target_init):
    """button-press-topdown-v3 (v2 reward): ``(reward, success)``. ``p = |target_z - button_z|``;
    near = tol(|button - tcp|, 0, 0.01, |button - init_tcp|) (Meta-World's margin reads the
    button's current position); pressed = tol(p, 0, 0.005, obj_to_target_init); reward
    ``5 H(1 - tcp_opened, near)`` plus ``5 pressed`` where the tcp is within 3 cm of the button
    (long_tail tolerances); success ``p <= 0.024``."""
    to_button = jnp.linalg.norm(button - tcp)
    near = tolerance(to_button, 0.0, 0.01, jnp.linalg.norm(button - init_tcp), "long_tail")
    p = jnp.abs(target[2] - button[2])
    pressed = tolerance(p, 0.0, 0.005, obj_to_target_init, "long_tail")
    reward = 5.0 * hamacher_product(1.0 - tcp_opened, near) + jnp.where(to_button <= 0.03, 5.0 * pressed, 0.0)
    return reward, (p <= 0.024).astype(jnp.float32)


def door_open_reward(action, hand, handle, theta, target):
    """door-open-v3 (v2 reward): ``(reward, success)``; ``hand`` the observation's hand, ``handle``
    the handle geom's position, ``theta`` the door hinge's angle (negative opens). With
    ``door = handle - (0.05, 0, 0)`` and ``r = |hand_xy - door_xy|``: floor = 0 for r <= 0.12,
    else ``0.04 ln(r - 0.12) + 0.4``; above = 1 if hand_z >= floor else tol(floor - hand_z, 0,
    0.01, floor / 2); ready = H(above, tol(|hand - door - (0.05, 0.03, -0.01)|, 0, 0.06, 0.5));
    opened = ``0.2 [theta < -pi/90] + 0.8 tol(2pi/3 + theta, 0, 0.5, pi/3)``; grab =
    ``(clip(a_3, -1, 1) + 1) / 2``; reward ``2 H(ready, grab) + 8 opened``, 10 where
    ``|handle_x - target_x| <= 0.08``, which is also success (long_tail tolerances)."""
    door = handle - jnp.array([0.05, 0.0, 0.0])
    r = jnp.linalg.norm(hand[:2] - door[:2])
    floor = jnp.where(r <= 0.12, 0.0, 0.04 * jnp.log(jnp.maximum(r - 0.12, 1e-30)) + 0.4)
    below = tolerance(floor - hand[2], 0.0, 0.01, jnp.maximum(floor / 2.0, 0.0), "long_tail")
    above = jnp.where(hand[2] >= floor, 1.0, below)
    offset = jnp.linalg.norm(hand - door - jnp.array([0.05, 0.03, -0.01]))
    ready = hamacher_product(above, tolerance(offset, 0.0, 0.06, 0.5, "long_tail"))
    opened = 0.2 * (theta < -jnp.pi / 90.0) + 0.8 * tolerance(
        2.0 * jnp.pi / 3.0 + theta, 0.0, 0.5, jnp.pi / 3.0, "long_tail"
    )
    grab = (jnp.clip(action[3], -1.0, 1.0) + 1.0) / 2.0
    done = jnp.abs(handle[0] - target[0]) <= 0.08
    return jnp.where(done, 10.0, 2.0 * hamacher_product(ready, grab) + 8.0 * opened), done.astype(jnp.float32)


def window_reward(handle, tcp, target, x_init, handle_init, init_tcp, *, closing: bool, radius: float = 0.05):
    """window-open-v3 / window-close-v3 (v2 rewards): ``(reward, success)``. ``d = |handle_x -
    target_x|``; in_place = tol(d, 0, radius, ||x_init - target_x| - radius|) (long_tail), where
    Meta-World's ``x_init`` is the object's initial x on opening and the handle's on closing;
    reach = tol(|handle - tcp|, 0, 0.02, ||handle_init - init_tcp| - 0.02|), long_tail on
    opening, gaussian on closing; reward ``10 H(reach, in_place)``; success ``d <= radius``."""
    d = jnp.abs(handle[0] - target[0])
    in_place = tolerance(d, 0.0, radius, jnp.abs(jnp.abs(x_init - target[0]) - radius), "long_tail")
    margin = jnp.abs(jnp.linalg.norm(handle_init - init_tcp) - 0.02)
    reach = tolerance(jnp.linalg.norm(handle - tcp), 0.0, 0.02, margin, "gaussian" if closing else "long_tail")
    return 10.0 * hamacher_product(reach, in_place), (d <= radius).astype(jnp.float32)


def pick_place_reward(action, obj, tcp, tcp_opened, target, obj_init, init_tcp, left_pad, right_pad):
    """pick-place-v3 (v2 reward): ``(reward, success)``. Its own caging: left = tol(left_pad_y -
    obj_y), right = tol(obj_y - right_pad_y) (signed gaps, bounds (0.015, 0.05), margins
    ``||obj_y - pad_y| - 0.05|``: Meta-World means the pads' initial positions, but its
    ``init_left_pad``/``init_right_pad`` are views of the live ``MjData``, so the current pads
    are what it reads); xz = tol(|tcp_xz - obj_xz|, 0, 0.005, |obj_init_xz - init_tcp_xz| - 0.005);
    caging = H(H(left, right), xz); grasped = (H(caging, gripping) + caging) / 2 with gripping as
    in :func:`gripper_caging_reward`. in_place = tol(|obj - target|, 0, 0.05, |obj_init - target|);
    reward ``H(grasped, in_place)``, plus ``1 + 5 in_place`` where the tcp is within 2 cm of the
    object, the gripper open and the object 1 cm above its start; 10 within 0.05 of the target.
    Success: ``|obj - target| <= 0.07`` (long_tail tolerances)."""
    margins = jnp.abs(jnp.abs(obj[1] - jnp.stack([left_pad[1], right_pad[1]])) - 0.05)
    gaps = jnp.stack([left_pad[1] - obj[1], obj[1] - right_pad[1]])
    lr = tolerance(gaps, 0.015, 0.05, margins, "long_tail")
    xz = jnp.array([0, 2])
    xz_margin = jnp.linalg.norm(obj_init[xz] - init_tcp[xz]) - 0.005
    caging = hamacher_product(
        hamacher_product(lr[0], lr[1]),
        tolerance(jnp.linalg.norm(tcp[xz] - obj[xz]), 0.0, 0.005, xz_margin, "long_tail"),
    )
    gripping = jnp.where(caging > 0.97, jnp.clip(action[-1], 0.0, 1.0), 0.0)
    grasped = (hamacher_product(caging, gripping) + caging) / 2
    to_target = jnp.linalg.norm(obj - target)
    in_place = tolerance(to_target, 0.0, 0.05, jnp.linalg.norm(obj_init - target), "long_tail")
    lifted = (jnp.linalg.norm(obj - tcp) < 0.02) & (tcp_opened > 0) & (obj[2] - 0.01 > obj_init[2])
    reward = hamacher_product(grasped, in_place) + jnp.where(lifted, 1.0 + 5.0 * in_place, 0.0)
    return jnp.where(to_target < 0.05, 10.0, reward), (to_target <= 0.07).astype(jnp.float32)


def rect_prism_tolerance(curr, zero, one):
    """Meta-World's ``rect_prism_tolerance``: inside the box spanned by corners ``zero`` and
    ``one`` (float32 [3]), the product over axes of ``(curr - zero) / (one - zero)``; 1 outside."""
    inside = jnp.all((jnp.minimum(zero, one) <= curr) & (curr <= jnp.maximum(zero, one)))
    return jnp.where(inside, jnp.prod((curr - zero) / (one - zero)), 1.0)


def peg_insert_side_reward(action, obj, head, tcp, tcp_opened, target, obj_init, head_init, init_tcp, pads, boxes):
    """peg-insert-side-v3 (v2 reward): ``(reward, success)``. ``d = |(head - target) * (1, 2, 2)|``
    (``head``: the pegHead site); in_place = H(tol(d, 0, 0.07, |(head_init - target) * (1, 2, 2)|),
    H(prism(box 2), prism(box 1))) with ``boxes`` = ((bottom-right, top-left) corners of collision
    boxes 1 and 2) and prism :func:`rect_prism_tolerance`; grasped = :func:`gripper_caging_reward`
    (object radius 0.0075, pads 0.03, reach 0.01, xz 0.005, high density), 1 where lifted (tcp
    within 8 cm, gripper open, object 1 cm above its start); reward ``H(grasped, in_place)``
    plus ``1 + 5 in_place`` where lifted; 10 where ``d <= 0.07``, which is also success."""
    scale = jnp.array([1.0, 2.0, 2.0])
    d = jnp.linalg.norm((head - target) * scale)
    in_place = tolerance(d, 0.0, 0.07, jnp.linalg.norm((head_init - target) * scale), "long_tail")
    (zero1, one1), (zero2, one2) = boxes
    walls = hamacher_product(rect_prism_tolerance(head, zero2, one2), rect_prism_tolerance(head, zero1, one1))
    in_place = hamacher_product(in_place, walls)
    grasped = gripper_caging_reward(
        action, obj, tcp, pads[0], pads[1], obj_init, init_tcp,
        obj_radius=0.0075, pad_success_thresh=0.03, object_reach_radius=0.01, xz_thresh=0.005, high_density=True,
    )  # fmt: skip
    lifted = (jnp.linalg.norm(obj - tcp) < 0.08) & (tcp_opened > 0) & (obj[2] - 0.01 > obj_init[2])
    grasped = jnp.where(lifted, 1.0, grasped)
    reward = hamacher_product(grasped, in_place) + jnp.where(lifted, 1.0 + 5.0 * in_place, 0.0)
    done = d <= 0.07
    return jnp.where(done, 10.0, reward), done.astype(jnp.float32)
