"""The outbox/history/endpoint/secret/receive commands against a real outbox file."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from agent.commands import endpoint_cmd, history_cmd, outbox_cmd, secret_cmd
from agent.delivery.outbox import AttemptRecord, Outbox
from agent.delivery.retry import Decision
from agent.delivery.settings import OUTBOX_FILE, OutboxConfig
from agent.delivery.signing import decode_secret

from .conftest import delivery


def fill(state_dir: Path) -> None:
    """3 deliveries to wf#0 (delivered, dead, pending) and one to other#0."""

    async def go() -> None:
        box = await Outbox.open(state_dir / OUTBOX_FILE, OutboxConfig())
        await box.enqueue([delivery(i) for i in range(3)] + [delivery(3, endpoint_key="other#0")])
        await box.claim([1, 2])
        now = box.clock()
        await box.record(
            [
                AttemptRecord(1, now, 200, 0.004, None, None, b"thanks", Decision("delivered", now, 1, 0)),
                AttemptRecord(
                    2, now, 500, 0.010, "http_500", "HTTP 500", b"boom", Decision("dead", now, 8, 0)
                ),
            ]
        )
        await box.disable_endpoint("http://127.0.0.1:9/", "410 Gone at attempt 1")
        await box.close()

    asyncio.run(go())


def run(fn: object, *args: object, **kw: object) -> tuple[int, str]:
    out = io.StringIO()
    code = fn(*args, out=out, **kw)  # type: ignore[operator]
    return code, out.getvalue()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    fill(tmp_path)
    return tmp_path


def test_list_shows_counts_and_rows(state: Path) -> None:
    code, text = run(outbox_cmd.outbox_list, state)
    assert code == 0
    assert "pending 2  in flight 0  delivered 1  dead 1" in text
    assert "HTTP 500" in text and "wf#0" in text and "other#0" in text
    code, text = run(outbox_cmd.outbox_list, state, state="dead")
    assert text.count("\n") == 3 and text.splitlines()[2].split()[:3] == ["2", "dead", "8"]
    code, text = run(outbox_cmd.outbox_list, state, workflow="nobody")
    assert "no deliveries match" in text


