"""Every ``engine`` command in the README's ```sh blocks runs, exits 0, and leaves fixtures/ unchanged.

The commands run as a new user runs them, from a repository root: here a
temporary copy of fixtures/ (whose tree is hashed before and after), so a
command that writes into a journal it reads fails this test.  What a README
line needs to run unattended is substituted, and nothing else:

- ``engine run`` gets a short ``--duration`` (and ``--no-dashboard``) instead
  of running until Ctrl-C or for 60 s; ``--sim-fault-every`` shrinks with it;
- ``/tmp/...`` paths (and ``file:///tmp/...`` URIs) become paths in the test's
  temporary directory (never the machine's shared /tmp, where concurrent runs would meet);
- the debugging example's times (written for a capture on 2026-11-25 from
  12:03:00) are moved by the same offset onto the capture just made, so they
  fall inside it as they would for the reader.

Lines that are not ``engine`` commands (venv, pip, pytest) are skipped.

Commands run in README order within a *chain*: the commands that share a
``/tmp`` path (a capture, then its check, book and export; a push, then its
verify and pull).  Each chain is its own test with its own copy of fixtures/,
so the chains run in parallel; a command that shares no path is a chain alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.journal.reader import JournalReader
from engine.timefmt import format_ns, parse_time

ROOT = Path(__file__).resolve().parent.parent
DURATION = "8"  # the capture must outlast the example's 6 s window


def sh_commands(readme: str) -> list[list[str]]:
    """The ``engine`` commands of every ```sh block, in order, comments stripped."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", readme, re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                argv = shlex.split(part, comments=True)
                if argv and argv[0] == "engine":
                    out.append(argv)
    return out


def tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    } | {str(p.relative_to(root)) + "/": "dir" for p in root.rglob("*") if p.is_dir()}


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *argv[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def adapt(argv: list[str], tmp: Path, base_ns: int | None, first_ns: int | None) -> list[str]:
    out = []
    for i, a in enumerate(argv):
        prev = argv[i - 1] if i else ""
        if a.startswith("/tmp/"):
            a = str(tmp / a[len("/tmp/") :])
        elif a.startswith("file:///tmp/"):
            a = (tmp / a[len("file:///tmp/") :]).as_uri()
        elif prev == "--duration":
            # a capture that later lines read needs the example's window; the others, a moment
            a = DURATION if ("--out" in argv or "--journal" in argv) else "3"
        elif prev == "--sim-fault-every":
            a = "2"
        elif prev in ("--at", "--from", "--to") and base_ns is not None and first_ns is not None:
            a = format_ns(first_ns + parse_time(a) - base_ns)
        out.append(a)
    if out[1] == "run":
        out += [] if "--duration" in out else ["--duration", "3"]
        out += ["--no-dashboard"]
    return out


def tmp_roots(argv: list[str]) -> set[str]:
    """The top-level names under /tmp that a command reads or writes (``/tmp/j-tables`` → j-tables)."""
    out = set()
    for a in argv:
        for prefix in ("/tmp/", "file:///tmp/"):
            if a.startswith(prefix):
                out.add(a[len(prefix) :].split("/")[0])
    return out


def chains(commands: list[list[str]]) -> list[list[list[str]]]:
    """The commands grouped into chains of those sharing a /tmp path (transitively), in README order."""
    groups: list[tuple[set[str], list[list[str]]]] = []
    for argv in commands:
        roots = tmp_roots(argv)
        joined = [g for g in groups if roots and g[0] & roots]
        merged: tuple[set[str], list[list[str]]] = (set(roots), [])
        for g in joined:
            merged[0].update(g[0])
            merged[1].extend(g[1])
            groups.remove(g)
        merged[1].append(argv)
        merged[1].sort(key=commands.index)
        groups.append(merged)
    return sorted((g[1] for g in groups), key=lambda chain: commands.index(chain[0]))


COMMANDS = sh_commands((ROOT / "README.md").read_text())
CHAINS = chains(COMMANDS)


def test_the_readme_has_examples_and_every_one_is_in_one_chain() -> None:
    assert any(c[1] == "run" for c in COMMANDS) and any(c[1] == "export" for c in COMMANDS)
    assert sorted(c for chain in CHAINS for c in chain) == sorted(COMMANDS)
    assert any(len(chain) > 3 for chain in CHAINS)  # the debugging walk-through stays together


@pytest.mark.parametrize(
    "chain", CHAINS, ids=[" ".join(chain[0][1:4]).replace("/", "_") for chain in CHAINS]
)
def test_every_readme_example_runs_and_changes_nothing_under_fixtures(
    tmp_path: Path, chain: list[list[str]]
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "fixtures", repo / "fixtures")
    before = tree_hash(repo / "fixtures")
    # the debugging example's times, and where the capture it runs on starts
    times = [parse_time(c[i + 1]) for c in COMMANDS for i, a in enumerate(c) if a == "--from"]
    base_ns = min(times) if times else None
    first_ns = None
    for argv in chain:
        args = adapt(argv, tmp_path, base_ns, first_ns)
        p = run(args, repo)
        assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-2000:])
        assert "Traceback" not in p.stderr
        where = next((a for a in ("--out", "--journal") if a in args), None)
        if args[1] == "run" and where is not None:
            journal = Path(args[args.index(where) + 1])
            first_ns = next(iter(JournalReader(journal).frames())).recv_ns
    assert tree_hash(repo / "fixtures") == before
