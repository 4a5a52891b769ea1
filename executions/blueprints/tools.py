"""The tenant's tool policy, and HTTP calls made under it: by ``http`` nodes and by agents' http tools.

Policy first: before a request, its host must be one the tenant allows and its method one the
tenant permits; a host the tenant does not trust (or a node marked ``"approval": "always"``)
waits for an operator's approval. Every decision is a ``data-policy-decision`` event. A host
that is or resolves to a private address is called only if the policy names it exactly, and the
call connects to the address that was checked (``connect_address``), so a name under a wildcard
domain cannot be pointed at the platform's own network. Secrets reach a request only as headers
named in the config, never through templates, events or logs.

(The ``http`` node kind, and the check of an http config, are in ``kinds/http.py``.)
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from executions.blueprints import spans
from executions.blueprints.expressions import ExpressionError, render_template
from executions.kernel import ExecutionError
from executions.kernel.cancellation import Cancelled


@dataclass(frozen=True)
class ToolPolicy:
    allowed_domains: tuple[str, ...] = ()
    trusted_domains: tuple[str, ...] = ()
    allowed_methods: tuple[str, ...] = ("GET", "POST")
    timeout_s: float = 10.0
    max_response_bytes: int = 1024 * 1024

    @classmethod
    def from_limits(cls, limits: Any) -> ToolPolicy:
        return cls(
            allowed_domains=tuple(limits.tool_allowed_domains or ()),
            trusted_domains=tuple(limits.tool_trusted_domains or ()),
            allowed_methods=tuple(limits.tool_allowed_methods or ()),
            timeout_s=float(limits.tool_timeout_s),
            max_response_bytes=int(limits.tool_max_response_bytes),
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    needs_approval: bool
    reason: str


def host_matches(host: str, port: int | None, pattern: str) -> bool:
    """``api.example.com`` (any port), ``api.example.com:8443`` (that port) or ``*.example.com``."""
    name, _, pattern_port = pattern.lower().partition(":")
    if pattern_port and (port is None or str(port) != pattern_port):
        return False
    if name.startswith("*."):
        return host.endswith(name[1:]) and host != name[2:]
    return host == name


# --- where a call connects ------------------------------------------------------------------------


class PrivateAddress(Exception):
    """A host that is, or resolves to, a private, loopback, link-local or otherwise non-public
    address, which the policy does not name exactly."""


def connect_address(
    host: str, port: int | None, default_port: int, allowed: Iterable[str], *, resolve: bool = True
) -> str | None:
    """The address a call to ``host`` connects to, checked: raises :class:`PrivateAddress` for a
    non-public one unless the policy names the host exactly (``127.0.0.1:8080``,
    ``hooks.internal``; a ``*.`` pattern is not enough), and OSError if the name cannot be looked
    up. The call then connects to the address returned, not to whatever the name resolves to a
    moment later (DNS rebinding); None when it connects as the URL says (the host is an address
    already, or named exactly). ``resolve`` False (a URL registered, not called yet): a name is
    not looked up, only an address or ``localhost`` checked."""
    if any(not p.startswith("*.") and host_matches(host, port, p) for p in allowed):
        return None
    literal = True
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        literal = False
        if host == "localhost" or host.endswith(".localhost"):
            addresses = ["127.0.0.1"]
        elif not resolve:
            return None
        else:
            found = socket.getaddrinfo(host, port or default_port, type=socket.SOCK_STREAM)
            addresses = [str(info[4][0]) for info in found]
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            raise PrivateAddress(f"host {host} is a private or loopback address; the tool policy must name it exactly")
    return None if literal or not addresses else addresses[0]


def call_address(url: str, policy: ToolPolicy) -> str | None:
    """``connect_address`` for a call to ``url`` under ``policy`` (raises as it does)."""
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    return connect_address((parts.hostname or "").lower(), parts.port, default_port, policy.allowed_domains)


def pinned(url: str, headers: dict[str, str], address: str | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``url`` aimed at ``address`` (see ``connect_address``), with the URL's host kept as the
    request's Host and, over TLS, as the name sent and verified (SNI): the request URL, its
    headers and the httpx request extensions."""
    if address is None:
        return url, headers, {}
    parts = urlsplit(url)
    netloc = (f"[{address}]" if ":" in address else address) + (f":{parts.port}" if parts.port else "")
    extensions: dict[str, Any] = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {**headers, "Host": parts.netloc}, extensions


def decide(policy: ToolPolicy, method: str, url: str, *, always_ask: bool = False) -> Decision:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return Decision(False, False, f"not a valid URL: {url!r}")
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return Decision(False, False, f"only http and https URLs with a host may be called, not {url!r}")
    if method not in policy.allowed_methods:
        return Decision(False, False, f"method {method} is not allowed; allowed: {', '.join(policy.allowed_methods)}")
    if not any(host_matches(host, port, p) for p in policy.allowed_domains):
        return Decision(False, False, f"host {host} is not in the tenant's allowed domains")
    trusted = any(host_matches(host, port, p) for p in policy.trusted_domains)
    if always_ask or not trusted:
        why = "this tool always asks" if always_ask else f"host {host} is not trusted"
        return Decision(True, True, f"{why}: an operator must approve the call")
    return Decision(True, False, f"host {host} is trusted")


