"""Splitting a batch axis over the local devices and into fixed-size chunks.

The many-subset calls (surrogate solves, rollout evaluation of the estimated policies) take a
pytree with a leading subset axis [S]: :func:`over_devices` spreads it over the devices of one
process, :func:`chunked` bounds the memory of one call and compiles one program whatever S.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def over_devices(fn: Callable, xs, devices: tuple | None = None):
    """Run ``fn(xs_chunk) -> pytree with leading [S_chunk]`` with the subset axis split over devices.

    ``xs`` is a pytree whose leaves have a leading subset axis [S]. It is padded (with copies of
    the first row) to a multiple of the device count, each device gets a contiguous chunk
    (``jax.shard_map``), and the padding is dropped. With one device this is just ``fn(xs)``.
    """
    devices = tuple(jax.local_devices()) if devices is None else tuple(devices)
    s = jax.tree.leaves(xs)[0].shape[0]
    if len(devices) == 1:
        return fn(xs)
    from jax.sharding import Mesh, PartitionSpec

    pad = (-s) % len(devices)
    if pad:
        xs = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[:1], pad, 0)]), xs)
    mesh = Mesh(np.asarray(devices), ("subsets",))
    spec = PartitionSpec("subsets")
    out = jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)(xs)
    return jax.tree.map(lambda x: x[:s], out)


def chunked(fn: Callable, xs, chunk: int, progress: Callable[[int, int], None] | None = None):
    """``fn(xs)`` for a pytree ``xs`` with leading axis [S], ``chunk`` rows per call.

    Every call gets exactly ``chunk`` rows (the last padded with copies of row 0), so ``fn``
    compiles once whatever S; outputs (pytrees with leading [chunk]) are brought to the host
    and concatenated, padding dropped. ``progress(done, total)`` is called after each chunk.
    With S <= chunk this is one call on the unpadded ``xs``.
    """
    s = jax.tree.leaves(xs)[0].shape[0]
    if s <= chunk:
        out = jax.tree.map(np.asarray, fn(xs))
        if progress is not None:
            progress(s, s)
        return out
    parts = []
    for lo in range(0, s, chunk):
        part = jax.tree.map(lambda x: np.asarray(x)[lo : lo + chunk], xs)  # noqa: B023
        pad = chunk - jax.tree.leaves(part)[0].shape[0]
        if pad:
            part = jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[:1], pad, 0)]), part)  # noqa: B023
        parts.append(jax.tree.map(lambda x: np.asarray(x)[: chunk - pad], fn(part)))  # noqa: B023
        if progress is not None:
            progress(min(lo + chunk, s), s)
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
