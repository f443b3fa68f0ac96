"""The CLI's error boundary: every mistake is one line that says what, where and what to do; no traceback.

Real parts: the real ``edge-agent`` process, real listening sockets holding the ports, real files.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import describe_error, main
from agent.commands.errors import CommandFailed, UsageError

TOKEN = "tok_cli_0123456789abcdef0123"


def edge_agent(*argv: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def minimal_config(where: Path, api_port: int) -> Path:
    """agent.yaml with no machines and no workflows: enough for ``run`` to bind its API."""
    (where / "machines").mkdir()
    (where / "secrets").mkdir()
    (where / "secrets" / "api-token").write_text(TOKEN + "\n")
    path = where / "agent.yaml"
    path.write_text(
        "agent: {name: cli-test, state_dir: state}\n"
        f"api: {{bind: '127.0.0.1:{api_port}', token_file: secrets/api-token}}\n"
    )
    return path


def assert_one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["outbox", "list", "--limit", "0"],
        ["history", "--limit", "0"],
        ["history", "--limit", "-5"],
        ["receive", "--port", "99999"],
        ["simulate", "--modbus-port", "70000"],
    ],
)
def test_a_number_out_of_range_is_a_usage_error_naming_the_option(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    option = next(a for a in argv if a.startswith("--"))
    assert f"argument {option}:" in err


def test_api_port_in_use_names_the_key_and_a_possible_second_agent(tmp_path: Path, busy_port: int) -> None:
    config = minimal_config(tmp_path, busy_port)
    result = edge_agent("run", "--config", str(config), "--log-format", "console")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert f"127.0.0.1:{busy_port}" in line and "api.bind" in line and str(config) in line
    assert "another edge-agent may be running" in line


def test_simulator_port_in_use_names_the_option(busy_port: int) -> None:
    result = edge_agent("simulate", "--modbus-port", str(busy_port), "--opcua-port", "0", "--duration", "1")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    complaint = [line for line in result.stderr.splitlines() if line.startswith("simulate:")]
    assert complaint == [
        f"simulate: 127.0.0.1:{busy_port} (--modbus-port) is not free (Address already in use): another "
        "simulator may be running; stop it or pick another port (--modbus-port 0 takes any free one)"
    ]


def test_run_with_a_file_as_state_dir_names_the_option(tmp_path: Path) -> None:
    config = minimal_config(tmp_path, 8787)
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    result = edge_agent("run", "--config", str(config), "--state-dir", str(a_file))
    assert result.returncode == 2
    assert assert_one_line(result.stderr) == (
        f"edge-agent run: --state-dir: state directory {a_file} is a file, not a directory"
    )


def test_state_dir_under_a_file_in_agent_yaml_is_a_config_error_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = minimal_config(tmp_path, 8787)
    config.write_text(config.read_text().replace("state_dir: state", "state_dir: agent.yaml/state"))
    assert main(["check-config", str(config)]) == 2
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        f"{config}:1: agent.state_dir: state directory {tmp_path}/agent.yaml/state cannot be created: "
        f"{config} is a file, not a directory"
    )


def test_check_config_accepts_the_directory_or_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = minimal_config(tmp_path, 8787)
    assert main(["check-config", str(tmp_path)]) == 0
    by_dir = capsys.readouterr().out
    assert main(["check-config", str(config)]) == 0
    assert capsys.readouterr().out == by_dir
    assert by_dir.startswith(f"{config}: ok\n")


def test_commands_that_only_call_the_api_refuse_a_state_dir(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("status", "workflows", "reload"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--state-dir", "/nonexistent"])
        assert exit_info.value.code == 2
        assert "unrecognized arguments: --state-dir" in capsys.readouterr().err


def test_known_errors_are_their_message_and_unknown_ones_point_at_debug() -> None:
    assert describe_error(UsageError("no workflow named 'x'")) == (2, "no workflow named 'x'")
    assert describe_error(CommandFailed("agent not reachable")) == (1, "agent not reachable")
    assert describe_error(FileNotFoundError(2, "No such file or directory", "/etc/x")) == (
        1,
        "/etc/x: No such file or directory",
    )
    code, line = describe_error(ZeroDivisionError("division by zero"))
    assert code == 1
    assert line == "unexpected error ZeroDivisionError: division by zero (run with --debug for the traceback)"


def test_debug_is_accepted_before_or_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--debug", "secret", "generate"]).debug is True
    assert parser.parse_args(["secret", "generate", "--debug"]).debug is True
    assert parser.parse_args(["secret", "generate"]).debug is False


def test_paths_in_errors_are_printed_as_given(tmp_path: Path) -> None:
    folder = tmp_path / "plant" / "edge"
    folder.mkdir(parents=True)
    minimal_config(folder, 8787)
    (folder / "machines" / "mill-01.yaml").write_text("id: mill-01\ncolour: red\n")
    relative = edge_agent("check-config", "edge", cwd=tmp_path / "plant")
    assert relative.stdout.splitlines()[0].startswith("edge/machines/mill-01.yaml:")
    absolute = edge_agent("check-config", str(folder), cwd=tmp_path)
    assert absolute.stdout.splitlines()[0].startswith(f"{folder}/machines/mill-01.yaml:")
    assert absolute.stdout.splitlines()[-1].startswith(f"{folder}/agent.yaml: ")
