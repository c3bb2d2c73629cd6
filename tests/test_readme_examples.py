"""Every ``engine`` command in the README's ```sh blocks runs, exits 0, and leaves fixtures/ unchanged.

The commands run as a new user runs them, from a repository root: here a
temporary copy of fixtures/ (whose tree is hashed before and after), so a
command that writes into a journal it reads fails this test.  What a README
line needs to run unattended is substituted, and nothing else:

- ``engine run`` gets a short ``--duration`` (and ``--no-dashboard``) instead
  of running until Ctrl-C or for 60 s; ``--sim-fault-every`` shrinks with it;
- ``/tmp/...`` paths become paths in the test's temporary directory;
- the debugging example's times (written for a capture on 2026-11-25 from
  12:03:00) are moved by the same offset onto the capture just made, so they
  fall inside it as they would for the reader.

Lines that are not ``engine`` commands (venv, pip, pytest) are skipped.
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


def test_every_readme_example_runs_and_changes_nothing_under_fixtures(tmp_path: Path) -> None:
    commands = sh_commands((ROOT / "README.md").read_text())
    assert any(c[1] == "run" for c in commands) and any(c[1] == "export" for c in commands)
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "fixtures", repo / "fixtures")
    before = tree_hash(repo / "fixtures")
    # the debugging example's times, and where the capture it runs on starts
    times = [parse_time(c[i + 1]) for c in commands for i, a in enumerate(c) if a == "--from"]
    base_ns = min(times) if times else None
    first_ns = None
    for argv in commands:
        args = adapt(argv, tmp_path, base_ns, first_ns)
        p = run(args, repo)
        assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-2000:])
        assert "Traceback" not in p.stderr
        where = next((a for a in ("--out", "--journal") if a in args), None)
        if args[1] == "run" and where is not None:
            journal = Path(args[args.index(where) + 1])
            first_ns = next(iter(JournalReader(journal).frames())).recv_ns
    assert tree_hash(repo / "fixtures") == before
