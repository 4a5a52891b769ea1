"""The ``llm`` node kind: a chat completion, streamed, and with tools, an agent loop.

Each visit of an ``llm`` node is one model call, streamed as ``data-text-delta`` events, its tokens
and cost recorded (cost from the operators' ``ModelPrice`` table) so the tenant's token and cost
limits bite. With tools, the model's tool calls are the next round's work: the node loops to
itself (a step per round, so the kernel checks every limit between rounds), runs the calls
through the tool policy, hands their results back, and calls the model again, until the model
answers in text or a bound stops it (``max_rounds``, max steps, discovered steps, repetitions).

Providers: ``"provider": "openai"`` is any OpenAI-compatible server (``base_url``, ``model``, and
``api_key_secret``, the name of one of the tenant's secrets); ``"provider": "demo"`` is an offline
model that streams a deterministic reply, for demos and tests.
"""

from __future__ import annotations

import json
from typing import Any

from executions.blueprints import spans
from executions.blueprints.expressions import ExpressionError, render_template
from executions.blueprints.kinds.base import (
    BuildContext,
    Checker,
    Kind,
    NodeSpec,
    Resources,
    ValidationContext,
    expression_names,
)
from executions.blueprints.kinds.http import check_http_config
from executions.blueprints.llm_client import (
    ChatCancelled,
    ChatError,
    ChatProvider,
    ChatResult,
    DemoProvider,
    OpenAICompatibleProvider,
)
from executions.blueprints.tools import (
    HttpCall,
    PrivateAddress,
    ToolPolicy,
    call_address,
    decide,
    perform,
    render_call,
    with_secrets,
)
from executions.kernel import ExecutionError, StepResult, StepType, WaitReason
from executions.kernel.cancellation import Cancelled
from executions.kernel.errors import Backoff, RetryPolicy
from executions.kernel.graph import NodeFn

LLM_KEYS = {
    "provider", "base_url", "model", "api_key_secret", "system", "prompt", "temperature", "max_tokens",
    "tools", "max_rounds",
}  # fmt: skip
TOOL_KEYS = {"name", "description", "parameters", "http", "function"}
DEFAULT_MAX_ROUNDS = 8
# Rate limits and server errors are worth a few patient retries; the node's own "retry" overrides.
LLM_RETRY = RetryPolicy(max_retries=4, backoff=Backoff.EXPONENTIAL, base_delay_ms=500, max_delay_ms=20_000)


# --- checking ------------------------------------------------------------------------------------


def _check_llm(config: dict[str, Any], checker: Checker, context: ValidationContext) -> None:
    for key in sorted(set(config) - LLM_KEYS):
        checker.add(f"unknown field; allowed: {', '.join(sorted(LLM_KEYS))}", key)
    provider = config.get("provider")
    if provider not in ("openai", "demo"):
        checker.add('must be "openai" (any OpenAI-compatible server) or "demo" (offline)', "provider")
    if provider == "openai" and not (isinstance(config.get("base_url"), str) and config["base_url"].startswith("http")):
        checker.add("an OpenAI-compatible provider needs its base_url, such as https://api.openai.com/v1", "base_url")
    if not isinstance(config.get("model"), str) or not config["model"]:
        checker.add("name the model", "model")
    if "prompt" not in config:
        checker.add("an llm node needs a prompt (the user message; may hold {{ ... }})", "prompt")
    for key in ("system", "prompt"):
        if key in config:
            checker.template(config[key], key)
    _check_numbers(config, checker)
    tools = config.get("tools", [])
    if not isinstance(tools, list):
        checker.add("must be a list of tools", "tools")
        return
    names = [t.get("name") for t in tools if isinstance(t, dict)]
    for index, tool in enumerate(tools):
        _check_tool(
            tool,
            checker.at(f"tools[{index}]"),
            context,
            duplicate=names.count(tool.get("name")) > 1 if isinstance(tool, dict) else False,
        )


def _check_numbers(config: dict[str, Any], checker: Checker) -> None:
    temperature = config.get("temperature")
    if temperature is not None and (not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2):
        checker.add("must be a number from 0 to 2", "temperature")
    for key, top in (("max_tokens", 1_000_000), ("max_rounds", 100)):
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top):
            checker.add(f"must be a whole number from 1 to {top}", key)
    secret = config.get("api_key_secret")
    if secret is not None and not isinstance(secret, str):
        checker.add("must be the name of one of the tenant's secrets", "api_key_secret")


