"""Graph compilation: every problem reported, with the node or edge it concerns."""

from __future__ import annotations

from typing import Any

import pytest

from executions.kernel import END, GraphBuilder, GraphValidationError


def noop(state: Any, ctx: Any) -> Any:
    return state


def problems(builder: GraphBuilder) -> list[str]:
    with pytest.raises(GraphValidationError) as info:
        builder.compile()
    return [p.message for p in info.value.problems]


def test_no_entry_point() -> None:
    assert problems(GraphBuilder().add_node("a", noop)) == ["the graph has no entry point"]


def test_entry_point_that_is_not_a_node() -> None:
    assert problems(GraphBuilder().add_node("a", noop).set_entry_point("x")) == ["entry point 'x' is not a node"]


def test_unknown_nodes_in_edges() -> None:
    builder = GraphBuilder().add_node("a", noop).add_edge("a", "ghost").add_edge("spirit", "a").set_entry_point("a")
    assert problems(builder) == [
        "edge 'a' -> 'ghost': unknown node 'ghost'",
        "edge 'spirit' -> 'a': unknown node 'spirit'",
    ]


def test_unknown_conditional_destination() -> None:
    builder = (
        GraphBuilder()
        .add_node("a", noop)
        .add_conditional_edges("a", lambda o: "go", {"go": "nowhere"})
        .set_entry_point("a")
    )
    assert problems(builder) == ["conditional edge 'a' -> 'nowhere' (route 'go'): unknown node 'nowhere'"]


def test_unreachable_node() -> None:
    builder = GraphBuilder().add_node("a", noop).add_node("island", noop).set_entry_point("a")
    assert problems(builder) == ["node 'island' cannot be reached from the entry point"]


def test_cycle_without_a_bound() -> None:
    builder = (
        GraphBuilder()
        .add_node("a", noop)
        .add_node("b", noop)
        .add_edge("a", "b")
        .add_conditional_edges("b", lambda o: "back", {"back": "a", "done": END})
        .set_entry_point("a")
    )
    assert problems(builder) == ["cycle without a bound: a -> b -> a; set max_iterations on one of its nodes"]


def test_self_loop_without_a_bound() -> None:
    builder = (
        GraphBuilder().add_node("a", noop).add_conditional_edges("a", lambda o: "a", ["a", END]).set_entry_point("a")
    )
    assert problems(builder) == ["cycle without a bound: a -> a; set max_iterations on one of its nodes"]


def test_bounded_cycle_compiles() -> None:
    graph = (
        GraphBuilder()
        .add_node("a", noop)
        .add_node("b", noop, max_iterations=3)
        .add_edge("a", "b")
        .add_conditional_edges("b", lambda o: "back", {"back": "a", "done": END})
        .set_entry_point("a")
        .compile()
    )
    assert graph.next_targets("b", None) == ["a"]


def test_bad_definitions_are_collected_not_raised_one_by_one() -> None:
    builder = (
        GraphBuilder()
        .add_node("a", noop)
        .add_node("a", noop)
        .add_node(END, noop)
        .add_node("c", "not callable")  # type: ignore[arg-type]
        .add_node("d", noop, max_iterations=0)
        .add_conditional_edges("a", lambda o: None, {})
        .set_entry_point("a")
    )
    assert problems(builder) == [
        "node 'a' is defined twice",
        "invalid node name '__end__'",
        "node 'c': its function is not callable",
        "node 'd': max_iterations must be a positive integer",
        "node 'a': a conditional edge needs destinations",
    ]


def _fan(builder: GraphBuilder) -> GraphBuilder:
    return (
        builder.add_node("s", noop)
        .add_node("x", noop)
        .add_node("y", noop)
        .add_edge("s", "x")
        .add_edge("s", "y")
        .set_entry_point("s")
    )


def test_fan_out_branches_that_never_meet_run_to_the_end() -> None:
    builder = _fan(GraphBuilder()).add_node("j1", noop).add_node("j2", noop).add_edge("x", "j1").add_edge("y", "j2")
    graph = builder.compile()
    assert graph.fanouts["s"].join is None
    assert graph.fanouts["s"].branches == (("x", "j1"), ("y", "j2"))


def test_uneven_branches_join_where_they_first_meet() -> None:
    builder = (
        _fan(GraphBuilder())
        .add_node("m", noop)
        .add_node("n", noop)
        .add_node("j", noop)
        .add_edge("x", "m")
        .add_edge("m", "n")
        .add_edge("y", "n")
        .add_edge("n", "j")
    )
    graph = builder.compile()
    # x -> m -> n and y -> n: they meet at n, which is the join.
    assert (graph.fanouts["s"].branches, graph.fanouts["s"].join) == ((("x", "m"), ("y",)), "n")


def test_fan_out_join_is_the_first_common_node() -> None:
    graph = (
        _fan(GraphBuilder())
        .add_node("x2", noop)
        .add_node("join", noop)
        .add_node("after", noop)
        .add_edge("x", "x2")
        .add_edge("x2", "join")
        .add_edge("y", "join")
        .add_edge("join", "after")
        .compile()
    )
    fanout = graph.fanouts["s"]
    assert (fanout.branches, fanout.join) == ((("x", "x2"), ("y",)), "join")
    assert graph.branch_successor(fanout, "x") == "x2"
    assert graph.branch_successor(fanout, "x2") is None


def test_fan_out_branch_with_a_conditional_edge_is_refused() -> None:
    builder = _fan(GraphBuilder()).add_conditional_edges("x", lambda o: "y", ["y"])
    assert problems(builder) == [
        "fan-out from 's': branch 'x' reaches 'x', which has a conditional edge; branches must be plain chains"
    ]


def test_nested_fan_out_is_refused() -> None:
    builder = _fan(GraphBuilder()).add_node("p", noop).add_node("q", noop).add_edge("x", "p").add_edge("x", "q")
    assert problems(builder) == ["fan-out from 's': branch 'x' fans out again at 'x'; nested fan-out is not supported"]


def test_conditional_edges_win_and_none_falls_back_to_static_edges() -> None:
    graph = (
        GraphBuilder()
        .add_node("a", noop)
        .add_node("b", noop)
        .add_node("c", noop)
        .add_edge("a", "b")
        .add_conditional_edges("a", lambda o: o, {"to_c": "c"})
        .set_entry_point("a")
        .compile()
    )
    assert graph.next_targets("a", "to_c") == ["c"]
    assert graph.next_targets("a", None) == ["b"]
    assert graph.next_targets("c", None) == [END]


def test_describe_lists_nodes_and_edges() -> None:
    graph = GraphBuilder("g").add_node("a", noop).add_node("b", noop).add_edge("a", "b").set_entry_point("a").compile()
    assert graph.describe() == {
        "name": "g",
        "entry_point": "a",
        "nodes": [
            {"name": "a", "type": "function_node", "description": ""},
            {"name": "b", "type": "function_node", "description": ""},
        ],
        "edges": [{"source": "a", "target": "b", "conditional": False}],
    }
