"""The package's shape (issue 14): no import circle, lower stages never import higher ones, the
stages never ask which simulator a family has, no function longer than about 80 lines.

Every import is read from the source (module level and inside functions alike), so a lazy
import that hides a circle fails here too.
"""

from __future__ import annotations

import ast
import functools
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "pgx_jax"

# The layers are the subpackages, lowest first: a module may import modules of its own package or
# of a package below, never above. Every module lives in one of them; the top-level ``__init__``
# (the public API's re-exports) shares the top layer with the command line.
LAYERS = ["core", "runtime", "families", "rl", "estimation", "simulators", "experiments", "cli"]


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _resolve(importer: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The pgx_jax modules an import statement loads (``from P import m`` with m a module: P.m)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "pgx_jax"]
    base = node.module or ""
    if node.level:  # relative: from the importer's package
        pkg = importer.split(".") if MODULES[importer].name == "__init__.py" else importer.split(".")[:-1]
        pkg = pkg[: len(pkg) - node.level + 1]
        base = ".".join([*pkg, base] if base else pkg)
    if base.split(".")[0] != "pgx_jax":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


@functools.cache
def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(_resolve(name, node))
        graph[name] = {d for d in deps if d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int:
    """The index of ``module``'s subpackage in LAYERS (``pgx_jax`` itself: the top one)."""
    if module == "pgx_jax":
        return len(LAYERS) - 1
    package = module.split(".")[1]
    if package not in LAYERS:
        raise AssertionError(f"{module} is in no layer package {LAYERS}: move it into one")
    return LAYERS.index(package)


def test_every_module_lives_in_a_layer_package():
    on_disk = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert on_disk == sorted(LAYERS)
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert flat == []
    assert all(_layer(m) < len(LAYERS) for m in MODULES)


def test_the_import_graph_is_read_from_every_module():
    graph = import_graph()
    assert "pgx_jax.simulators.host" in graph and "pgx_jax.families.registry" in graph
    assert "pgx_jax.rl.ppo" in graph["pgx_jax.simulators.jitted"]  # a real edge is found
    assert "pgx_jax.estimation.affinity" in graph["pgx_jax.experiments.pipeline"]  # `from pkg import module`
    assert "pgx_jax.families.locomotion" in graph["pgx_jax.families.registry"]  # `import pkg.module as m`


def test_no_import_circle():
    assert _cycles(import_graph()) == []


def test_the_circle_finder_finds_circles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lower_stages_never_import_higher_ones():
    upward = [
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, deps in import_graph().items()
        for b in deps
        if _layer(b) > _layer(a)
    ]
    assert upward == []


# a stage asking which kind of simulator it holds: is_host, a type test or a class-name test on a
# family or simulator class, a comparison with a family's ``simulator`` name, duck-typing the host
ASKS_KIND = re.compile(
    r"is_host|isinstance\([^)]*(Host|Jax|Task)(Family|Simulator)|type\([^)]*\)\.__name__"
    r"|\.simulator\s*(==|!=|\bin\b|\bis\b)|(==|!=)\s*\w+\.simulator\b|hasattr\([^)]*\"(make_env|env|reset)\""
)
# what only the simulators and families may name: the host side and the two implementations
KIND_MODULES = (
    "pgx_jax.families.host",
    "pgx_jax.families.host_benchmarks",
    "pgx_jax.simulators.host",
    "pgx_jax.simulators.jitted",
)
KIND_NAMES = {"HostFamily", "EnvBatch", "HostSimulator", "JaxSimulator", "is_host"}
STAGES = sorted(n for n in MODULES if not n.startswith(("pgx_jax.simulators", "pgx_jax.families")) and n != "pgx_jax")


@pytest.mark.parametrize("name", STAGES)
def test_stages_never_ask_which_simulator(name):
    source = MODULES[name].read_text()
    hits = [f"{name}:{i}: {line.strip()}" for i, line in enumerate(source.splitlines(), 1) if ASKS_KIND.search(line)]
    tree = ast.parse(source)
    hits += [f"{name}: imports {m}" for m in import_graph()[name] if m in KIND_MODULES]
    hits += [
        f"{name}:{node.lineno}: names {node.id}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and node.id in KIND_NAMES
    ]
    hits += [
        f"{name}:{node.lineno}: imports {alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name in KIND_NAMES
    ]
    assert hits == []


@pytest.mark.parametrize(
    "line, asks",
    [
        ("if is_host(family):", True),
        ("isinstance(family, HostFamily)", True),
        ("isinstance(sim, JaxSimulator)", True),
        ('if family.simulator == "host":', True),
        ('if "host" == family.simulator:', True),
        ('type(family).__name__ == "HostFamily"', True),
        ('hasattr(family, "make_env")', True),
        ("sim = simulators.simulator(family)", False),
        ("if not sim.counts_flops:", False),
        ("family.n_tasks, family.episode_length", False),
    ],
)
def test_the_kind_question_pattern(line, asks):
    assert bool(ASKS_KIND.search(line)) is asks


def test_both_simulators_implement_the_whole_protocol():
    from pgx_jax.simulators import Simulator
    from pgx_jax.simulators.host import HostSimulator
    from pgx_jax.simulators.jitted import JaxSimulator

    wanted = {n for n in vars(Simulator) if not n.startswith("_")} | set(Simulator.__annotations__)
    assert {"train_many", "evaluate", "counts_flops", "family"} <= wanted
    for impl in (JaxSimulator, HostSimulator):
        missing = sorted(n for n in wanted - {"family"} if not hasattr(impl, n))
        assert missing == [], f"{impl.__name__} lacks {missing}"


def test_a_family_names_its_simulator_and_an_unknown_one_is_refused(fast_family):
    import dataclasses

    from pgx_jax.families import HostFamily
    from pgx_jax.simulators import simulator
    from pgx_jax.simulators.host import HostSimulator
    from pgx_jax.simulators.jitted import JaxSimulator

    host = HostFamily(
        name="dummy",
        make_env=lambda i: None,
        task_names=("a", "b"),
        groups=None,
        episode_length=5,
        env_obs_size=3,
        action_size=1,
        to_env_action=lambda a: a,
    )
    assert isinstance(simulator(fast_family), JaxSimulator) and isinstance(simulator(host), HostSimulator)
    with pytest.raises(TypeError, match="stepped on the host and cannot be traced"):
        host.reset(None, 0)  # what pgx_jax.rl.ppo.train meets when handed a host family

    @dataclasses.dataclass(frozen=True)
    class Odd:
        name: str = "odd"
        simulator: str = "gpu-cluster"

    with pytest.raises(TypeError, match="names simulator 'gpu-cluster'; known: \\['host', 'jax'\\]"):
        simulator(Odd())


MAX_FUNCTION_LINES = 80


def test_no_function_longer_than_80_lines():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []


MAX_MODULE_LINES = 500


def test_no_module_longer_than_500_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def _own_package_imports(name: str) -> list[str]:
    """The imports in module ``name`` that load its own package's ``__init__`` namespace:
    ``from <package> import x`` or ``import <package>`` (``from <package>.<module> import x`` does not)."""
    package = name.rpartition(".")[0] if MODULES[name].name not in ("__init__.py", "__main__.py") else None
    if package in (None, "", "pgx_jax"):
        return []
    hits = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module == package:
            hits.append(f"{name}:{node.lineno}: from {package} import ...")
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module:
            hits.append(f"{name}:{node.lineno}: from . import ...")
        elif isinstance(node, ast.Import) and any(a.name == package for a in node.names):
            hits.append(f"{name}:{node.lineno}: import {package}")
    return hits


def test_no_module_imports_its_own_package_init():
    """A package's ``__init__`` re-exports its modules; a module of the package importing from that
    ``__init__`` makes the two import each other and the package's import order matter."""
    assert [hit for name in MODULES for hit in _own_package_imports(name)] == []


def test_the_own_package_import_finder_finds_them(tmp_path, monkeypatch):
    path = tmp_path / "m.py"
    path.write_text("from pgx_jax.families import base\nfrom pgx_jax.families.base import x\nimport pgx_jax.families\n")
    monkeypatch.setitem(MODULES, "pgx_jax.families.m", path)
    assert _own_package_imports("pgx_jax.families.m") == [
        "pgx_jax.families.m:1: from pgx_jax.families import ...",
        "pgx_jax.families.m:3: import pgx_jax.families",
    ]


# Inside a package, its modules in layers too (lowest first); a module imports its own level or
# below. compare and meta-rl are siblings over groupings, never one over the other.
SUBLAYERS = {
    "experiments": [
        ["config", "keys"],
        ["estimate", "groups", "truth", "agreement", "first_order", "cost", "hessian_check"],
        ["pipeline"],
        ["validate", "groupings"],
        ["compare", "meta_rl"],
    ],
    "cli": [["args"], ["outputs"], ["running"], ["prepare"], ["train", "run", "validate", "compare", "meta_rl"]],
}


def _sublayer(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if len(parts) != 3 or parts[1] not in SUBLAYERS or parts[2].startswith("__"):
        return None
    for i, level in enumerate(SUBLAYERS[parts[1]]):
        if parts[2] in level:
            return parts[1], i
    raise AssertionError(f"{module} is in no level of SUBLAYERS[{parts[1]!r}]: place it")


def test_every_module_of_a_layered_package_has_a_level():
    for package in SUBLAYERS:
        on_disk = sorted(p.stem for p in (PACKAGE / package).glob("*.py") if not p.stem.startswith("__"))
        assert on_disk == sorted(m for level in SUBLAYERS[package] for m in level)


def test_inside_a_package_no_module_imports_a_higher_level():
    upward = []
    for a, deps in import_graph().items():
        for b in deps:
            la, lb = _sublayer(a), _sublayer(b)
            if la and lb and la[0] == lb[0] and lb[1] > la[1]:
                upward.append(f"{a} (level {la[1]}) imports {b} (level {lb[1]})")
    assert upward == []
    graph = import_graph()
    assert "pgx_jax.experiments.compare" not in graph["pgx_jax.experiments.meta_rl"]
    assert "pgx_jax.experiments.meta_rl" not in graph["pgx_jax.experiments.compare"]
