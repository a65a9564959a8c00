"""A run directory must not run code (issue 30, item 6): stages and the results processes
exchange are :mod:`pgx_jax.runtime.codec` archives. Every supported kind round-trips exactly; a file
naming a class outside the allowlist, or a pickle, is refused without calling anything; saving
an unsupported value fails loudly; a stage directory holding anything but stages is refused
before any stage runs."""

from __future__ import annotations

import collections
import dataclasses
import enum
import io
import json
import math
import os
import pickle
import re
import subprocess
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

from pgx_jax.core.config import NetworkConfig, PPOConfig
from pgx_jax.rl.networks import AgentParams, NormalizerState
from pgx_jax.rl.rollout import Transition
from pgx_jax.runtime import codec
from pgx_jax.runtime.stages import StageStore

CALLED: list = []


def _record(*args):  # what a hostile file would run: records instead
    CALLED.append(args)


def assert_same(a, b):
    """``a`` and ``b`` equal in type at every level, and arrays in dtype, shape and bytes."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, (np.ndarray, np.generic, jax.Array)):
        x, y = np.asarray(a), np.asarray(b)
        assert (x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes())
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    elif isinstance(a, dict):
        assert_same(list(a), list(b))  # the keys, their types and order
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):  # NamedTuples too: their type is checked above
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name))
    else:
        assert a == b


def test_every_supported_kind_round_trips_exactly():
    floats = np.array([1.5, -0.0, np.nan, np.inf, -np.inf], np.float32)
    tree = {
        "scalars": [None, True, False, 0, -7, 2**100, 1.5, -0.0, float("nan"), float("inf"), float("-inf"), "", "ü"],
        "containers": ([], (), [()], ((1,), [1]), {}),
        1: "an int key",
        (2, "b"): "a tuple key",
        None: "a None key",
        2.5: "a float key",
        "arrays": [
            floats,
            np.frombuffer(np.array([0x7FC00001], np.uint32).tobytes(), np.float32),  # a NaN payload
            np.arange(12, dtype=np.int8).reshape(3, 4).T,  # not contiguous
            np.zeros((0, 3), np.uint64),
            np.array(3.0),  # 0-d
            np.array([True, False]),
            np.array([1 + 2j], np.complex64),
            np.array([1.0, -0.0], ">f8"),  # big-endian
            np.array(["ab", "c"]),
            np.array([1.0, -0.0, np.nan], ml_dtypes.bfloat16),
        ],
        "numpy_scalars": (np.float32(-0.0), np.int64(-3), np.bool_(True), np.float16(0.1), ml_dtypes.bfloat16(2)),
        "jax": [jnp.arange(3, dtype=jnp.int32), jnp.ones((2, 2), jnp.bfloat16), jnp.float32(-0.0)],
        "namedtuple": Transition(*[np.full((2, 3), i, np.float32) for i in range(8)]),
        "plain_tuple": tuple(np.full((2, 3), i, np.float32) for i in range(8)),
        "frozen_config": PPOConfig(total_env_steps=1000, network=NetworkConfig(width=8, activation="relu")),
        "flax_struct": AgentParams({"w": np.ones(2)}, {"w": np.zeros(2)}, NormalizerState(*np.ones((3, 2)))),
        "optax_state": jax.device_get(optax.adam(1e-3).init({"w": jnp.ones(3)})),  # a stage's optimizer state
    }
    back = codec.from_bytes(codec.to_bytes(tree))
    assert_same(tree, back)
    assert back["frozen_config"] == tree["frozen_config"] and isinstance(back["jax"][0], jax.Array)
    assert codec.to_bytes(back) == codec.to_bytes(tree)  # a fixed point: nothing drifts on a second trip


def test_the_format_is_an_npz_of_arrays_and_a_json_tree():
    data = codec.to_bytes({"x": np.arange(3), "c": PPOConfig(total_env_steps=10)})
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        tree = json.loads(npz["tree"].tobytes())
        assert tree["format"] == codec.FORMAT and sorted(npz.files) == ["a0", "tree"]
        np.testing.assert_array_equal(npz["a0"], np.arange(3))
    (x, array), (c, config) = tree["root"][1]
    assert tree["root"][0] == "dict" and (x, array, c) == ("x", ["ndarray", 0], "c")
    assert config[:2] == ["dataclass", "pgx_jax.core.config:PPOConfig"] and config[2]["total_env_steps"] == 10


def _crafted(root, arrays=()) -> bytes:
    """An archive as the codec's, with a tree of our choosing."""
    text = json.dumps({"format": codec.FORMAT, "root": root}).encode()
    buf = io.BytesIO()
    np.savez(buf, tree=np.frombuffer(text, np.uint8), **{f"a{i}": a for i, a in enumerate(arrays)})
    return buf.getvalue()


