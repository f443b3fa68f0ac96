"""docs/cli.md is the program's own --help: a flag added without `make docs` fails here."""

from __future__ import annotations

import subprocess
import sys

from agent.commands.reference import DOC, MARKER, hand_written, render
from tests.cli.test_error_boundary import edge_agent


def test_docs_cli_md_is_what_make_docs_generates() -> None:
    current = DOC.read_text(encoding="utf-8")
    assert current == render(hand_written(current)), "docs/cli.md is stale: run `make docs` and commit it"


def test_every_command_has_its_section_with_its_real_help() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for argv, title in (
        (["secret", "generate"], "### secret generate"),
        (["outbox", "purge"], "### outbox purge"),
    ):
        result = edge_agent(*argv, "--help")
        section = doc.split(title + "\n", 1)[1].split("\n#", 1)[0]
        first_usage_line = result.stdout.splitlines()[0].split("[", 1)[0]
        assert first_usage_line in section


def test_check_mode_reports_a_stale_file(tmp_path: object) -> None:
    stale = render(hand_written(DOC.read_text(encoding="utf-8"))).replace("--out OUT", "--out")
    assert MARKER in stale
    check = subprocess.run(
        [sys.executable, "-c", (
            "import sys, agent.commands.reference as r; from pathlib import Path; "
            "p = Path(sys.argv[1]); p.write_text(sys.argv[2]); r.DOC = p; sys.exit(r.main(['--check']))"
        ), str(tmp_path) + "/cli.md", stale],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 1
    assert "is stale: run `make docs`" in check.stderr
