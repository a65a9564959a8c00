"""Results say which code made them (issue 30, item 2): the commit, whether the code was clean,
the hash of its uncommitted changes; stage fingerprints carry that hash; cited benchmarks refuse a
dirty tree unless told ``--allow-dirty``, and the files then say so."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

import pytest

from pgx_jax.rl import checkpoint
from pgx_jax.runtime import provenance, results


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """A checkout with the package, a benchmark and a results file, all committed."""
    root = tmp_path / "repo"
    for rel, text in {
        "pgx_jax/a.py": "x = 1\n",
        "benchmarks/b.py": "y = 2\n",
        "benchmarks/results/r.json": "{}\n",
        "README.md": "hello\n",
        ".gitignore": "*.pyc\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _git(root, "init", "-q")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return root


def test_a_committed_tree_is_clean_and_names_its_commit(repo):
    state = provenance.code_state(str(repo / "pgx_jax"))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert state["commit"] == head
    assert state["clean"] is True and state["diff_sha256"] is None
    assert state["describe"] == head[: len(state["describe"])]


def test_uncommitted_code_is_dirty_with_a_hash_of_exactly_that_change(repo):
    (repo / "pgx_jax/a.py").write_text("x = 2\n")
    one = provenance.code_state(str(repo))
    assert one["clean"] is False and one["describe"].endswith("-dirty")
    (repo / "pgx_jax/a.py").write_text("x = 3\n")
    two = provenance.code_state(str(repo))
    assert two["diff_sha256"] != one["diff_sha256"]  # another edit, another hash
    (repo / "pgx_jax/a.py").write_text("x = 2\n")
    assert provenance.code_state(str(repo))["diff_sha256"] == one["diff_sha256"]  # the same edit, the same hash


def test_the_hash_does_not_follow_the_users_git_config(repo, monkeypatch):
    """Reviewer's finding (issue 30): the hash was of git's diff text, which diff.noprefix,
    color.diff or an external diff change; two hosts with the same edit then disagreed."""
    (repo / "pgx_jax/a.py").write_text("x = 2\n")
    plain = provenance.code_state(str(repo))["diff_sha256"]
    for key, value in (("diff.noprefix", "true"), ("color.diff", "always"), ("diff.algorithm", "patience")):
        _git(repo, "config", key, value)
    assert provenance.code_state(str(repo))["diff_sha256"] == plain
    (repo / "pgx_jax/a.py").unlink()  # a deleted file is a change too
    assert provenance.code_state(str(repo))["diff_sha256"] not in (None, plain)


def test_a_failing_git_diff_counts_as_dirty(repo, monkeypatch):
    real = provenance._git
    monkeypatch.setattr(provenance, "_git", lambda args, cwd: None if "diff" in args else real(args, cwd))
    state = provenance.code_state(str(repo))
    assert state["clean"] is False and state["describe"].endswith("-dirty") and "unknown" in state["diff_sha256"]


def test_an_untracked_module_makes_the_code_dirty_but_results_and_docs_do_not(repo):
    (repo / "benchmarks/results/r.json").write_text('{"new": 1}\n')
    (repo / "benchmarks/results/s.json").write_text("{}\n")
    (repo / "README.md").write_text("edited\n")
    (repo / "pgx_jax/cache.pyc").write_text("ignored")
    assert provenance.code_state(str(repo))["clean"] is True
    (repo / "benchmarks/new.py").write_text("z = 0\n")
    state = provenance.code_state(str(repo))
    assert state["clean"] is False
    (repo / "benchmarks/new.py").write_text("z = 1\n")
    assert provenance.code_state(str(repo))["diff_sha256"] != state["diff_sha256"]  # the file's bytes count


def test_outside_a_checkout_nothing_is_claimed(tmp_path):
    state = provenance.code_state(str(tmp_path))
    assert state["clean"] is None and state["commit"] == "unknown"


def test_versions_record_the_state_of_the_code():
    v = checkpoint.versions()
    state = checkpoint.source_state()
    assert v["pgx_jax_commit"] == state["describe"]
    assert v["pgx_jax_clean"] is state["clean"]
    assert v["pgx_jax_diff_sha256"] == state["diff_sha256"]


def test_a_dirty_tree_is_refused_unless_allowed_and_then_the_file_says_so(monkeypatch, capsys):
    dirty = {"commit": "f" * 40, "describe": "fffffff-dirty", "clean": False, "diff_sha256": "ab" * 32}
    monkeypatch.setattr(provenance, "source_state", lambda: dirty)
    with pytest.raises(SystemExit) as exit_:
        results.parse_benchmark_args_from(argparse.ArgumentParser(), [])
    assert exit_.value.code == 2
    assert re.search("uncommitted changes.*abababababab.*--allow-dirty", capsys.readouterr().err.replace("\n", " "))
    args = results.parse_benchmark_args_from(argparse.ArgumentParser(), ["--allow-dirty"])
    assert args.allow_dirty
    line = results.provenance({"machine": results.machine(), "versions": checkpoint.versions()})
    assert "Made by uncommitted code" in line and "ab" * 32 in line
    clean = {**dirty, "describe": "fffffff", "clean": True, "diff_sha256": None}
    monkeypatch.setattr(provenance, "source_state", lambda: clean)
    assert not results.parse_benchmark_args_from(argparse.ArgumentParser(), []).allow_dirty
    line = results.provenance({"machine": results.machine(), "versions": checkpoint.versions()})
    assert "uncommitted" not in line


def test_every_benchmark_that_writes_results_guards_the_tree():
    here = os.path.join(os.path.dirname(__file__), "..", "benchmarks")
    scripts = [f for f in os.listdir(here) if f.endswith(".py")]
    writes = ("write_json", "write_table_report", "write_markdown", "json.dump")
    writers = [f for f in scripts if any(w in open(os.path.join(here, f)).read() for w in writes)]
    assert len(writers) >= 16
    unguarded = [f for f in writers if "parse_benchmark_args(" not in open(os.path.join(here, f)).read()]
    assert not unguarded, f"benchmarks writing results without the clean-tree guard: {unguarded}"


def test_the_stage_fingerprint_changes_with_the_uncommitted_diff(monkeypatch, tmp_path):
    from pgx_jax import cli

    args = cli.args.build_parser().parse_args(["run", "--budget", "smoke", "--out", str(tmp_path)])
    family = None
    prints = []
    for diff in ("aa" * 32, "bb" * 32):
        state = {"commit": "f" * 40, "describe": "fffffff-dirty", "clean": False, "diff_sha256": diff}
        monkeypatch.setattr(provenance, "source_state", lambda state=state: state)
        prints.append(cli.outputs.stage_store(args, str(tmp_path), family).fingerprint)
    assert prints[0] != prints[1] and "aa" * 32 in prints[0]


def test_a_benchmark_refuses_a_dirty_tree_before_any_work(tmp_path):
    """A real benchmark process from a copy of this checkout with one edit: exit status 2 and the
    message, nothing written."""
    src = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    root = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", src, str(root)], check=True)
    for folder in ("pgx_jax", "benchmarks"):  # this working tree's code, committed in the copy
        for name in subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", folder],
            cwd=src,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split():
            if name.endswith(".py"):
                shutil.copy(os.path.join(src, name), root / name)
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "the working tree", "--allow-empty")
    assert provenance.code_state(str(root))["clean"] is True
    with open(root / "pgx_jax" / "results.py", "a") as f:
        f.write("\n# an uncommitted edit\n")
    before = sorted(os.listdir(root / "benchmarks" / "results"))
    env = {**os.environ, "PYTHONPATH": str(root)}
    res = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "throughput.py")], cwd=root, env=env, capture_output=True, text=True
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "uncommitted changes" in res.stderr and "--allow-dirty" in res.stderr
    assert sorted(os.listdir(root / "benchmarks" / "results")) == before