def _check_tool(tool: Any, checker: Checker, context: ValidationContext, *, duplicate: bool) -> None:
    if not isinstance(tool, dict):
        checker.add('must be {"name": ..., "description": ..., "parameters": {...}, "http": {...}} or "function"')
        return
    for key in sorted(set(tool) - TOOL_KEYS):
        checker.add(f"unknown field; allowed: {', '.join(sorted(TOOL_KEYS))}", key)
    name = tool.get("name")
    if not isinstance(name, str) or not name.replace("_", "a").replace("-", "a").isalnum() or len(name) > 64:
        checker.add("a tool name is letters, digits, _ and - (at most 64)", "name")
    elif duplicate:
        checker.add(f"two tools are named {name!r}", "name")
    if ("http" in tool) == ("function" in tool):
        checker.add('a tool is either "http" (a request) or "function" (a registered Python function)')
    elif "http" in tool:
        if not isinstance(tool["http"], dict):
            checker.add("must be an http tool config (url, method, headers, body)", "http")
        else:
            check_http_config(tool["http"], checker.at("http"), names=("state", "input", "args"))
    elif not isinstance(tool["function"], str) or tool["function"] not in context.functions:
        checker.add(
            f"unknown function {tool['function']!r}; functions: {', '.join(sorted(context.functions))}", "function"
        )
    if "parameters" in tool and not isinstance(tool["parameters"], dict):
        checker.add("must be a JSON Schema object", "parameters")


# --- building ------------------------------------------------------------------------------------


MAX_REPLY_CHARS = 1_000_000


def provider_for(config: dict[str, Any], resources: Resources, where: str) -> ChatProvider:
    """The model client. A model server is a host like any tool's: it must be one the tenant's
    tool policy allows (it needs no approval: a model call cannot wait for one each time)."""
    if config["provider"] == "demo":
        return DemoProvider()
    policy = resources.tool_policy or ToolPolicy()
    decision = decide(policy, "POST", config["base_url"])
    if not decision.allowed:
        raise ExecutionError.policy_violation(f"{where}: model server refused: {decision.reason}", code="tool_denied")
    try:
        address = call_address(config["base_url"], policy)
    except PrivateAddress as refused:
        raise ExecutionError.policy_violation(f"{where}: model server refused: {refused}", code="tool_denied") from None
    except OSError as exc:
        raise ExecutionError.network(f"{where}: the model server cannot be resolved: {exc}") from None
    key = None
    if config.get("api_key_secret"):
        if config["api_key_secret"] not in resources.secrets:
            raise ExecutionError.validation(
                f"{where}: the tenant has no secret named {config['api_key_secret']!r}", code="missing_secret"
            )
        key = resources.secrets[config["api_key_secret"]]
    return OpenAICompatibleProvider(
        base_url=config["base_url"], api_key=key, timeout_s=resources.llm_timeout_s, address=address
    )


def tool_schemas(config: dict[str, Any], resources: Resources) -> list[dict[str, Any]] | None:
    tools = []
    for tool in config.get("tools", []):
        parameters = tool.get("parameters")
        description = tool.get("description", "")
        if "function" in tool:
            registered = resources.functions.get(tool["function"])
            parameters = parameters or (registered.parameters if registered else {"type": "object"})
            description = description or (registered.description if registered else "")
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": description,
                    "parameters": parameters or {"type": "object"},
                },
            }
        )
    return tools or None


