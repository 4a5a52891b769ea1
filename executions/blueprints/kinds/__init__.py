"""The node kinds a blueprint's nodes may be, by name: :data:`KINDS`.

Each kind is a :class:`~executions.blueprints.kinds.base.Kind` defined in one module here;
``base.py`` holds what they share. A new kind goes in its module and in the table below.
"""

from executions.blueprints.kinds import flow, http, llm, nested
from executions.blueprints.kinds.base import Kind

__all__ = ["KINDS"]

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        flow.FUNCTION,
        flow.ROUTER,
        flow.TEMPLATE,
        flow.WAIT,
        nested.MAP,
        nested.SUBGRAPH,
        http.HTTP,
        llm.LLM,
    )
}
