from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.config.source import Problems, Section, parse_yaml
from agent.delivery.settings import DeliveryConfig
from agent.workflows.spec import Workflow, parse_workflow

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def workflow_from_yaml(text: str, **kwargs: Any) -> Workflow:
    problems = Problems()
    data = parse_yaml(text, "wf.yaml", problems)
    wf = parse_workflow(Section(data, file="wf.yaml", path="", problems=problems), DeliveryConfig(), **kwargs)
    assert not problems, "\n".join(str(p) for p in problems.items)
    assert wf is not None
    return wf


def problems_of(text: str, **kwargs: Any) -> list[str]:
    problems = Problems()
    data = parse_yaml(text, "wf.yaml", problems)
    wf = parse_workflow(Section(data, file="wf.yaml", path="", problems=problems), DeliveryConfig(), **kwargs)
    assert wf is None
    return [str(p) for p in problems.items]


def action(url: str = "http://127.0.0.1:8090/x") -> str:
    return f"actions:\n  - webhook: {{url: '{url}', secret: {SECRET}}}\n"


def data(**sections: Mapping[str, Any]) -> dict[str, Any]:
    return dict(sections)