def _build_llm(spec: NodeSpec, resources: Resources, build: BuildContext) -> NodeFn:
    config = spec.config
    where = f"llm '{spec.name}'"
    tools = {t["name"]: t for t in config.get("tools", [])}

    def run(state: Any, ctx: Any) -> Any:
        previous = state.get(spec.name) if isinstance(state, dict) else None
        if isinstance(previous, dict) and previous.get("pending"):
            # The tools run in a step of their own: a retried model call never runs them again.
            messages = [*previous["messages"], *_run_tools(previous["pending"], tools, state, ctx, resources)]
            output = {**previous, "messages": messages, "pending": [], "awaiting_model": True}
            return _result(state, spec.name, output)
        if isinstance(previous, dict) and previous.get("awaiting_model"):
            messages, rounds = list(previous["messages"]), int(previous.get("rounds", 1)) + 1
        else:
            messages, rounds = _opening(config, state, where), 1
        result = _call_model(config, messages, ctx, resources, where)
        assistant: dict[str, Any] = {"role": "assistant", "content": result.text}
        pending = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in result.tool_calls]
        if pending:
            assistant["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in pending
            ]
            for _ in pending:
                ctx.record_discovered_step()
        output = {
            "text": result.text,
            "messages": [*messages, assistant],
            "pending": pending,
            "awaiting_model": False,
            "rounds": rounds,
            "model": result.model,
            "finish_reason": result.finish_reason,
            "usage": {"input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens},
        }
        return _result(state, spec.name, output)

    if tools:
        max_rounds = config.get("max_rounds", DEFAULT_MAX_ROUNDS)

        def loop(state: Any) -> str | None:
            mine = state.get(spec.name) if isinstance(state, dict) else None
            if isinstance(mine, dict) and mine.get("awaiting_model"):
                return spec.name  # the tools ran: back to the model with their results
            if isinstance(mine, dict) and mine.get("pending"):
                if int(mine.get("rounds", 1)) >= max_rounds:
                    raise ExecutionError.policy_violation(
                        f"{where}: the model still wants tools after {max_rounds} rounds (max_rounds)",
                        code="agent_rounds_exceeded",
                    )
                return spec.name
            return None

        build.routers[spec.name] = (loop, [spec.name])
    return run


def _result(state: Any, node: str, output: dict[str, Any]) -> StepResult:
    """The conversation stays in the run's state; the step records the rest."""
    return StepResult(state={**state, node: output}, output={k: v for k, v in output.items() if k != "messages"})


def _opening(config: dict[str, Any], state: Any, where: str) -> list[dict[str, Any]]:
    names = expression_names(state)
    try:
        messages = []
        if "system" in config:
            messages.append({"role": "system", "content": _text(render_template(config["system"], names))})
        messages.append({"role": "user", "content": _text(render_template(config["prompt"], names))})
    except ExpressionError as exc:
        raise ExecutionError.validation(f"{where}: {exc.message}", code="template_failed") from None
    return messages


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _call_model(
    config: dict[str, Any], messages: list[dict[str, Any]], ctx: Any, resources: Resources, where: str
) -> ChatResult:
    provider = provider_for(config, resources, where)
    received = [0]

    def on_delta(text: str) -> None:
        received[0] += len(text)
        if received[0] > MAX_REPLY_CHARS:  # a server that never stops must not fill the worker's memory
            raise ExecutionError.llm(f"{where}: the reply is longer than {MAX_REPLY_CHARS} characters")
        ctx.text_delta(text)

    call = spans.llm_call(
        ctx.step_id,
        provider=config["provider"],
        model=config["model"],
        base_url=config.get("base_url"),
        temperature=config.get("temperature"),
        max_tokens=config.get("max_tokens"),
    )
    try:
        with call as span:  # a CLIENT span under the step's, when traces are on
            result = provider.stream_chat(
                model=config["model"],
                messages=messages,
                tools=tool_schemas(config, resources),
                on_delta=on_delta,
                cancellation=ctx.cancellation,
                temperature=config.get("temperature"),
                max_tokens=config.get("max_tokens"),
            )
            usage = result.usage
            span.usage(response_model=result.model, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
    except ChatCancelled:
        raise Cancelled(ctx.cancellation.reason or "cancelled") from None
    except ChatError as exc:
        raise ExecutionError.llm(
            f"{where}: {exc.message}",
            retry_policy=LLM_RETRY if exc.retryable else RetryPolicy.no_retry(),
            http_status=exc.status,
            provider=config["provider"],
        ) from None
    price_in, price_out = resources.prices.get(config["model"], (0.0, 0.0))
    cost = (result.usage.input_tokens * price_in + result.usage.output_tokens * price_out) / 1_000_000
    ctx.record_usage(input_tokens=result.usage.input_tokens, output_tokens=result.usage.output_tokens, cost_usd=cost)
    return result


# --- running the model's tool calls ----------------------------------------------------------------


def _run_tools(
    pending: list[dict[str, Any]], tools: dict[str, Any], state: Any, ctx: Any, resources: Resources
) -> list[dict[str, Any]]:
    """Run every call the model asked for and return the tool messages. Calls that need approval
    are asked about together before any call runs, so a resumed round repeats nothing."""
    prepared = [_prepare(call, tools, state) for call in pending]
    _approve_all([p for p in prepared if p[2] is not None], ctx, resources)
    results = []
    for call, tool, http_call in prepared:
        if tool is None:
            output: Any = {"error": f"there is no tool named {call['name']!r}"}
        else:
            output = _run_one(call, tool, http_call, ctx, resources)
        results.append({"role": "tool", "tool_call_id": call["id"], "content": _text(output)})
    return results


def _prepare(call: dict[str, Any], tools: dict[str, Any], state: Any) -> tuple[dict[str, Any], Any, HttpCall | None]:
    tool = tools.get(call["name"])
    try:
        args = json.loads(call["arguments"] or "{}")
    except ValueError:
        args = {"_raw": call["arguments"]}
    call = {**call, "args": args}
    if tool is None or "http" not in tool:
        return call, tool, None
    names = {**expression_names(state), "args": args}
    return call, tool, render_call(tool["http"], names, f"tool {tool['name']!r}")


def _approve_all(http_calls: list[tuple[dict[str, Any], Any, HttpCall | None]], ctx: Any, resources: Resources) -> None:
    policy = resources.tool_policy or ToolPolicy()
    decided = []
    for call, tool, http_call in http_calls:
        assert http_call is not None
        always = tool["http"].get("approval") == "always"
        decided.append((call, tool, http_call, decide(policy, http_call.method, http_call.url, always_ask=always)))
    asking = [d for d in decided if d[3].allowed and d[3].needs_approval]
    if asking and not ctx.has_answer:  # ask once, for every call that needs it; the run waits here
        for _, tool, http_call, decision in asking:
            ctx.policy_decision("approval_required", tool["name"], decision.reason, **http_call.describe())
        prompt = {"tools": [{"tool": tool["name"], **http_call.describe()} for _, tool, http_call, _ in asking]}
        ctx.interrupt(WaitReason.APPROVAL, prompt=prompt)
    answer = ctx.interrupt(WaitReason.APPROVAL) if asking else None
    approved = bool(answer.get("approved")) if isinstance(answer, dict) else bool(answer)
    actor = (answer.get("actor") if isinstance(answer, dict) else None) or "an operator"
    for call, tool, http_call, decision in decided:
        if not decision.allowed:
            name, reason = "deny", decision.reason
        elif not decision.needs_approval:
            name, reason = "allow", decision.reason
        else:
            name = "approved" if approved else "denied"
            reason = f"{name} by {actor}"
        ctx.policy_decision(name, tool["name"], reason, **http_call.describe())
        if name in ("deny", "denied"):
            call["denied"] = reason


def _run_one(
    call: dict[str, Any], tool: dict[str, Any], http_call: HttpCall | None, ctx: Any, resources: Resources
) -> Any:
    ctx.tool_input(call["id"], tool["name"], call["args"])
    if call.get("denied"):
        output: Any = {"error": f"not run: {call['denied']}"}
    elif http_call is not None:
        try:
            secured = with_secrets(http_call, tool["http"], resources.secrets, f"tool {tool['name']!r}")
            output = perform(secured, resources.tool_policy or ToolPolicy(), ctx, tool["name"])
        except ExecutionError as exc:  # the model hears about a failed call and may try otherwise
            output = {"error": exc.message}
    else:
        registered = resources.functions.get(tool["function"])
        if registered is None:
            output = {"error": f"function {tool['function']!r} is not registered in this worker"}
        else:
            output = registered.fn(call["args"], ctx)
    ctx.tool_output(call["id"], tool["name"], output)
    return output


def _rounds(spec: NodeSpec) -> int | None:
    # Two steps a round: the model's call, then the tools it asked for.
    return 2 * int(spec.config.get("max_rounds", DEFAULT_MAX_ROUNDS)) if spec.config.get("tools") else None


LLM = Kind("llm", _check_llm, _build_llm, StepType.LLM_NODE, _rounds)
