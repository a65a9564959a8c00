"""Layouts drawn at random (issue 29, part 1): valid, seeded, uneven, shuffled, and with the
planted structure each family's generator promises. No environment is built here."""

from __future__ import annotations

import argparse
import collections
import math

import numpy as np
import pytest

from pgx_jax.cli.outputs import write_layout
from pgx_jax.families import (
    FAMILIES,
    HOST_FAMILIES,
    LAYOUTS,
    group_sizes,
    layout_families,
    load_tasks_file,
    parse_layout,
    random_layout,
    task_entries,
    validate_tasks,
)

SEEDS = range(40)


def _by_group(entries):
    out = collections.defaultdict(list)
    for e in entries:
        out[e["group"]].append(e)
    return [out[g] for g in sorted(out)]


def test_every_family_with_planted_groups_has_a_generator():
    planted = {name for name, spec in {**FAMILIES, **HOST_FAMILIES}.items() if "group" in spec.default_tasks()[0]}
    assert set(layout_families()) == planted


@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_layouts_are_valid_seeded_and_vary(family):
    spec = LAYOUTS[family]
    sizes, ks, shuffled, layouts = [], set(), 0, set()
    for seed in SEEDS:
        entries = random_layout(family, seed)
        assert entries == random_layout(family, seed)  # the same seed, the same layout
        assert validate_tasks(family, entries) == entries  # within the family's ranges, names unique
        groups = _by_group(entries)
        assert spec.tasks[0] <= len(entries) <= spec.tasks[1]
        assert len(groups) in spec.groups and min(len(g) for g in groups) >= 2
        labels = [e["group"] for e in entries]
        shuffled += labels != sorted(labels)
        sizes.append(tuple(sorted(len(g) for g in groups)))
        ks.add(len(groups))
        layouts.add(str(entries))
    assert len(layouts) == len(SEEDS)
    unbalanced = sum(max(s) > min(s) for s in sizes)
    assert unbalanced >= len(SEEDS) // 2, f"only {unbalanced} of {len(SEEDS)} layouts have uneven groups"
    assert len(set(sizes)) >= 4
    assert ks == set(spec.groups)  # every allowed number of groups occurs
    assert shuffled >= len(SEEDS) * 3 // 4


def _angle_gap(a, b):
    d = abs(a - b) % (2 * math.pi)
    return min(d, 2 * math.pi - d)


@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_planted_groups_are_what_the_generator_says(family):
    """Within a group the defining parameter stays closer than between groups (or is the same
    discrete choice): a planted split is there to be found."""
    for seed in SEEDS:
        groups = _by_group(random_layout(family, seed))
        if family in ("pendulum-physics", "cartpole-physics"):
            signs = [{np.sign(e["motor"]) for e in g} for g in groups]
            assert signs == [{1.0}, {-1.0}]
            continue
        if family in ("hopper-mo", "walker-mo"):
            dominant = [{int(np.argmax(e["weights"][:3])) for e in g} for g in groups]
            assert all(len(d) == 1 for d in dominant) and len(set.union(*dominant)) == len(groups)
            continue
        if family == "ant-dir":
            value, gap = (lambda e: e["angle"]), _angle_gap
        elif family == "reacher-goals":
            value, gap = (lambda e: math.atan2(e["goal"][1], e["goal"][0])), _angle_gap
        elif family == "cheetah-gravity":
            value, gap = (lambda e: math.log(e["gravity"])), (lambda a, b: abs(a - b))
        elif family == "cheetah-vel":
            value, gap = (lambda e: e["velocity"]), (lambda a, b: abs(a - b))
        else:  # two bands of one field: every task of one band on one side of every task of the other
            field = "gravity" if "gravity" in groups[0][0] else "density"
            spans = sorted((min(e[field] for e in g), max(e[field] for e in g)) for g in groups)
            assert spans[0][1] < spans[1][0], (family, seed, spans)
            continue
        within = max(gap(value(a), value(b)) for g in groups for a in g for b in g)
        across = min(
            gap(value(a), value(b)) for i, g in enumerate(groups) for h in groups[i + 1 :] for a in g for b in h
        )
        assert within < across, (family, seed, within, across)


def test_group_sizes_are_uniform_over_compositions():
    rng = np.random.default_rng(0)
    draws = collections.Counter(tuple(group_sizes(rng, 7, 2)) for _ in range(3000))
    assert set(draws) == {(2, 5), (3, 4), (4, 3), (5, 2)}
    assert all(abs(c / 3000 - 0.25) < 0.035 for c in draws.values()), draws
    assert all(sum(group_sizes(rng, 11, 3)) == 11 for _ in range(50))
    with pytest.raises(ValueError, match="cannot split 5 tasks into 3 groups of at least 2"):
        group_sizes(rng, 5, 3)


def test_two_families_with_one_seed_are_unrelated_draws():
    a, b = random_layout("pendulum-physics", 3), random_layout("cartpole-physics", 3)
    assert [e["gravity"] for e in a][:4] != [e["gravity"] for e in b][:4]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("random:-1", "--layout 'random:-1': allowed 'default' or 'random:SEED'"),
        ("random:", "--layout 'random:'"),
        ("random:1.5", "--layout 'random:1.5'"),
        ("banana", "--layout 'banana'"),
    ],
)
def test_bad_layout_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_layout(spec)


def test_layout_refusals_name_the_value():
    assert parse_layout(None) is None and parse_layout("default") is None and parse_layout("random:12") == 12
    with pytest.raises(ValueError, match="has no layout generator; those with one"):
        task_entries("metaworld-mt10", layout="random:1")
    with pytest.raises(ValueError, match="unknown family 'nope'"):
        task_entries("nope", layout="random:1")
    with pytest.raises(ValueError, match="not both"):
        task_entries("pendulum-physics", "tasks.json", "random:1")
    with pytest.raises(ValueError, match="layout seed must be an integer >= 0, got -2"):
        random_layout("pendulum-physics", -2)


def test_the_cli_writes_the_drawn_layout_as_a_tasks_file(tmp_path):
    args = argparse.Namespace(family="ant-dir", tasks_file=None, layout="random:5")
    write_layout(args, str(tmp_path))
    assert load_tasks_file("ant-dir", tmp_path / "tasks.json") == random_layout("ant-dir", 5)
    write_layout(argparse.Namespace(family="ant-dir", tasks_file=None, layout="default"), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()  # only a drawn layout is written


def test_a_layout_of_a_given_size_for_scale_studies():
    """``n_tasks`` fixes n beyond the family's range (benchmarks/scale.py); the rest is drawn as
    usual, and a layout too small for its planted groups is refused, naming the bound."""
    from pgx_jax.families import make_family, random_layout

    for n in (8, 33, 64):
        entries = random_layout("pendulum-physics", 0, n_tasks=n)
        assert len(entries) == n
        sizes = np.bincount([e["group"] for e in entries])
        assert len(sizes) == 2 and sizes.min() >= 2
        assert make_family("pendulum-physics", entries).n_tasks == n
    assert random_layout("pendulum-physics", 5, n_tasks=None) == random_layout("pendulum-physics", 5)
    with pytest.raises(ValueError, match=r"n_tasks must be an integer >= 4 \(two per planted group\), got 3"):
        random_layout("pendulum-physics", 0, n_tasks=3)
