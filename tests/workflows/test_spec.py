"""Workflow files: every trigger type, defaults, and problems named by file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.source import Problems
from agent.delivery.settings import DeliveryConfig
from agent.workflows.spec import (
    AlarmTrigger,
    CategorizedTrigger,
    DowntimeTrigger,
    ExceededTrigger,
    ManualTrigger,
    ScheduledTrigger,
    StatusTrigger,
    load_workflows,
)

from .conftest import SECRET, action, problems_of, workflow_from_yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "workflows"


def test_full_example_parses_with_defaults() -> None:
    wf = workflow_from_yaml(
        "name: Maintenance alert\n"
        "trigger: {type: downtime_categorized, categories: [Maintenance Required]}\n"
        "actions:\n"
        f"  - webhook: {{url: 'http://127.0.0.1:8090/maintainx', secret: {SECRET}, delay: 0s,"
        " headers: {X-Source: edge}, timeout: 10s}\n"
    )
    assert wf.name == "Maintenance alert"
    assert wf.enabled is True
    assert wf.scope.everything
    assert wf.min_interval == 0.0
    assert wf.trigger == CategorizedTrigger(("Maintenance Required",))
    (act,) = wf.actions
    assert act.endpoint.key == "Maintenance alert#0"
    assert act.endpoint.url == "http://127.0.0.1:8090/maintainx"
    assert act.endpoint.timeout == 10.0
    assert dict(act.endpoint.headers) == {"X-Source": "edge"}
    assert act.delay == 0.0
    assert SECRET not in repr(wf)


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        (
            "{type: machine_status_changed, from: [ACTIVE], to: [IDLE, ALARM]}",
            StatusTrigger(("ACTIVE",), ("IDLE", "ALARM")),
        ),
        (
            "{type: alarm_triggered, codes: [1001], code_patterns: ['20*'], min_severity: 500}",
            AlarmTrigger(("1001",), ("20*",), 500),
        ),
        ("{type: downtime_exceeded, after: 30m}", ExceededTrigger(1800.0)),
        ("{type: downtime_exceeded, minutes: 30}", ExceededTrigger(1800.0)),
        (
            "{type: manual, description: Request Quality Inspection}",
            ManualTrigger("Request Quality Inspection"),
        ),
        (
            "{type: scheduled, cron: '0 23 * * *', timezone: Europe/Berlin}",
            ScheduledTrigger("0 23 * * *", "Europe/Berlin"),
        ),
        ("{type: scheduled, cron: '0 23 * * *'}", ScheduledTrigger("0 23 * * *", "UTC")),
        ("{type: downtime_started}", DowntimeTrigger("downtime_started")),
        ("{type: downtime_ended, min_duration: 5m}", DowntimeTrigger("downtime_ended", 300.0)),
        ("{type: alarm_cleared, codes: [1001]}", AlarmTrigger(("1001",), type="alarm_cleared")),
    ],
)
def test_trigger_types(trigger: str, expected: object) -> None:
    wf = workflow_from_yaml(f"name: w\ntrigger: {trigger}\n" + action())
    assert wf.trigger == expected


def test_scope_delay_min_interval_and_disabled() -> None:
    wf = workflow_from_yaml(
        "name: w\nenabled: false\nscope: {machines: [mill-01], groups: [Turning]}\nmin_interval: 5m\n"
        "trigger: {type: alarm_triggered}\n"
        f"actions:\n  - webhook: {{url: 'http://127.0.0.1:8090/a', secret: {SECRET}, delay: 90s}}\n"
        f"  - webhook: {{url: 'http://127.0.0.1:8090/b', secret: {SECRET}}}\n"
    )
    assert not wf.enabled
    assert wf.scope.machines == ("mill-01",) and wf.scope.groups == ("Turning",)
    assert wf.min_interval == 300.0
    assert [a.endpoint.key for a in wf.actions] == ["w#0", "w#1"]
    assert [a.delay for a in wf.actions] == [90.0, 0.0]


def test_unknown_keys_and_bad_values_are_reported_with_line_and_path() -> None:
    problems = problems_of(
        "name: w\n"
        "colour: blue\n"
        "trigger: {type: alarm_triggered, min_severity: 5000, code: 1}\n"
        "actions:\n"
        f"  - webhook: {{url: 'ftp://127.0.0.1/x', secret: {SECRET}}}\n"
    )
    text = "\n".join(problems)
    assert "wf.yaml:2: colour: unknown key" in text
    assert "wf.yaml:3: trigger.min_severity: must be at most 1000" in text
    assert "trigger.code: unknown key" in text
    assert "wf.yaml:5: actions[0].webhook.url: expected an http:// or https:// URL" in text


def test_missing_pieces_are_named() -> None:
    text = "\n".join(problems_of("description: nothing else\n"))
    assert "name: required key is missing" in text
    assert "trigger: required key is missing" in text
    assert "actions: required key is missing" in text


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ("{type: sometimes}", "trigger.type: unknown value 'sometimes'"),
        ("{type: scheduled, cron: 'every day'}", "trigger.cron: not a valid 5-field cron expression"),
        ("{type: scheduled, cron: '0 0 30 2 *'}", "trigger.cron: cron expression '0 0 30 2 *' never fires"),
        ("{type: scheduled, cron: '0 23 * * *', timezone: Mars/Base}", "trigger.timezone: unknown time zone"),
        ("{type: downtime_exceeded}", "needs after"),
        ("{type: downtime_exceeded, after: 30m, minutes: 30}", "trigger.minutes: give either after"),
        ("{type: alarm_triggered, code_patterns: ['2040']}", "has no wildcard"),
        # One rule with machine files' status rules: no silent upper-casing.
        (
            "{type: machine_status_changed, from: [active]}",
            "trigger.from[0]: state 'active' must be an upper-case word like ACTIVE",
        ),
    ],
)
def test_trigger_problems(trigger: str, message: str) -> None:
    assert any(message in p for p in problems_of(f"name: w\ntrigger: {trigger}\n" + action()))


def test_action_without_webhook_and_secret_from_missing_env() -> None:
    text = "\n".join(
        problems_of(
            "name: w\ntrigger: {type: manual}\nactions:\n  - email: {to: qa}\n"
            "  - webhook: {url: 'http://127.0.0.1:8090/x', secret_env: EDGE_AGENT_TEST_UNSET_VARIABLE}\n"
        )
    )
    assert "actions[0]: an action needs a webhook" in text
    assert "actions[0].email: unknown key" in text
    assert (
        "actions[1].webhook.secret_env: environment variable EDGE_AGENT_TEST_UNSET_VARIABLE is not set"
        in text
    )


def test_scope_and_categories_checked_against_configuration() -> None:
    text = "\n".join(
        problems_of(
            "name: w\nscope: {machines: [mill-99], groups: [Grinding]}\n"
            "trigger: {type: downtime_categorized, categories: [maintenance required, Coffee]}\n" + action(),
            machine_ids={"mill-01"},
            groups={"Milling"},
            categories=["Maintenance Required", "Setup"],
        )
    )
    assert "scope.machines[0]: unknown machine 'mill-99'" in text
    assert "scope.groups[0]: no machine is in group 'Grinding'" in text
    assert "trigger.categories[1]: unknown category 'Coffee'" in text
    assert "categories[0]" not in text  # case and blanks are ignored, as derivation does


def test_load_workflows_from_folder_and_inline_rejects_duplicate_names(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: Same\ntrigger: {type: manual}\n" + action())
    (tmp_path / "b.yaml").write_text("name: Same\ntrigger: {type: manual}\n" + action())
    (tmp_path / "empty.yaml").write_text("")
    problems = Problems()
    flows = load_workflows(tmp_path, delivery=DeliveryConfig(), problems=problems, display_root=tmp_path)
    assert [w.name for w in flows] == ["Same"]
    text = "\n".join(str(p) for p in problems.items)
    assert "b.yaml:1: name: duplicate workflow name 'Same': also defined in a.yaml:1" in text
    assert "empty.yaml: file is empty" in text


def test_shipped_examples_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "MAINTAINX_WEBHOOK_SECRET",
        "SUPERVISOR_WEBHOOK_SECRET",
        "PRODUCTION_SYNC_SECRET",
        "QUALITY_WEBHOOK_SECRET",
        "ALARM_WEBHOOK_SECRET",
        "STATUS_WEBHOOK_SECRET",
    ):
        monkeypatch.setenv(var, SECRET)
    problems = Problems()
    flows = load_workflows(CONFIG_DIR, delivery=DeliveryConfig(), problems=problems)
    assert not problems, "\n".join(str(p) for p in problems.items)
    kinds = {w.trigger.type for w in flows}
    assert kinds == {
        "downtime_categorized",
        "downtime_exceeded",
        "scheduled",
        "manual",
        "alarm_triggered",
        "machine_status_changed",
    }
    for wf in flows:
        for act in wf.actions:
            assert act.endpoint.url.startswith("http://127.0.0.1:8090/")