@pytest.mark.parametrize(
    "node",
    [
        ["namedtuple", "os:system", ["echo pwned"]],
        ["dataclass", "subprocess:Popen", {"args": "echo pwned"}],
        ["namedtuple", "builtins:eval", ["1"]],
        ["namedtuple", f"{__name__}:_record", ["x"]],  # a module outside the allowlist
        ["namedtuple", "pgx_jax.cli.outputs:os.system", ["echo pwned"]],  # reached through a pgx_jax module
        ["dataclass", "pgx_jax.runtime.stages:saved_stages", {}],  # in pgx_jax, but a function
        ["dataclass", "pgx_jax.core.config:PPOConfig.__init__", {}],
        ["namedtuple", "pgx_jax_evil:Thing", []],  # only pgx_jax and its submodules
        ["namedtuple", "pgx_jax.experiments.pipeline:Result", []],  # a dataclass, not a NamedTuple
    ],
)
def test_a_type_outside_the_allowlist_is_refused_and_nothing_is_called(node, monkeypatch):
    monkeypatch.setattr(os, "system", _record)
    CALLED.clear()
    named = re.escape(repr(node[1]))
    with pytest.raises(ValueError, match=f"refused type {named}|{named} is not a"):
        codec.from_bytes(_crafted(["list", [1, node]]))
    assert CALLED == []


def test_the_case_through_a_pgx_jax_module_reaches_a_real_function():
    """The allowlist case above is only meaningful where the path does lead to ``os.system``."""
    import pgx_jax.cli.outputs

    assert pgx_jax.cli.outputs.os.system is os.system


@pytest.mark.parametrize(
    "name",
    [
        "pgx_jax.config:PPOConfig",  # a module this version does not have (moved by a refactor)
        "pgx_jax.runtime.codec:NoSuchClass",  # a module it has, without the class
    ],
)
def test_a_class_of_other_pgx_jax_code_is_named_as_other_code_and_never_rebuilt(name, monkeypatch):
    monkeypatch.setattr(os, "system", _record)
    CALLED.clear()
    with pytest.raises(codec.OtherVersionError, match="not a class of this version of pgx_jax"):
        codec.from_bytes(_crafted(["namedtuple", name, []]))
    with pytest.raises(codec.OtherVersionError):
        codec.check_file(_write(_crafted(["namedtuple", name, []])))
    assert CALLED == []


def test_a_foreign_type_is_never_taken_for_other_pgx_jax_code():
    for name in ("os:system", "pgx_jax_evil:Thing", "pgx_jax.cli.outputs:os.system"):
        with pytest.raises(ValueError) as e:
            codec.from_bytes(_crafted(["namedtuple", name, []]))
        assert not isinstance(e.value, codec.OtherVersionError), name


def _write(data: bytes) -> str:
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def test_reading_a_file_imports_no_module_it_names():
    """Reviewer's finding (issue 30): an allowed module not yet imported was imported while
    reading, running its top-level code (brax.training.learner sets XLA_FLAGS) before the type
    was refused. A child process: nothing here has imported that module."""
    script = """
import io, json, os, sys
import numpy as np
from pgx_jax.runtime import codec
assert "brax.training.learner" not in sys.modules
text = json.dumps({"format": codec.FORMAT, "root": ["namedtuple", "brax.training.learner:Nope", []]}).encode()
buf = io.BytesIO(); np.savez(buf, tree=np.frombuffer(text, np.uint8))
before = os.environ.get("XLA_FLAGS")
try:
    codec.from_bytes(buf.getvalue())
except ValueError as e:
    print("refused" if "is not imported here" in str(e) else e)
print("brax.training.learner" in sys.modules, os.environ.get("XLA_FLAGS") == before)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["refused", "False", "True"], out


def test_an_allowed_class_is_rebuilt_without_calling_it(monkeypatch):
    """A frozen config with values its checks would refuse comes back as written: the codec
    sets fields, it never runs ``__init__`` or ``__post_init__`` (nor a NamedTuple's ``__new__``)."""
    data = codec.to_bytes((PPOConfig(total_env_steps=10), Transition(*range(8))))
    monkeypatch.setattr(PPOConfig, "__init__", _record)
    monkeypatch.setattr(Transition, "__new__", _record)
    CALLED.clear()
    config, transition = codec.from_bytes(data)
    assert CALLED == [] and config.total_env_steps == 10 and transition.metric == 7


class Boom:
    def __reduce__(self):
        return _record, ("pwned",)


def test_a_pickle_is_refused_and_not_run():
    data = pickle.dumps({"value": Boom()})
    CALLED.clear()
    pickle.loads(data)  # noqa: S301 - the live file the codec must refuse
    assert CALLED == [("pwned",)]
    CALLED.clear()
    for bad in (data, b"", b"PK\x03\x04torn", codec.to_bytes([1])[:60], np.ones(3).tobytes()):
        with pytest.raises(ValueError, match="not a (valid )?pgx_jax.codec/1 archive"):
            codec.from_bytes(bad)
    with pytest.raises(ValueError, match="entry 'a0' is missing"):
        codec.from_bytes(_crafted(["ndarray", 0]))
    with pytest.raises(ValueError, match="entry 'a0' is not a plain .npy array"):  # an object array inside
        codec.from_bytes(_crafted(["ndarray", 0], [np.array([Boom()], object)]))
    with pytest.raises(ValueError, match="malformed"):
        codec.from_bytes(_crafted({"not": "a node"}))
    assert CALLED == []


class Local(NamedTuple):
    x: int


@dataclasses.dataclass(frozen=True)
class LocalConfig:
    x: int = 1


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value, named",
    [
        ({1, 2}, "builtins:set"),
        (frozenset(), "builtins:frozenset"),
        (lambda: 0, "builtins:function"),
        (b"bytes", "builtins:bytes"),
        (collections.OrderedDict(a=1), "collections:OrderedDict"),
        (Colour.RED, f"{__name__}:Colour"),
        (Local(1), f"{__name__}:Local"),
        (LocalConfig(), f"{__name__}:LocalConfig"),
        (np.ma.array([1.0]), "MaskedArray"),
        (np.array([object()]), "dtype object"),
        (jax.random.key(0), "not a concrete array"),
    ],
)
def test_saving_an_unsupported_value_fails_naming_it(value, named):
    with pytest.raises(TypeError, match=re.escape(named)):
        codec.to_bytes({"deep": [1, (value,)]})


