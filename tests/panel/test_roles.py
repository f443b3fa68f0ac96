"""Role tokens in agent.yaml and what each role may do: the table the JSON API and the panel share."""

from __future__ import annotations

import pytest

from agent.api.roles import ADMIN, OPERATOR, VIEWER, bearer_token, permits, required_role, token_for
from agent.api.settings import ApiConfig, parse_api
from agent.config.source import Problems, Section, parse_yaml

VIEW = "view-token-0123456789"
OPER = "oper-token-0123456789"
ADMN = "admin-token-0123456789"
TOKENS = f"""\
tokens:
  - {{name: wall, role: viewer, token: {VIEW}}}
  - {{name: tablet, role: operator, token: {OPER}}}
"""


def parse(text: str) -> tuple[ApiConfig, list[str]]:
    problems = Problems()
    data = parse_yaml(text, "agent.yaml", problems)
    section = Section(data, file="agent.yaml", path="api", problems=problems)
    return parse_api(section), [str(p) for p in problems.items]


def test_tokens_per_role_and_the_legacy_token_as_admin() -> None:
    config, problems = parse(f"token: {ADMN}\n" + TOKENS)
    assert problems == []
    assert [(t.name, t.role) for t in config.role_tokens] == [
        ("token", ADMIN),
        ("wall", VIEWER),
        ("tablet", OPERATOR),
    ]
    assert config.panel and config.session_ttl == 12 * 3600
    for secret in (VIEW, OPER, ADMN):
        assert secret not in repr(config)


def test_role_tokens_alone_enable_the_api() -> None:
    config, problems = parse(TOKENS)
    assert problems == [] and config.enabled and config.token is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tokens: [{name: a, role: boss, token: " + VIEW + "}]", "api.tokens[0].role"),
        ("tokens: [{name: a, role: viewer, token: short}]", "at least 16 characters"),
        ("tokens: [{name: a, role: viewer}]", "api.tokens[0].token: required"),
        ("tokens: [{role: viewer, token: " + VIEW + "}]", "api.tokens[0].name"),
        (TOKENS + f"  - {{name: wall, role: admin, token: {ADMN}}}\n", "api.tokens[2].name"),
        (TOKENS + f"  - {{name: again, role: admin, token: {VIEW}}}\n", "same value as another token"),
        (f"token: {VIEW}\n" + TOKENS, "same value as another token"),
        ("tokens: [{name: a, role: viewer, token: " + VIEW + ", colour: red}]", "api.tokens[0].colour"),
        ("panel: {session_ttl: 5s}\n" + TOKENS, "api.panel.session_ttl"),
        ("panel: {kiosk: true}\n" + TOKENS, "api.panel.kiosk"),
        ("bind: 127.0.0.1:8787\n", "give token, token_file, token_env or tokens"),
    ],
)
def test_bad_token_entries_are_named(text: str, expected: str) -> None:
    _, problems = parse(text)
    assert any(expected in p for p in problems), problems
    for secret in (VIEW, OPER, ADMN):
        assert all(secret not in p for p in problems), "a token never appears in an error"


def test_a_token_maps_to_its_role_and_nothing_else_does() -> None:
    config, _ = parse(f"token: {ADMN}\n" + TOKENS)
    assert (t := token_for(OPER, config)) is not None and t.role == OPERATOR
    assert (t := bearer_token(f"Bearer {VIEW}", config)) is not None and t.name == "wall"
    assert (t := bearer_token(f"bearer  {ADMN} ", config)) is not None and t.role == ADMIN
    assert token_for(OPER[:-1], config) is None
    assert token_for("", config) is None
    assert bearer_token(f"Basic {VIEW}", config) is None
    assert bearer_token("Bearer ", config) is None


def test_roles_are_ordered() -> None:
    assert permits(ADMIN, OPERATOR) and permits(OPERATOR, VIEWER) and permits(VIEWER, VIEWER)
    assert not permits(VIEWER, OPERATOR) and not permits(OPERATOR, ADMIN)
    assert not permits("superuser", VIEWER)


@pytest.mark.parametrize(
    ("method", "route", "role"),
    [
        ("GET", "/api/v1/machines", VIEWER),
        ("GET", "/metrics", VIEWER),
        ("HEAD", "/api/v1/machines/{id}", VIEWER),
        ("POST", "/api/v1/downtimes/{id}/category", OPERATOR),
        ("POST", "/api/v1/workflows/{name}/trigger", OPERATOR),
        ("GET", "/api/v1/executions", OPERATOR),
        ("GET", "/api/v1/workflows", OPERATOR),
        ("POST", "/api/v1/reload", ADMIN),
        ("POST", "/api/v1/something-new", ADMIN),
        ("GET", "/panel/", VIEWER),
        ("GET", "/panel/events", VIEWER),
        ("GET", "/panel/machines/{id}", OPERATOR),
        ("GET", "/panel/some-new-page", OPERATOR),
        ("POST", "/panel/downtimes/{id}/category", OPERATOR),
        ("POST", "/panel/deliveries/{id}/retry", ADMIN),
        ("POST", "/panel/endpoints/enable", ADMIN),
    ],
)
def test_what_each_route_needs(method: str, route: str, role: str) -> None:
    assert required_role(method, route) == role
