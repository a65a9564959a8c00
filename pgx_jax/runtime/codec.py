"""Data-only serialisation of the pytrees a run keeps: finished stages on disk
(:mod:`pgx_jax.runtime.stages`) and the results processes exchange (:func:`pgx_jax.runtime.distributed.map_processes`).

Why not pickle: ``pickle.load`` calls whatever the bytes name, so a run directory copied from
someone else (``--resume``) or a message from a peer could run code. Reading here only parses
JSON and ``.npy`` arrays and rebuilds types from an allowlist, without calling them.

Format: one ``.npz`` archive (numpy's zip of ``.npy`` files, read with ``allow_pickle=False``).
Its entry ``tree`` is a uint8 array holding the UTF-8 JSON ``{"format": FORMAT, "root": node}``;
entries ``a0``, ``a1``, ... are the arrays the tree refers to by index. A node is

- ``null``, ``true``/``false``, an integer, a finite float or a string: itself;
- ``["float", "nan" | "inf" | "-inf"]``: a non-finite float;
- ``["list", [node, ...]]``, ``["tuple", [node, ...]]``;
- ``["dict", [[key node, value node], ...]]``: keys of any kind here (int, tuple, str, ...), in order;
- ``["ndarray", i]``, ``["scalar", i]``, ``["jax", i]``: entry ``a<i>`` as a numpy array, a numpy
  scalar (stored 0-d) or a jax array; a fourth element names an ``ml_dtypes`` dtype (bfloat16,
  float8 ...) that ``.npy`` cannot, the entry then holding its bytes as uint8 ``[..., itemsize]``;
- ``["namedtuple", "module:qualname", [node, ...]]``, ``["dataclass", "module:qualname", {field: node}]``.

Contract:

- ``from_bytes(to_bytes(tree))`` equals ``tree`` exactly: the Python types (bool, int, float, str,
  None; list vs tuple; a NamedTuple vs a tuple; numpy scalar vs float; dict key types), and the
  dtype, shape and bytes of every array (NaN payloads and -0.0 included). Not kept: sharing (an
  object reached twice comes back as two equal copies), a Python float NaN's sign, and a jax
  array's device, sharding and weak type (it comes back on the default device).
- Classes: NamedTuples and dataclasses (frozen and flax ``struct`` ones included) defined in a
  module of :data:`ALLOWED` (pgx_jax's own; optax's optimiser states and brax's environment
  states, which a resumable meta-training's stage holds; MuJoCo MJX's simulator states, which
  ``metaworld-mt10-mjx``'s environment states hold). Reading imports only such a module,
  walks the qualname, requires the class to be defined there (not re-exported) and rebuilds the
  object without calling the class, its ``__init__`` or ``__post_init__`` (``tuple.__new__`` /
  ``object.__new__``, then its fields set), so no code runs that the bytes chose.
- :func:`to_bytes` raises ``TypeError`` naming the type of anything else (a set, a function, an
  object array, a subclass of a builtin, a class of another module, a cycle): a tree is never
  saved in part. :func:`from_bytes` and :func:`check_file` raise ``ValueError`` for anything
  :func:`to_bytes` did not write (a pickle, a torn or foreign file, a malformed tree) and name
  a refused type (``os:system``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import jax
import ml_dtypes
import numpy as np

FORMAT = "pgx_jax.codec/1"  # the format's name (stable: files name it), not a module path

#: the modules (and their submodules) whose NamedTuples and dataclasses are saved and rebuilt
ALLOWED = ("pgx_jax", "optax", "brax", "mujoco.mjx")

#: how an array leaf comes back: a numpy array, a numpy scalar, a jax array
_ARRAY_KINDS = ("ndarray", "scalar", "jax")


class OtherVersionError(ValueError):
    """A tree naming a pgx_jax class that this version does not define (a module it does not
    have, or a class missing from one): data written by other code, never rebuilt here. Stages
    treat it as stale (recomputed), not as foreign."""


def _other_version(module: str, qualname: str) -> bool:
    """Whether ``module:qualname`` names pgx_jax code this version lacks: a pgx_jax module with no
    source file here, or an imported one without that class. Nothing is imported: a module that is
    not imported is looked for as a file beside this package's own."""
    import os

    if module.split(".")[0] != "pgx_jax":
        return False
    if module in sys.modules:
        obj: Any = sys.modules[module]
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        return obj is None
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds pgx_jax/
    path = os.path.join(root, *module.split("."))
    return not (os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__init__.py")))


def _type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_namedtuple(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


def _resolve(name: Any) -> type:
    """The NamedTuple or dataclass ``"module:qualname"`` of an :data:`ALLOWED` module already
    imported by this process, else ``ValueError``. Nothing is imported or called, only attributes
    looked up: importing a module a file names would run that module's code (brax's learner, for
    one, sets ``XLA_FLAGS`` when imported). The modules of every type a stage holds are imported
    by the code that reads the stage back."""
    module, _, qualname = name.partition(":") if isinstance(name, str) else ("", "", "")
    allowed = any(module == m or module.startswith(m + ".") for m in ALLOWED)
    parts = qualname.split(".")
    refused = f"refused type {name!r}: only NamedTuples and dataclasses of the modules {list(ALLOWED)} are rebuilt"
    if not allowed or not all(p.isidentifier() for p in module.split(".") + parts) or "__" in qualname:
        raise ValueError(refused)
    if _other_version(module, qualname):
        raise OtherVersionError(f"{name!r} is not a class of this version of pgx_jax (written by other code)")
    obj: Any = sys.modules.get(module)
    if obj is None:
        raise ValueError(f"{refused} (module {module!r} is not imported here; a file cannot ask for an import)")
    for part in parts:
        obj = getattr(obj, part, None)
    ok = isinstance(obj, type) and obj.__module__ == module and obj.__qualname__ == qualname
    if not ok or not (_is_namedtuple(obj) or dataclasses.is_dataclass(obj)):
        raise ValueError(refused)
    return obj


def _array(kind: str, x, arrays: list) -> list:
    """The node of an array leaf; the array (numpy, on the host) appended to ``arrays``."""
    try:
        a = np.asarray(x)
    except Exception as e:  # a tracer, a typed PRNG key array
        raise TypeError(f"cannot save a {_type_name(type(x))}: not a concrete array ({e})") from None
    node = [kind, len(arrays)]
    if a.dtype.hasobject or a.dtype.fields is not None:
        raise TypeError(f"cannot save an array of dtype {a.dtype}: object and structured dtypes are not data here")
    if a.dtype.kind == "V":  # ml_dtypes' types: .npy would write them as raw void
        if getattr(ml_dtypes, a.dtype.name, None) is None or np.dtype(getattr(ml_dtypes, a.dtype.name)) != a.dtype:
            raise TypeError(f"cannot save an array of dtype {a.dtype}")
        node.append(a.dtype.name)
        a = np.frombuffer(a.tobytes(), np.uint8).reshape(a.shape + (a.dtype.itemsize,))
    arrays.append(a)
    return node


def _encode(x, arrays: list, active: set) -> Any:
    t = type(x)
    if x is None or t in (bool, int, str):
        return x
    if t is float:
        return x if math.isfinite(x) else ["float", repr(x)]
    if t is np.ndarray:
        return _array("ndarray", x, arrays)
    if isinstance(x, np.generic):
        return _array("scalar", x, arrays)
    if isinstance(x, jax.Array):
        return _array("jax", x, arrays)
    if id(x) in active:
        raise TypeError(f"cannot save a {_type_name(t)} that contains itself")
    active.add(id(x))
    try:
        if t in (list, tuple):
            return [t.__name__, [_encode(v, arrays, active) for v in x]]
        if t is dict:
            return ["dict", [[_encode(k, arrays, active), _encode(v, arrays, active)] for k, v in x.items()]]
        if _is_namedtuple(t) or dataclasses.is_dataclass(t):
            try:
                found = _resolve(_type_name(t)) is t  # what reading it back will find
            except ValueError:
                found = False
            if not found:
                raise TypeError(
                    f"cannot save a {_type_name(t)}: classes are saved only from the modules {list(ALLOWED)}, "
                    "defined at module level"
                )
            if _is_namedtuple(t):
                return ["namedtuple", _type_name(t), [_encode(v, arrays, active) for v in x]]
            fields = {f.name: _encode(getattr(x, f.name), arrays, active) for f in dataclasses.fields(x)}
            return ["dataclass", _type_name(t), fields]
    finally:
        active.discard(id(x))
    raise TypeError(
        f"cannot save a {_type_name(t)}: allowed None, bool, int, float, str, list, tuple, dict, numpy and jax "
        f"arrays, numpy scalars, and NamedTuples and dataclasses of {list(ALLOWED)}"
    )


def _decode(node, leaf: Callable[[str, int, str | None], Any]) -> Any:
    """The object of a node; ``leaf(kind, index, ml_dtype name)`` gives an array leaf."""
    if node is None or type(node) in (bool, int, float, str):
        return node
    if type(node) is not list or not node or type(node[0]) is not str:
        raise ValueError(f"malformed node {str(node)[:80]}")
    tag, *rest = node
    if tag == "float" and rest in (["nan"], ["inf"], ["-inf"]):
        return float(rest[0])
    if tag in ("list", "tuple") and len(rest) == 1 and type(rest[0]) is list:
        items = [_decode(v, leaf) for v in rest[0]]
        return items if tag == "list" else tuple(items)
    if tag == "dict" and len(rest) == 1 and type(rest[0]) is list:
        if not all(type(kv) is list and len(kv) == 2 for kv in rest[0]):
            raise ValueError("malformed dict node")
        return {_decode(k, leaf): _decode(v, leaf) for k, v in rest[0]}
    if tag in _ARRAY_KINDS and len(rest) in (1, 2) and type(rest[0]) is int:
        return leaf(tag, rest[0], rest[1] if len(rest) == 2 else None)
    if tag in ("namedtuple", "dataclass") and len(rest) == 2:
        return _decode_class(tag, *rest, leaf)
    raise ValueError(f"malformed node {str(node)[:80]}")


def _decode_class(tag: str, name, values, leaf) -> Any:
    """A NamedTuple or dataclass of :data:`ALLOWED`, rebuilt without calling it."""
    cls = _resolve(name)
    if tag == "namedtuple":
        if not _is_namedtuple(cls) or type(values) is not list or len(values) != len(cls._fields):
            raise ValueError(f"{name!r} is not a NamedTuple of {len(values)} fields")
        return tuple.__new__(cls, [_decode(v, leaf) for v in values])
    names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else None
    if names is None or _is_namedtuple(cls) or type(values) is not dict or sorted(values) != sorted(names):
        raise ValueError(f"{name!r} is not a dataclass with the fields {sorted(values)}")
    obj = object.__new__(cls)
    for field in names:
        object.__setattr__(obj, field, _decode(values[field], leaf))  # frozen ones too: no __init__ runs
    return obj


def to_bytes(tree: Any) -> bytes:
    """``tree`` as the bytes of a ``.npz`` archive (see the module's doc); ``TypeError`` naming
    the first unsupported type."""
    arrays: list[np.ndarray] = []
    root = _encode(tree, arrays, set())
    text = json.dumps({"format": FORMAT, "root": root}, allow_nan=False, separators=(",", ":"))
    buf = io.BytesIO()
    np.savez(buf, tree=np.frombuffer(text.encode("utf-8"), np.uint8), **{f"a{i}": a for i, a in enumerate(arrays)})
    return buf.getvalue()


def _entry(npz, name: str) -> np.ndarray:
    """An entry of the archive, read with ``allow_pickle=False``; ``ValueError`` where it is not
    a plain ``.npy`` array (a pickled object array, a torn entry) or is missing."""
    if name not in npz.files:
        raise ValueError(f"entry {name!r} is missing")
    try:
        return npz[name]
    except Exception as e:
        raise ValueError(f"entry {name!r} is not a plain .npy array ({e.__class__.__name__})") from None


def _read(source, arrays: bool) -> Any:
    """The tree of an archive (bytes or a path); without ``arrays`` only checked, every array
    leaf None (its entry must exist; its data is not read)."""

    def leaf(kind: str, i: int, ml_dtype: str | None):
        if not arrays:
            return None if f"a{i}" in npz.files else _entry(npz, f"a{i}")
        a = _entry(npz, f"a{i}")
        if ml_dtype is not None:
            dtype = getattr(ml_dtypes, ml_dtype, None)
            if dtype is None or a.dtype != np.uint8 or a.ndim == 0 or a.shape[-1] != np.dtype(dtype).itemsize:
                raise ValueError(f"entry a{i} is not the bytes of an ml_dtypes {ml_dtype!r} array")
            a = np.frombuffer(a.tobytes(), dtype).reshape(a.shape[:-1])
        if kind == "scalar" and a.ndim != 0:
            raise ValueError(f"entry a{i} is a scalar of shape {a.shape}")
        return a[()] if kind == "scalar" else jax.device_put(a) if kind == "jax" else a

    try:
        f = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise ValueError(f"unreadable ({e})") from None
    with f:
        if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):  # np.load would try pickle next: never
            raise ValueError(f"not a {FORMAT} archive: not a zip file (a pickle, a torn or a foreign file)")
        f.seek(0)
        try:
            npz = np.load(f, allow_pickle=False)
        except Exception as e:
            raise ValueError(f"not a {FORMAT} archive: a torn zip ({e.__class__.__name__}: {e})") from None
        with npz:
            try:
                tree = _entry(npz, "tree")
                meta = json.loads(tree.tobytes().decode("utf-8")) if tree.dtype == np.uint8 else None
                if type(meta) is not dict or meta.get("format") != FORMAT or "root" not in meta:
                    raise ValueError(f"its tree is not a {FORMAT} tree")
                return _decode(meta["root"], leaf)
            except OtherVersionError as e:
                raise OtherVersionError(f"a {FORMAT} archive of other code: {e}") from None
            except ValueError as e:
                raise ValueError(f"not a valid {FORMAT} archive: {e}") from None
            except Exception as e:  # a malformed tree: unhashable keys, too deep, not UTF-8
                raise ValueError(f"not a valid {FORMAT} archive ({e.__class__.__name__}: {e})") from None


def from_bytes(data: bytes) -> Any:
    """The tree :func:`to_bytes` wrote; ``ValueError`` for anything else, naming a refused type."""
    return _read(bytes(data), arrays=True)


def check_file(path: str) -> None:
    """``ValueError`` unless ``path`` is an archive :func:`from_bytes` would read: its tree and
    types are checked, its arrays' data is not read (cheap on a large file)."""
    _read(path, arrays=False)
