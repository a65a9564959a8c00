"""Save and load a trained policy: params, normaliser, config, family and package versions.

A checkpoint is a directory with ``params.msgpack`` (flax serialization: exact float32 bytes)
and ``meta.json`` (family, tasks, sizes, config, versions). It is written to a temporary
directory and renamed into place, so a crash never leaves a half-written checkpoint.
flax.serialization is used rather than orbax: a policy is a few hundred kB, the round trip is
exact, and loading needs no async machinery or extra dependency.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import numpy as np
from flax import serialization

import pgx_jax.rl.networks as networks
from pgx_jax.core.config import PPOConfig
from pgx_jax.core.types import Family
from pgx_jax.rl.networks import AgentParams
from pgx_jax.runtime import provenance
from pgx_jax.runtime.distributed import writes_own
from pgx_jax.runtime.provenance import source_commit, source_state  # noqa: F401 (re-exported: where results ask

FORMAT = "pgx_jax.policy/1"
GROUPS_FORMAT = "pgx_jax.groups/1"
_PACKAGES = ("pgx_jax", "jax", "jaxlib", "flax", "optax", "brax", "mujoco", "mujoco-mjx", "numpy")


def versions() -> dict[str, Any]:
    """Installed versions of the packages a result depends on, and the code that made it
    (:func:`source_state`): ``pgx_jax_commit`` (its ``describe``; the package
    version does not change between commits, so two results of one version can come from
    different code), ``pgx_jax_clean`` (False where the code had uncommitted changes) and
    ``pgx_jax_diff_sha256`` (the hash of those changes, None on a clean tree)."""
    out: dict[str, Any] = {}
    for p in _PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "not installed"
    state = provenance.source_state()
    out.update(pgx_jax_commit=state["describe"], pgx_jax_clean=state["clean"], pgx_jax_diff_sha256=state["diff_sha256"])
    return out


def _shapes(tree) -> dict[str, list[int]]:
    return {jax.tree_util.keystr(p): list(np.shape(x)) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def save_policy(path: str | os.PathLike, params: AgentParams, config: PPOConfig, family: Family, **extra: Any):
    """Write a checkpoint directory at ``path`` (replacing one that is there).

    ``extra`` JSON-serialisable entries are stored in ``meta.json`` under ``"extra"``.
    """
    path = os.fspath(path)
    params = jax.device_get(params)
    leaves = jax.tree.leaves(params)
    if not all(np.all(np.isfinite(x)) for x in leaves):
        raise FloatingPointError("refusing to save a policy with non-finite parameters")
    meta = {
        "format": FORMAT,
        "family": family.name,
        "tasks": list(family.task_names),
        "obs_size": family.obs_size,
        "action_size": family.action_size,
        "config": config.to_dict(),
        "shapes": _shapes(params),
        "versions": versions(),
        "extra": extra,
    }
    if not writes_own():  # a multi-process run: process 0 alone writes (or the one computing this item alone)
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".ckpt-", dir=parent)
    try:
        with open(os.path.join(tmp, "params.msgpack"), "wb") as f:
            f.write(serialization.to_bytes(params))
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_meta(path: str | os.PathLike) -> dict:
    """The ``meta.json`` of a checkpoint; ``ValueError`` if it is not a pgx_jax checkpoint."""
    meta_path = os.path.join(os.fspath(path), "meta.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{os.fspath(path)!r} is not a pgx_jax checkpoint: no meta.json") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path!r} is corrupt: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"{meta_path!r}: unknown checkpoint format {found!r}; expected {FORMAT!r}")
    return meta


def check_files(path: str | os.PathLike) -> dict:
    """:func:`read_meta`, and ``params.msgpack`` parsed (msgpack alone: nothing is built or
    compiled) with the parameter shapes ``meta.json`` records; ``ValueError`` naming what is
    missing or corrupt. Returns the meta."""
    meta = read_meta(path)
    params_path = os.path.join(os.fspath(path), "params.msgpack")
    try:
        with open(params_path, "rb") as f:
            raw = serialization.msgpack_restore(f.read())
    except FileNotFoundError:
        raise ValueError(f"checkpoint {os.fspath(path)!r} has no params.msgpack") from None
    except Exception as e:  # msgpack raises several types on corrupt input
        detail = str(e).splitlines()[0] if str(e) else "unreadable"
        raise ValueError(f"checkpoint {os.fspath(path)!r}: params.msgpack is corrupt ({detail})") from None
    found = sorted(list(np.shape(x)) for x in jax.tree.leaves(raw))
    if not isinstance(meta.get("shapes"), dict) or found != sorted(meta["shapes"].values()):
        raise ValueError(f"checkpoint {os.fspath(path)!r}: params.msgpack does not match meta.json's shapes")
    return meta


def load_policy(
    path: str | os.PathLike, family: Family | None = None, config: PPOConfig | None = None
) -> tuple[AgentParams, PPOConfig, dict]:
    """Load a checkpoint written by :func:`save_policy`.

    Args:
        path: checkpoint directory.
        family: if given, the checkpoint must have been made for this family (name, tasks and
            observation/action sizes).
        config: if given, its network must match the checkpoint's.

    Returns:
        ``(params, config, meta)``.

    Raises:
        ValueError: not a checkpoint, corrupt, or made for another family or network shape.
    """
    meta = read_meta(path)
    saved = PPOConfig.from_dict(meta["config"])
    if family is not None:
        if meta["family"] != family.name or meta["tasks"] != list(family.task_names):
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} was made for family {meta['family']!r} with tasks "
                f"{meta['tasks']}, not {family.name!r} with tasks {list(family.task_names)}"
            )
        if (meta["obs_size"], meta["action_size"]) != (family.obs_size, family.action_size):
            raise ValueError(
                f"checkpoint obs/action sizes {meta['obs_size']}/{meta['action_size']} do not match the "
                f"family's {family.obs_size}/{family.action_size}"
            )
    if config is not None and config.network.conditioning != saved.network.conditioning:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} holds a policy trained with conditioning "
            f"{saved.network.conditioning!r}; the requested network has conditioning "
            f"{config.network.conditioning!r} (what the policy is told about the task must match)"
        )
    if config is not None and config.network != saved.network:
        raise ValueError(f"checkpoint network {saved.network} does not match the requested network {config.network}")
    template = jax.eval_shape(
        lambda: networks.init_agent(saved.network, meta["obs_size"], meta["action_size"], jax.random.PRNGKey(0))
    )
    if _shapes(template) != meta["shapes"]:
        raise ValueError(f"checkpoint {os.fspath(path)!r}: stored shapes do not match its network config")
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
    try:
        with open(os.path.join(os.fspath(path), "params.msgpack"), "rb") as f:
            params = serialization.from_bytes(template, f.read())
    except FileNotFoundError:
        raise ValueError(f"checkpoint {os.fspath(path)!r} has no params.msgpack") from None
    except Exception as e:  # msgpack raises several types on corrupt input
        raise ValueError(f"checkpoint {os.fspath(path)!r}: params.msgpack is corrupt ({e})") from None
    if _shapes(params) != meta["shapes"]:
        raise ValueError(f"checkpoint {os.fspath(path)!r}: params.msgpack does not match meta.json shapes")
    return params, saved, meta


def save_groups(
    out: str | os.PathLike,
    group_params: AgentParams,
    groups,
    config: PPOConfig,
    family: Family,
    tasks: list,
    **extra: Any,
) -> str:
    """Write one checkpoint per group and an index: what a grouping run leaves to its user.

    ``out/groups/<g>/`` is group g's policy (:func:`save_policy`; ``extra`` names the group's
    tasks) and ``out/groups.json`` the index: ``format``, ``family``, ``tasks`` (the entries
    :func:`pgx_jax.families.make_family` rebuilds the family from), ``conditioning``, ``groups``
    (per group: ``tasks`` (names), ``task_ids`` and ``checkpoint``, relative to ``out``) and the
    ``extra`` entries (for example each task's return and the evaluation key). The checkpoints
    are written to a temporary directory; then the old index is removed, the directory replaces
    ``out/groups`` whole, and the new index is written last: an interrupted save leaves either
    no index or one whose every policy is there, never an index naming a missing or replaced one.

    Args:
        group_params: the groups' policies, leading axis [G] in the order of ``groups``.
        groups: G lists of task ids.
        config: the PPO config the groups trained with (its network is what loads them).
        tasks: the family's task entries (names and parameters).

    Returns:
        the path of ``groups.json``.
    """
    from pgx_jax.runtime.results import write_json

    out = os.fspath(out)
    names = list(family.task_names)
    index = {
        "format": GROUPS_FORMAT,
        "family": family.name,
        "tasks": tasks,
        "conditioning": config.network.conditioning,
        "groups": [
            {"tasks": [names[i] for i in g], "task_ids": [int(i) for i in g], "checkpoint": f"groups/{k}"}
            for k, g in enumerate(groups)
        ],
        **extra,
    }
    if not writes_own():  # process 0, or the process computing this item alone
        return os.path.join(out, "groups.json")
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".groups-", dir=out)
    try:
        for k, g in enumerate(groups):
            params = jax.tree.map(lambda x, k=k: np.asarray(x)[k], group_params)
            save_policy(os.path.join(tmp, str(k)), params, config, family, group=k, group_tasks=[names[i] for i in g])
        final, index_path = os.path.join(out, "groups"), os.path.join(out, "groups.json")
        if os.path.exists(index_path):  # first the old index: it must never name the policies being replaced
            os.remove(index_path)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json(os.path.join(out, "groups.json"), index)
    return os.path.join(out, "groups.json")


def load_groups(out: str | os.PathLike):
    """Read what :func:`save_groups` wrote in ``out`` (a run's output directory).

    Returns:
        ``(family, groups, index)``: the family rebuilt from the index's tasks, then per group a
        dict with ``tasks`` (names), ``task_ids``, ``params`` and ``config`` (from
        :func:`load_policy`, checked against that family), and the index itself.

    Raises:
        ValueError: no ``groups.json``, another format, or a checkpoint that does not load.
    """
    from pgx_jax.families import make_family

    path = os.path.join(os.fspath(out), "groups.json")
    try:
        with open(path) as f:
            index = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{os.fspath(out)!r} holds no group policies: no groups.json") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path!r} is corrupt: {e}") from None
    if not isinstance(index, dict) or index.get("format") != GROUPS_FORMAT:
        found = index.get("format") if isinstance(index, dict) else index
        raise ValueError(f"{path!r}: unknown format {found!r}; expected {GROUPS_FORMAT!r}")
    family = make_family(index["family"], index["tasks"])
    groups = []
    for g in index["groups"]:
        params, config, _ = load_policy(os.path.join(os.fspath(out), g["checkpoint"]), family)
        groups.append({"tasks": g["tasks"], "task_ids": g["task_ids"], "params": params, "config": config})
    return family, groups, index