def test_list_rejects_bad_since(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(outbox_cmd.outbox_list, state, since="yesterday")
    assert code == 2 and "duration" in capsys.readouterr().err


def test_show_prints_body_and_attempts(state: Path) -> None:
    code, text = run(outbox_cmd.outbox_show, state, 2)
    assert code == 0
    assert "webhook-id: msg_000001" in text and '"seq": 1' in text
    assert "500" in text and "http_500: HTTP 500" in text and "'boom'" in text


def test_retry_one_and_dead_and_cancel(state: Path) -> None:
    assert run(outbox_cmd.outbox_retry, state, 2)[0] == 0
    assert "0 dead deliveries" in run(outbox_cmd.outbox_retry, state, dead=True)[1]
    assert run(outbox_cmd.outbox_retry, state)[0] == 2  # neither id nor --dead
    assert run(outbox_cmd.outbox_cancel, state, 3)[0] == 0
    assert run(outbox_cmd.outbox_cancel, state, 1)[0] == 1  # delivered: nothing to cancel
    code, text = run(outbox_cmd.outbox_list, state)
    assert code == 0 and "pending 2" in text and "cancelled 1" in text


def test_purge_defaults_to_finished_rows(state: Path) -> None:
    code, text = run(outbox_cmd.outbox_purge, state, yes=True)
    assert code == 0 and "2 deliveries purged" in text  # delivered + dead
    code, text = run(outbox_cmd.outbox_purge, state, states=["pending"], endpoint="other#0", yes=True)
    assert "1 deliveries purged" in text
    assert "pending 1" in run(outbox_cmd.outbox_list, state)[1]


def test_purge_counts_first_and_deletes_nothing_unconfirmed(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run(outbox_cmd.outbox_purge, state, dry_run=True)
    assert (code, text) == (0, "would delete 2 deliveries (delivered, dead, cancelled)\n")
    # Not on a terminal (pytest's stdin) and no --yes: refused, with how to go on.
    assert run(outbox_cmd.outbox_purge, state)[0] == 2
    assert "add --yes to do it" in capsys.readouterr().err
    questions: list[str] = []
    code, text = run(outbox_cmd.outbox_purge, state, confirm=lambda q: questions.append(q) or False)
    assert code == 1 and text == "nothing deleted\n"
    assert questions == ["delete 2 deliveries (delivered, dead, cancelled)? [y/N] "]
    assert "delivered 1  dead 1" in run(outbox_cmd.outbox_list, state)[1]
    code, text = run(outbox_cmd.outbox_purge, state, confirm=lambda q: True)
    assert code == 0 and "2 deliveries purged" in text


def test_purge_names_the_endpoint_by_url_or_key(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    by_key = run(outbox_cmd.outbox_purge, state, states=["pending"], endpoint="other#0", dry_run=True)
    assert by_key[1] == "would delete 1 deliveries (pending, endpoint other#0)\n"
    by_url = run(
        outbox_cmd.outbox_purge, state, states=["pending"], endpoint="http://127.0.0.1:9/", dry_run=True
    )
    assert by_url[1] == "would delete 2 deliveries (pending, endpoint http://127.0.0.1:9/)\n"
    assert run(outbox_cmd.outbox_purge, state, endpoint="http://nope/", yes=True)[0] == 2
    assert "no endpoint 'http://nope/' in the outbox (known: http://127.0.0.1:9/)" in capsys.readouterr().err


def test_retry_refuses_a_delivered_row_unless_forced(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(outbox_cmd.outbox_retry, state, 1)[0] == 2  # 1 is delivered
    err = capsys.readouterr().err
    assert "already delivered" in err and "add --force" in err
    assert "delivered 1" in run(outbox_cmd.outbox_list, state)[1]
    assert run(outbox_cmd.outbox_retry, state, 1, force=True)[0] == 0
    assert "delivered 0" in run(outbox_cmd.outbox_list, state)[1]
    assert run(outbox_cmd.outbox_retry, state, 99)[0] == 1
    assert "no delivery 99" in capsys.readouterr().err


def test_history_groups_by_event_and_workflow(state: Path) -> None:
    code, text = run(history_cmd.history, state, workflow="wf")
    assert code == 0
    lines = text.strip().splitlines()
    assert len(lines) == 4 and "1 dead (HTTP 500)" in text and "1 delivered" in text


def test_endpoint_list_and_enable(state: Path) -> None:
    code, text = run(endpoint_cmd.endpoint_list, state)
    assert code == 0
    assert "http://127.0.0.1:9/  DISABLED (410 Gone at attempt 1)" in text
    assert run(endpoint_cmd.endpoint_enable, state, "http://127.0.0.1:9/")[0] == 0
    assert "enabled" in run(endpoint_cmd.endpoint_list, state)[1]
    assert run(endpoint_cmd.endpoint_enable, state, "http://127.0.0.1:9/")[0] == 1


def test_endpoint_enable_takes_the_key_too_and_names_unknown_ones(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run(endpoint_cmd.endpoint_enable, state, "wf#0")
    assert code == 0 and text.startswith("http://127.0.0.1:9/ enabled")
    assert run(endpoint_cmd.endpoint_enable, state, "http://nope/")[0] == 2
    assert "no endpoint 'http://nope/' in the outbox (known: http://127.0.0.1:9/)" in capsys.readouterr().err


def test_secret_out_never_creates_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "typo" / "api-token"
    assert secret_cmd.secret_write(target) == 2
    assert not target.parent.exists()
    assert f"{target.parent} is not a directory" in capsys.readouterr().err
    assert secret_cmd.secret_write(tmp_path / "api-token") == 0
    assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600


def test_missing_outbox_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(outbox_cmd.outbox_list, tmp_path / "nowhere")[0] == 1
    assert "no outbox at" in capsys.readouterr().err


def test_secret_generate() -> None:
    code, text = run(secret_cmd.secret_generate)
    assert code == 0 and len(decode_secret(text.strip())) == 32
    assert run(secret_cmd.secret_generate, 8)[0] == 2


def test_commands_through_the_cli_with_agent_yaml(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    cfg = state / "agent.yaml"
    cfg.write_text(f"agent: {{name: t, state_dir: {json.dumps(str(state))}}}\n")
    assert main(["outbox", "list", "-c", str(cfg)]) == 0
    assert "pending 2" in capsys.readouterr().out
    assert main(["history", "-c", str(cfg), "--since", "1h"]) == 0
    assert "wf" in capsys.readouterr().out
    assert main(["secret", "generate"]) == 0
    assert capsys.readouterr().out.startswith("whsec_")
    assert main(["receive", "--secret", "whsec_bad!", "--port", "0"]) == 2
    assert "receive: secret is not whsec_" in capsys.readouterr().err


def test_columns_line_up_with_long_names(tmp_path: Path) -> None:
    async def go() -> None:
        box = await Outbox.open(tmp_path / OUTBOX_FILE, OutboxConfig())
        await box.enqueue(
            [
                delivery(0, endpoint_key="short#0", url="http://127.0.0.1:9/a"),
                delivery(
                    1,
                    endpoint_key="a-much-longer-workflow-name-than-the-header#0",
                    url="http://127.0.0.1:9/" + "b" * 60,
                ),
            ]
        )
        await box.close()

    asyncio.run(go())
    # The column after the long one starts at the same place in the header and in every row.
    for fn, column, value in (
        (outbox_cmd.outbox_list, "WORKFLOW#ACTION", "#0"),
        (endpoint_cmd.endpoint_list, "STATE", "enabled"),
        (history_cmd.history, "EVENT", "downtime_started"),
    ):
        lines = [line for line in run(fn, tmp_path)[1].splitlines() if not line.startswith("pending ")]
        at = lines[0].index(column)
        for row in lines[1:]:
            if value == "#0":
                assert row[at:].split()[0].endswith("#0"), lines
            else:
                assert row[at:].startswith(value), lines