def secret_names(config: dict[str, Any]) -> set[str]:
    names = set((config.get("secret_headers") or {}).values())
    if config.get("auth_secret"):
        names.add(config["auth_secret"])
    return names


# --- running a call ------------------------------------------------------------------------------


@dataclass
class HttpCall:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    def describe(self) -> dict[str, Any]:
        """What events and approval prompts show: never the headers (they may carry secrets)."""
        return {"method": self.method, "url": self.url, "body": self.body}


def render_call(config: dict[str, Any], names: dict[str, Any], where: str) -> HttpCall:
    try:
        url = render_template(config["url"], names)
        headers = render_template(config.get("headers", {}), names)
        body = render_template(config["body"], names) if "body" in config else None
    except ExpressionError as exc:
        raise ExecutionError.validation(f"{where}: {exc.message}", code="template_failed") from None
    return HttpCall(config.get("method", "GET"), str(url), {str(k): str(v) for k, v in headers.items()}, body)


def with_secrets(call: HttpCall, config: dict[str, Any], secrets: Any, where: str) -> HttpCall:
    headers = dict(call.headers)
    wanted = dict(config.get("secret_headers") or {})
    if config.get("auth_secret"):
        wanted["Authorization"] = config["auth_secret"]
    for header, name in wanted.items():
        if name not in secrets:
            raise ExecutionError.validation(f"{where}: the tenant has no secret named {name!r}", code="missing_secret")
        value = secrets[name]
        headers[header] = f"Bearer {value}" if header == "Authorization" and header not in call.headers else value
    return HttpCall(call.method, call.url, headers, call.body)


def perform(call: HttpCall, policy: ToolPolicy, ctx: Any, tool_name: str) -> dict[str, Any]:
    """Make the request; a cancel of the step closes it at once. Never follows redirects (a
    redirect could leave the allowed hosts)."""
    try:
        address = call_address(call.url, policy)
    except PrivateAddress as refused:
        raise ExecutionError.policy_violation(f"{tool_name}: {refused}", code="tool_denied") from None
    except OSError as exc:
        raise ExecutionError.network(f"{tool_name}: {urlsplit(call.url).hostname} cannot be resolved: {exc}") from None
    url, headers, extensions = pinned(call.url, call.headers, address)
    body = call.body
    kwargs: dict[str, Any] = {"headers": headers, "extensions": extensions}
    if body is not None:
        kwargs["content" if isinstance(body, str) else "json"] = body
    token = ctx.cancellation
    # trust_env off: no proxy or .netrc of the worker's environment applies to tenants' calls.
    with (
        httpx.Client(timeout=policy.timeout_s, follow_redirects=False, trust_env=False) as client,
        spans.http_call(getattr(ctx, "step_id", None), method=call.method, url=call.url) as span,
    ):
        unsubscribe = token.on_cancel(lambda reason: client.close())
        try:
            if token.is_cancelled:
                raise Cancelled(token.reason or "cancelled")
            with client.stream(call.method, url, **kwargs) as response:
                span.response(response.status_code)  # a CLIENT span under the step's, when traces are on
                content = _read_bounded(response, policy.max_response_bytes, tool_name)
                return _result(response, content)
        except httpx.TimeoutException:
            raise ExecutionError.timeout(f"{tool_name}: no answer within {policy.timeout_s} s") from None
        except (httpx.TransportError, RuntimeError) as exc:
            if token.is_cancelled:
                raise Cancelled(token.reason or "cancelled") from None
            raise ExecutionError.network(f"{tool_name}: {type(exc).__name__}: {exc}") from None
        finally:
            unsubscribe()


def _read_bounded(response: httpx.Response, limit: int, tool_name: str) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise ExecutionError.tool(f"{tool_name}: the response is larger than {limit} bytes", code="too_large")
        chunks.append(chunk)
    content = b"".join(chunks)
    if response.status_code >= 500 or response.status_code == 429:
        raise ExecutionError.tool(
            f"{tool_name}: HTTP {response.status_code}", retryable=True, http_status=response.status_code
        )
    if response.status_code >= 400:
        raise ExecutionError.tool(
            f"{tool_name}: HTTP {response.status_code}: {content[:200].decode(errors='replace')}",
            http_status=response.status_code,
        )
    return content


def _result(response: httpx.Response, content: bytes) -> dict[str, Any]:
    content_type = response.headers.get("content-type", "")
    body: Any = content.decode(errors="replace")
    if "json" in content_type:
        with contextlib.suppress(ValueError):  # a server that says JSON and sends text: keep the text
            body = json.loads(content, parse_constant=_refuse_constant)
    return {"status": response.status_code, "content_type": content_type, "body": body}


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's parser accepts them): such a body stays text."""
    raise ValueError(f"{name} is not JSON")
