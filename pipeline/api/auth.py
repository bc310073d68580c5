"""The API key rule: loopback binds need none; any other address refuses to start without one (CLOUDTUNE_API_KEY). A key,
when set, guards the /v1 routes as a Bearer token, compared in constant time."""

from __future__ import annotations

import hmac
import ipaddress

API_KEY_ENV = "CLOUDTUNE_API_KEY"
MIN_KEY_CHARS = 16  # a short key is guessable; refuse it rather than serve behind it


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1); False for any other name or address (0.0.0.0 too)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Raise ValueError (one line) when serving on ``host`` with ``api_key`` is unsafe: beyond loopback without a key, or a short key."""
    if api_key is not None and len(api_key) < MIN_KEY_CHARS:
        raise ValueError(f"${API_KEY_ENV} has {len(api_key)} characters; use at least {MIN_KEY_CHARS} (e.g. `openssl rand -hex 24`)")
    if not api_key and not is_loopback(host):
        raise ValueError(f"--host {host} is beyond loopback: set an API key in ${API_KEY_ENV} (clients send it as `Authorization: Bearer <key>`)")


def authorized(header: str | None, api_key: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <api_key>`` (constant-time comparison of the token)."""
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())
