"""The broken-config corpus: every mistake a plant engineer is likely to make, and the one error it gets.

Each file in ``corpus/`` is dropped into a copy of the shipped ``config/`` (``corpus/machines/X`` into
``machines/``, ``corpus/workflows/X`` into ``workflows/``, ``corpus/agent/X`` replaces ``agent.yaml``);
loading must report exactly the listed problem: file, line, key path and a message that says what to
do. One error per mistake: echoes of the same mistake bury it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.config.agent_file import collect_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config"
CORPUS = Path(__file__).parent / "corpus"
TOKEN = "tok_corpus_0123456789abcdef"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SHIPPED_SECRET_ENVS = (
    "ALARM_WEBHOOK_SECRET",
    "MAINTAINX_WEBHOOK_SECRET",
    "PRODUCTION_SYNC_SECRET",
    "QUALITY_WEBHOOK_SECRET",
    "STATUS_WEBHOOK_SECRET",
    "SUPERVISOR_WEBHOOK_SECRET",
)
CATEGORIES = "Maintenance Required, Waiting for Material, Setup, Tooling, No Operator"

# Paths are shown relative to the folder that holds config/ ("{d}/" stands for that folder where the
# message quotes a full path).
EXPECTED: dict[str, list[str]] = {
    "machines/unknown-key.yaml": [
        "config/machines/unknown-key.yaml:8: tags.spindle_rpm.scael: unknown key; known keys here: "
        "address, bit, byte_order, length, map, offset, precision, scale, table, type, unit"
    ],
    "machines/wrong-type.yaml": [
        "config/machines/wrong-type.yaml:8: tags.spindle_rpm.type: unknown value 'float'; expected one of "
        "int16, uint16, int32, uint32, int64, uint64, float32, float64, string, bit"
    ],
    "machines/bad-byte-order.yaml": [
        "config/machines/bad-byte-order.yaml:8: tags.spindle_rpm.byte_order: unknown value 'DCAB'; "
        "expected one of ABCD, DCBA, BADC, CDAB"
    ],
    "machines/mill-02.yaml": [
        "config/machines/mill-02.yaml:2: id: duplicate machine id 'mill-01': also defined in "
        "config/machines/mill-01.yaml"
    ],
    "machines/yaml-syntax.yaml": [
        "config/machines/yaml-syntax.yaml:5: YAML syntax error: expected ',' or '}', but got ':'"
    ],
    "machines/unknown-profile.yaml": [
        "config/machines/unknown-profile.yaml:5: profile: unknown profile 'opc-40502'; "
        "expected one of modbus-sim, opc40502"
    ],
    "machines/unknown-category.yaml": [
        "config/machines/unknown-category.yaml:10: downtime.categorize[1].category: 'Coffee Break' is not "
        f"a plant downtime category; listed: {CATEGORIES}"
    ],
    "workflows/unknown-machine-scope.yaml": [
        "config/workflows/unknown-machine-scope.yaml:4: scope.machines[1]: unknown machine 'mill-99' "
        "(scope item 1)"
    ],
    "workflows/secret-env-missing.yaml": [
        "config/workflows/secret-env-missing.yaml:7: actions[0].webhook.secret_env: environment variable "
        "EDGE_AGENT_CORPUS_UNSET_SECRET is not set or empty"
    ],
    "workflows/secret-file-missing.yaml": [
        "config/workflows/secret-file-missing.yaml:7: actions[0].webhook.secret_file: cannot read secret "
        "file {d}/config/secrets/tooling.secret: No such file or directory"
    ],
    "agent/missing-machines-dir.yaml": [
        "config/agent.yaml:4: agent.machines_dir: machines directory not found: {d}/config/machine-files"
    ],
    "agent/missing-workflows-dir.yaml": [
        "config/agent.yaml:4: agent.workflows_dir: workflows directory not found: {d}/config/flows"
    ],
    "agent/token-file-missing.yaml": [
        "config/agent.yaml:6: api.token_file: cannot read secret file {d}/config/secrets/no-such-token: "
        "No such file or directory"
    ],
    "agent/unknown-key.yaml": ["config/agent.yaml:4: log.levle: unknown key; known keys here: format, level"],
    "agent/bad-bind.yaml": ["config/agent.yaml:5: api.bind: port must be 1-65535, got 87870"],
    "agent/event-loop-unknown.yaml": [
        "config/agent.yaml:4: agent.event_loop: unknown value 'libuv'; expected one of asyncio, uvloop"
    ],
    "agent/empty.yaml": [
        "config/agent.yaml: the file is empty; it needs at least an agent: section (see config/agent.yaml)"
    ],
    "machines/latin1.yaml": [
        "config/machines/latin1.yaml:3: not UTF-8 text (byte 0xe4 at column 24); save the file as UTF-8"
    ],
}


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SHIPPED_SECRET_ENVS:
        monkeypatch.setenv(name, WEBHOOK_SECRET)
    monkeypatch.delenv("EDGE_AGENT_CORPUS_UNSET_SECRET", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


def shipped_copy(where: Path) -> Path:
    """``config/`` as shipped, with the API token a real install generates (secrets are not in git)."""
    folder = where / "config"
    shutil.copytree(SHIPPED, folder, ignore=shutil.ignore_patterns("secrets"))
    (folder / "secrets").mkdir()
    (folder / "secrets" / "api-token").write_text(TOKEN + "\n", encoding="utf-8")
    return folder


def with_case(folder: Path, case: str) -> None:
    source = CORPUS / case
    kind = source.parent.name
    target = folder / "agent.yaml" if kind == "agent" else folder / kind / source.name
    shutil.copy(source, target)


def problems_of(folder: Path) -> list[str]:
    config, problems = collect_config(folder / "agent.yaml", folder.parent / "state")
    assert (config is None) == bool(problems.items)
    # agent.yaml is named by the path it was opened with; show every file relative to the test folder.
    return [str(p).replace(f"{folder.parent}/", "") for p in problems.items]


def test_every_corpus_file_has_its_expected_error() -> None:
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.yaml")}
    assert files == set(EXPECTED)


@pytest.mark.usefixtures("secrets_env")
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_broken_file_gets_exactly_its_error(tmp_path: Path, case: str) -> None:
    folder = shipped_copy(tmp_path)
    with_case(folder, case)
    expected = [line.replace("{d}/", "") for line in EXPECTED[case]]
    assert problems_of(folder) == expected


@pytest.mark.usefixtures("secrets_env")
def test_shipped_config_passes_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = shipped_copy(tmp_path)
    code = main(["check-config", str(folder), "--state-dir", str(tmp_path / "state")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[0] == f"{folder / 'agent.yaml'}: ok"
    assert "mill-01" in out and "lathe-02" in out
    for name in (
        "Maintenance alert",
        "Supervisor notification",
        "Daily production sync",
        "Quality inspection",
    ):
        assert name in out
    assert WEBHOOK_SECRET not in out and TOKEN not in out


@pytest.mark.usefixtures("secrets_env")
def test_check_config_prints_every_error_of_every_file_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shipped_copy(tmp_path)
    # Scopes are not checked while a machine file is broken (it may define the scoped machine).
    cases = [c for c in sorted(EXPECTED) if not c.startswith("agent/") and "scope" not in c]
    for case in cases:
        with_case(folder, case)
    code = main(["check-config", str(folder), "--state-dir", str(tmp_path / "state")])
    lines = capsys.readouterr().out.replace(f"{tmp_path}/", "").splitlines()
    assert code == 2
    expected = [line.replace("{d}/", "") for case in cases for line in EXPECTED[case]]
    assert sorted(lines[:-1]) == sorted(expected)
    assert lines[-1] == f"config/agent.yaml: {len(expected)} problem(s) found"


@pytest.mark.usefixtures("secrets_env")
def test_unset_secret_env_names_the_variable_not_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = shipped_copy(tmp_path)
    monkeypatch.delenv("MAINTAINX_WEBHOOK_SECRET")
    assert problems_of(folder) == [
        "config/workflows/maintenance-alert.yaml:10: actions[0].webhook.secret_env: environment variable "
        "MAINTAINX_WEBHOOK_SECRET is not set or empty"
    ]


@pytest.mark.usefixtures("secrets_env")
def test_a_broken_machine_file_is_one_error_not_also_every_scope_naming_its_group(tmp_path: Path) -> None:
    folder = shipped_copy(tmp_path)
    mill = folder / "machines" / "mill-01.yaml"
    mill.write_text(mill.read_text().replace("unit: 1,", "unit: 300,"))
    problems = problems_of(folder)
    assert len(problems) == 1, problems
    assert problems[0].startswith("config/machines/mill-01.yaml:8: modbus.unit:"), problems


@pytest.mark.usefixtures("secrets_env")
def test_uvloop_asked_for_but_not_installed_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = shipped_copy(tmp_path)
    agent_yaml = folder / "agent.yaml"
    agent_yaml.write_text(agent_yaml.read_text().replace("agent:\n", "agent:\n  event_loop: uvloop\n", 1))
    assert problems_of(folder) == []  # installed in the test environment: accepted
    monkeypatch.setitem(sys.modules, "uvloop", None)  # Python's own way to make an import fail
    assert problems_of(folder) == [
        "config/agent.yaml:6: agent.event_loop: uvloop is not installed in this Python: "
        "pip install 'edge-agent[uvloop]' (Linux and macOS), or use event_loop: asyncio"
    ]