def test_a_cycle_fails_instead_of_recursing():
    loop: list = []
    loop.append(loop)
    with pytest.raises(TypeError, match="contains itself"):
        codec.to_bytes(loop)


def test_a_stage_round_trips_and_a_pickled_stage_is_refused_before_any_work(tmp_path):
    # keys in sorted order: the store keeps jax.device_get(value), which sorts them
    value = {"config": PPOConfig(total_env_steps=10), "est": Transition(*[np.arange(3.0) * i for i in range(8)])}
    StageStore(str(tmp_path), {"seed": 0}, resume=False).run("x", lambda: value)
    store = StageStore(str(tmp_path), {"seed": 0}, resume=True)
    assert_same(store.run("x", lambda: pytest.fail("recomputed")), value)
    (tmp_path / "stages" / ".x.npz.tmp123").write_bytes(b"torn")  # an interrupted save's temporary: ignored
    assert StageStore(str(tmp_path), {"seed": 0}, resume=True).load("x")[0]
    old = tmp_path / "stages" / "x.pkl"
    old.write_bytes(pickle.dumps({"fingerprint": "{}", "value": Boom()}))
    CALLED.clear()
    with pytest.raises(ValueError, match=re.escape(f"{old} is not a stage") + ".*pickled.*remove that file"):
        StageStore(str(tmp_path), {"seed": 0}, resume=True)
    StageStore(str(tmp_path), {"seed": 0}, resume=False)  # a fresh run computes and saves over: nothing read
    old.unlink()
    hostile = tmp_path / "stages" / "y.npz"
    hostile.write_bytes(_crafted(["dict", [["fingerprint", "{}"], ["value", ["namedtuple", "os:system", ["x"]]]]]))
    with pytest.raises(ValueError, match=re.escape(str(hostile)) + ".*refused type 'os:system'"):
        StageStore(str(tmp_path), {"seed": 0}, resume=True)
    assert CALLED == []


def test_a_stage_the_codec_cannot_save_fails_and_writes_nothing(tmp_path):
    store = StageStore(str(tmp_path), {}, resume=False)
    with pytest.raises(TypeError, match="builtins:set"):
        store.run("s", lambda: {"groups": {1, 2}})
    assert not (tmp_path / "stages").exists() or os.listdir(tmp_path / "stages") == []


def test_resume_refuses_a_pickled_stage_naming_it_before_anything_runs(tmp_path, capsys):
    from pgx_jax.cli import main

    out = tmp_path / "r"
    (out / "stages").mkdir(parents=True)
    (out / "stages" / "seed_0.pkl").write_bytes(pickle.dumps(Boom()))
    argv = ["compare", "--family", "reacher-goals", "--budget", "smoke", "--resume", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--resume: {out / 'stages' / 'seed_0.pkl'} is not a stage" in err and "remove that file" in err
    assert sorted(os.listdir(out)) == ["stages"]
