"""What the install promises (issue 31, item 1): ``pyproject.toml`` gives every dependency a
lower bound, ``constraints.txt`` pins each at exactly that bound, and this environment satisfies
``pyproject.toml``. CI installs with the constraints (.ci/run), so the whole suite, smoke
trainings included, runs against the lower bounds; a user's newer set satisfies the ranges."""

import importlib.metadata as metadata
import os
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _constraints() -> dict[str, str]:
    pins = {}
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                name, version = re.fullmatch(r"([A-Za-z0-9_.\-\[\],]+)==(\S+)", line).groups()
                pins[canonicalize_name(name)] = version
    return pins


def _requirements(extras=("gym", "box2d", "highway", "metaworld", "envs")) -> list[Requirement]:
    project = _project()
    reqs = [Requirement(r) for r in project["dependencies"]]
    return reqs + [Requirement(r) for e in extras for r in project["optional-dependencies"][e]]


def _lower(req: Requirement) -> str:
    lows = [s.version for s in req.specifier if s.operator == ">="]
    assert len(lows) == 1, f"{req}: one lower bound (>=) expected"
    return lows[0]


def test_every_dependency_has_a_lower_bound_and_no_exact_pin():
    for req in _requirements():
        _lower(req)
        assert not any(s.operator == "==" for s in req.specifier), f"{req} pins one version: use a range"


def test_constraints_pin_the_lower_bounds():
    """The tested set is the lower bound: constraints.txt pins each dependency at its bound (ml_dtypes
    excepted: jax itself needs a newer one than the bound pgx_jax states for its own use)."""
    pins = _constraints()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not in constraints.txt"
        if name != "ml-dtypes":
            assert pins[name] == _lower(req), f"{name}: constraints.txt pins {pins[name]}, the bound is {_lower(req)}"


def test_this_environment_satisfies_the_ranges():
    for req in _requirements(extras=()):
        installed = metadata.version(req.name)
        assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} is not in {req}"


@pytest.mark.parametrize("extra", ["cuda12", "cuda13", "tpu"])
def test_accelerator_extras_are_jax_own_at_the_same_bound(extra):
    (req,) = [Requirement(r) for r in _project()["optional-dependencies"][extra]]
    jax = next(Requirement(r) for r in _project()["dependencies"] if Requirement(r).name == "jax")
    assert req.name == "jax" and req.extras == {extra} and _lower(req) == _lower(jax)
    assert extra in metadata.metadata("jax").get_all("Provides-Extra")  # jax offers it at this version


def test_readme_and_ci_install_the_tested_set():
    with open(os.path.join(ROOT, "README.md")) as f:
        first = f.read().split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert len(first) == 2 and "-c constraints.txt" in first[1] and first[1] in ci
