"""The ``http`` node kind: one HTTP request under the tenant's tool policy; and the check of an
http call's config, which an agent's http tools share (see ``llm.py``).

The policy, and making the request, are in ``executions/blueprints/tools.py``.
"""

from __future__ import annotations

import re
from typing import Any

from executions.blueprints.expressions import check_template
from executions.blueprints.kinds.base import (
    BuildContext,
    Checker,
    Kind,
    NodeSpec,
    Resources,
    ValidationContext,
    expression_names,
)
from executions.blueprints.tools import HttpCall, ToolPolicy, decide, perform, render_call, with_secrets
from executions.kernel import ExecutionError, StepType, WaitReason
from executions.kernel.graph import NodeFn

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HTTP_CONFIG_KEYS = {"url", "method", "headers", "body", "auth_secret", "secret_headers", "approval"}


# --- the config of an http call (an http node, or an agent's http tool) ----------------------------------------------------------------------------------


def check_http_config(config: dict[str, Any], checker: Checker, names: tuple[str, ...] = ("state", "input")) -> None:
    for key in sorted(set(config) - HTTP_CONFIG_KEYS):
        checker.add(f"unknown field; allowed: {', '.join(sorted(HTTP_CONFIG_KEYS))}", key)
    if not isinstance(config.get("url"), str) or not config["url"]:
        checker.add("an http tool needs a url (text, may hold {{ ... }})", "url")
    method = config.get("method", "GET")
    if method not in HTTP_METHODS:
        checker.add(f"must be one of {', '.join(HTTP_METHODS)}", "method")
    for key in ("url", "headers", "body"):
        if key in config:
            for message in check_template(config[key], names=names):
                checker.add(message, key)
    if "headers" in config and not isinstance(config["headers"], dict):
        checker.add("must be an object of header names to values", "headers")
    secret = config.get("auth_secret")
    if secret is not None and (not isinstance(secret, str) or not SECRET_NAME.match(secret)):
        checker.add("must be the name of one of the tenant's secrets", "auth_secret")
    headers = config.get("secret_headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) and SECRET_NAME.match(v) for v in headers.values()):
        checker.add("must map header names to names of the tenant's secrets", "secret_headers")
    if config.get("approval", "auto") not in ("auto", "always"):
        checker.add('must be "auto" (trusted hosts run, others wait for approval) or "always"', "approval")


# --- the http node kind ---------------------------------------------------------------------------


def guarded_call(config: dict[str, Any], call: HttpCall, ctx: Any, resources: Resources, tool_name: str) -> Any:
    """Check the policy (waiting for approval if needed), then make the call. Emits the decisions."""
    policy = resources.tool_policy or ToolPolicy()
    decision = decide(policy, call.method, call.url, always_ask=config.get("approval") == "always")
    if not decision.allowed:
        ctx.policy_decision("deny", tool_name, decision.reason, **call.describe())
        raise ExecutionError.policy_violation(f"{tool_name}: {decision.reason}", code="tool_denied")
    if decision.needs_approval:
        if not ctx.has_answer:  # the first pass asks; the resumed pass gets the answer
            ctx.policy_decision("approval_required", tool_name, decision.reason, **call.describe())
        answer = ctx.interrupt(WaitReason.APPROVAL, prompt={"tool": tool_name, **call.describe()})
        approved = bool(answer.get("approved")) if isinstance(answer, dict) else bool(answer)
        actor = answer.get("actor") if isinstance(answer, dict) else None
        if not approved:
            ctx.policy_decision("denied", tool_name, f"denied by {actor or 'an operator'}", **call.describe())
            raise ExecutionError.policy_violation(f"{tool_name}: the call was denied", code="tool_denied")
        ctx.policy_decision("approved", tool_name, f"approved by {actor or 'an operator'}", **call.describe())
    else:
        ctx.policy_decision("allow", tool_name, decision.reason, **call.describe())
    call = with_secrets(call, config, resources.secrets, tool_name)
    return perform(call, policy, ctx, tool_name)


def _check_http(config: dict[str, Any], checker: Checker, context: ValidationContext) -> None:
    check_http_config(config, checker)


def _build_http(spec: NodeSpec, resources: Resources, build: BuildContext) -> NodeFn:
    def run(state: Any, ctx: Any) -> Any:
        call = render_call(spec.config, expression_names(state), f"http '{spec.name}'")
        tool_call_id = f"{ctx.step_id}:http"
        if not ctx.has_answer:
            ctx.tool_input(tool_call_id, spec.name, call.describe())
        result = guarded_call(spec.config, call, ctx, resources, spec.name)
        ctx.tool_output(tool_call_id, spec.name, result)
        return result

    return run


HTTP = Kind("http", _check_http, _build_http, StepType.TOOL_NODE)
