"""Who may do what: the one place that maps a token to a role and a request to the role it needs.

Roles are ordered (``viewer`` < ``operator`` < ``admin``): a shared tablet by the machine gets an
operator token (categorize downtimes, press manual workflows), a wall display a viewer token, and only
plant IT an admin token (delivery actions, reload). Pure code over plain data.
"""

from __future__ import annotations

import hmac

from agent.api.settings import ROLES, ApiConfig, RoleToken

VIEWER, OPERATOR, ADMIN = ROLES

# JSON API routes (method, path as registered) that need more than ``viewer``. Everything not listed
# reads state and needs ``viewer``; an unknown route is answered 404 by the router after the token check.
_NEEDS: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/downtimes/{id}/category"): OPERATOR,
    ("POST", "/api/v1/workflows/{name}/trigger"): OPERATOR,
    # Workflows and executions show webhook URLs (a chat webhook's URL is its own secret): not for
    # the wall display's token.
    ("GET", "/api/v1/workflows"): OPERATOR,
    ("GET", "/api/v1/executions"): OPERATOR,
    ("POST", "/api/v1/reload"): ADMIN,
    # The operator panel (agent/panel): a viewer sees the board, and nothing else.
    ("GET", "/panel/"): VIEWER,
    ("GET", "/panel/events"): VIEWER,
    ("POST", "/panel/logout"): VIEWER,
    ("GET", "/panel/machines/{id}"): OPERATOR,
    ("GET", "/panel/machines/{id}/timeline"): OPERATOR,
    ("GET", "/panel/downtimes"): OPERATOR,
    ("POST", "/panel/downtimes/{id}/category"): OPERATOR,
    ("GET", "/panel/workflows"): OPERATOR,
    ("POST", "/panel/workflows/{name}/trigger"): OPERATOR,
    ("GET", "/panel/deliveries"): OPERATOR,
    ("POST", "/panel/deliveries/{id}/retry"): ADMIN,
    ("POST", "/panel/endpoints/enable"): ADMIN,
}


def rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


def permits(have: str, need: str) -> bool:
    """True when a session or token of role ``have`` may do what needs ``need``."""
    return rank(have) >= rank(need) >= 0


def required_role(method: str, route: str) -> str:
    """The role a JSON API request needs; ``route`` is the route's pattern (``/api/v1/machines/{id}``).

    A state-changing request not listed needs ``admin``: new routes are closed until someone decides;
    a panel page not listed needs ``operator`` (viewers see the board only).
    """
    method = "GET" if method.upper() == "HEAD" else method.upper()
    need = _NEEDS.get((method, route))
    if need is not None:
        return need
    if method not in ("GET", "OPTIONS"):
        return ADMIN
    return OPERATOR if route.startswith("/panel/") else VIEWER


def token_for(given: str, config: ApiConfig) -> RoleToken | None:
    """The configured token equal to ``given`` (every one compared in constant time), else ``None``."""
    found: RoleToken | None = None
    # aiohttp decodes header bytes as latin-1 with surrogateescape: a non-ASCII or undecodable token
    # cannot be ours (tokens are printable ASCII, checked at config time) and must not raise on the
    # way to a 401.
    try:
        raw = given.strip().encode("utf-8")
    except UnicodeEncodeError:
        return None
    for tok in config.role_tokens:
        # No early return: the time taken does not tell which (or whether an earlier) token matched.
        if hmac.compare_digest(raw, tok.secret.reveal().encode("utf-8")) and found is None:
            found = tok
    return found if raw else None


def bearer_token(header: str, config: ApiConfig) -> RoleToken | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    return token_for(given, config)
