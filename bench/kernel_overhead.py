"""Kernel step overhead, in memory: our kernel against LangGraph on the same chain, in one process.

An N-node chain of trivial nodes (each returns its input state + 1) runs through our kernel with
in-memory ports and through a LangGraph ``StateGraph`` (no checkpointer), then both again with an
in-memory checkpoint after every step. Runs of the variants alternate, in a rotating order, so
drift on a noisy machine hits them alike. Each timed run is one whole execution of the chain;
per-step time is its wall time divided by N. We report the median over the timed runs and the best.

    .venv/bin/python -m bench.kernel_overhead                 # n=200, 3 timed runs per variant
    .venv/bin/python -m bench.kernel_overhead --tiny          # n=20, 1 run: a smoke check for CI
    .venv/bin/python -m bench.kernel_overhead --profile       # also: where our kernel spends a step

Results go to ``bench/results/kernel_overhead.json`` (``--output`` to change; ``--tiny`` writes none).
``--profile`` adds cProfile hot spots of our kernel's thread, the floor of a thread round trip, and a
what-if in this process only: the same runs with node code called inline instead of on a runner thread.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import itertools
import pstats
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    RESULTS_DIR,
    Samples,
    fmt,
    load_average,
    machine_info,
    markdown_table,
    package_version,
    rotated,
    timed,
    write_json,
)
from executions.kernel import (
    CompiledGraph,
    ExecutionKernel,
    GraphBuilder,
    LongRunningPolicy,
    ResourceLimits,
    RunResult,
    TenantContext,
    graph_run,
)
from executions.kernel.memory import InMemoryCheckpointStore, InMemoryEventSink

TARGET_RATIO = 0.25
INSTALL_HINT = "langgraph not installed: pip install -e '.[bench]'"
DEFAULT_OUTPUT = RESULTS_DIR / "kernel_overhead.json"


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    # One full, checked run of the chain; returns the seconds it took.
    run_once: Callable[[], float]


@dataclass(frozen=True)
class Comparison:
    case: str
    ours: str
    peer: str


@dataclass(frozen=True)
class Settings:
    n: int
    repeats: int
    warmup: int
    output: Path | None
    profile: bool
    profile_runs: int


# --- our kernel -------------------------------------------------------------------------------


def bench_tenant() -> TenantContext:
    limits = ResourceLimits(max_steps=None, max_tokens=None, max_wall_time_s=None, max_cost_usd=None)
    return TenantContext("bench", limits=limits, long_running=LongRunningPolicy.unlimited())


def _add_one(state: int, ctx: Any) -> int:
    return state + 1


def build_chain(n: int) -> CompiledGraph:
    builder = GraphBuilder("chain")
    for i in range(n):
        builder.add_node(f"n{i}", _add_one)
        if i:
            builder.add_edge(f"n{i - 1}", f"n{i}")
    return builder.set_entry_point("n0").set_finish_point(f"n{n - 1}").compile()


def check_ours(result: RunResult, n: int, store: InMemoryCheckpointStore | None, execution_id: str) -> None:
    assert result.state.value == "completed", f"our run ended {result.state.value}: {result.error}"
    assert result.output == n, f"our chain returned {result.output!r}, expected {n}"
    if store is not None:
        saved = len(store.history[execution_id])
        assert saved >= n, f"expected a checkpoint after each of {n} steps, got {saved}"


def ours_runner(graph: CompiledGraph, n: int, tenant: TenantContext, *, checkpoints: bool) -> Callable[[], float]:
    """A fresh kernel per run (a kernel runs one execution); its construction is timed with the run."""

    def run_once() -> float:
        sink = InMemoryEventSink()
        store = InMemoryCheckpointStore() if checkpoints else None

        def execute() -> tuple[ExecutionKernel, RunResult]:
            kernel = ExecutionKernel.new(tenant).with_event_sink(sink)
            if store is not None:
                kernel.with_checkpoint_store(store)
            return kernel, kernel.execute_graph(graph, 0)

        seconds, (kernel, result) = timed(execute)
        check_ours(result, n, store, kernel.execution_id)
        return seconds

    return run_once


def our_variants(n: int) -> list[Variant]:
    graph, tenant = build_chain(n), bench_tenant()
    return [
        Variant("ours", "ours (in-memory event sink)", ours_runner(graph, n, tenant, checkpoints=False)),
        Variant(
            "ours_ckpt",
            "ours + InMemoryCheckpointStore (checkpoint after every step)",
            ours_runner(graph, n, tenant, checkpoints=True),
        ),
    ]


# --- LangGraph --------------------------------------------------------------------------------


def langgraph_available() -> bool:
    try:
        import langgraph.checkpoint.memory
        import langgraph.graph  # noqa: F401
    except ImportError:
        return False
    return True


def build_langgraph_chain(n: int, checkpointer: Any = None) -> Any:
    """The same chain as a ``StateGraph`` whose state is the int itself (LangGraph's root channel)."""
    from langgraph.graph import END, START, StateGraph

    graph: Any = StateGraph(int)
    for i in range(n):
        graph.add_node(f"n{i}", lambda state: state + 1)
        if i:
            graph.add_edge(f"n{i - 1}", f"n{i}")
    graph.add_edge(START, "n0")
    graph.add_edge(f"n{n - 1}", END)
    return graph.compile(checkpointer=checkpointer)


def langgraph_runner(app: Any, n: int, *, saver: Any = None, durability: str | None = None) -> Callable[[], float]:
    """A fresh thread id per run, deleted after the run (untimed) so the saver does not grow."""
    threads = itertools.count()
    kwargs = {"durability": durability} if durability is not None else {}

    def run_once() -> float:
        thread_id = f"bench-{next(threads)}"
        config = {"recursion_limit": n + 10, "configurable": {"thread_id": thread_id}}
        seconds, output = timed(lambda: app.invoke(0, config, **kwargs))
        assert output == n, f"LangGraph chain returned {output!r}, expected {n}"
        if saver is not None:
            saved = sum(1 for _ in saver.list({"configurable": {"thread_id": thread_id}}))
            assert saved >= n, f"expected a LangGraph checkpoint after each of {n} steps, got {saved}"
            saver.delete_thread(thread_id)
        return seconds

    return run_once


def langgraph_variants(n: int) -> list[Variant]:
    from langgraph.checkpoint.memory import InMemorySaver

    variants = [
        Variant("langgraph", "LangGraph StateGraph (no checkpointer)", langgraph_runner(build_langgraph_chain(n), n))
    ]
    for durability in ("sync", "async"):
        saver = InMemorySaver()
        app = build_langgraph_chain(n, checkpointer=saver)
        if "durability" not in inspect.signature(app.invoke).parameters:
            continue  # LangGraph before 0.6 has no durability modes; its rows show n/a
        default = " (its default)" if durability == "async" else ""
        variants.append(
            Variant(
                f"langgraph_ckpt_{durability}",
                f'LangGraph + InMemorySaver, durability="{durability}"{default}',
                langgraph_runner(app, n, saver=saver, durability=durability),
            )
        )
    return variants


COMPARISONS = [
    Comparison("no checkpoints", "ours", "langgraph"),
    Comparison('checkpoint every step (LangGraph durability="sync")', "ours_ckpt", "langgraph_ckpt_sync"),
    Comparison('checkpoint every step (LangGraph durability="async", default)', "ours_ckpt", "langgraph_ckpt_async"),
]


# --- measuring --------------------------------------------------------------------------------


def warm_up(variants: Sequence[Variant], runs: int) -> None:
    for _ in range(runs):
        for variant in variants:
            variant.run_once()


def measure(variants: Sequence[Variant], n: int, repeats: int) -> dict[str, Samples]:
    samples = {v.name: Samples(v.name, v.label) for v in variants}
    for round_no in range(repeats):
        for variant in rotated(variants, round_no):
            gc.collect()  # each timed run starts from the same, collected heap
            seconds = variant.run_once()
            samples[variant.name].us_per_step.append(seconds / n * 1e6)
    return samples


def ratio(ours: float | None, peer: float | None) -> float | None:
    return None if ours is None or peer is None else ours / peer


def comparison_rows(samples: dict[str, Samples]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for comp in COMPARISONS:
        ours, peer = samples.get(comp.ours), samples.get(comp.peer)
        if peer is None and any(row["ours"] == comp.ours for row in rows):
            continue  # without LangGraph, show each of our rows once
        ours_med, ours_best = (ours.median, ours.best) if ours else (None, None)
        peer_med, peer_best = (peer.median, peer.best) if peer else (None, None)
        ratio_med = ratio(ours_med, peer_med)
        rows.append(
            {
                "case": comp.case,
                "ours": comp.ours,
                "langgraph": comp.peer,
                "ours_median_us": ours_med,
                "ours_best_us": ours_best,
                "langgraph_median_us": peer_med,
                "langgraph_best_us": peer_best,
                "ratio_median": ratio_med,
                "ratio_best": ratio(ours_best, peer_best),
                "target_met": None if ratio_med is None else ratio_med <= TARGET_RATIO,
            }
        )
    return rows


def results_table(rows: Sequence[dict[str, Any]]) -> str:
    headers = [
        "case",
        "ours µs/step (median)",
        "ours µs/step (best)",
        "LangGraph µs/step (median)",
        "LangGraph µs/step (best)",
        "ours/LangGraph (median)",
        "ours/LangGraph (best)",
    ]
    body = [
        [
            row["case"],
            fmt(row["ours_median_us"]),
            fmt(row["ours_best_us"]),
            fmt(row["langgraph_median_us"]),
            fmt(row["langgraph_best_us"]),
            fmt(row["ratio_median"], 2, "x"),
            fmt(row["ratio_best"], 2, "x"),
        ]
        for row in rows
    ]
    return markdown_table(headers, body)


def verdict(rows: Sequence[dict[str, Any]]) -> str:
    main = rows[0]
    if main["ratio_median"] is None:
        return f"Target ours ≤ {TARGET_RATIO}x LangGraph (no checkpoints): not checked, LangGraph is not installed."
    met = "met" if main["target_met"] else "NOT met"
    return f"Target ours ≤ {TARGET_RATIO}x LangGraph (no checkpoints, median): {met} ({main['ratio_median']:.2f}x)."


# --- profiling --------------------------------------------------------------------------------

# Inclusive hot spots worth naming: (file under executions/kernel or stdlib, function) -> what it is.
NAMED_SPOTS: dict[tuple[str, str], str] = {
    ("graph_run.py", "_next_message"): "waiting for the node's result (runner-thread round trip)",
    ("runner.py", "submit"): "handing the node to a runner thread",
    ("kernel.py", "begin_step"): "begin_step: step id + StepStarted dispatch",
    ("kernel.py", "complete_step"): "complete_step: StepCompleted dispatch",
    ("kernel.py", "dispatch"): "dispatch (reduce, emit, snapshot, signal), all calls",
    ("events.py", "emit"): "EventEmitter.emit (event id, replace, sink)",
    ("ids.py", "new_id"): "id minting (step, event, checkpoint ids)",
    ("reducer.py", "reduce"): "reducer",
    ("dataclasses.py", "replace"): "dataclasses.replace (events, lanes)",
    ("cancellation.py", "child_token"): "a child cancellation token per step",
    ("node.py", "__init__"): "NodeContext construction",
    ("kernel.py", "check_limits_before_step"): "limit checks before each step",
    ("graph_run.py", "_checkpoint"): "checkpoint: build, save, emit event",
}


def _spot_name(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":
        return func
    marker = "/executions/kernel/"
    short = "kernel/" + filename.split(marker, 1)[1] if marker in filename else Path(filename).name
    return f"{short}:{line} {func}"


def _profile_stats(run: Callable[[], float], runs: int) -> tuple[pstats.Stats, float]:
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(runs):
        run()
    profiler.disable()
    return pstats.Stats(profiler), time.perf_counter() - start


def _stat_rows(stats: pstats.Stats) -> dict[tuple[str, int, str], tuple[float, float]]:
    raw: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
    return {key: (value[2], value[3]) for key, value in raw.items()}


def profile_variant(variant: Variant, n: int, runs: int, top: int = 12) -> dict[str, Any]:
    """cProfile on the kernel's own thread (node code runs on runner threads and is trivial here)."""
    stats, wall = _profile_stats(variant.run_once, runs)
    rows = _stat_rows(stats)
    steps = runs * n

    def entry(name: str, seconds: float) -> dict[str, Any]:
        return {"name": name, "share": seconds / wall, "us_per_step": seconds / steps * 1e6}

    self_time = sorted(rows.items(), key=lambda kv: kv[1][0], reverse=True)[:top]
    named = []
    for (file, func), label in NAMED_SPOTS.items():
        cum = sum(ct for (fname, _, fn), (_, ct) in rows.items() if fname.endswith("/" + file) and fn == func)
        if cum:
            named.append(entry(label, cum))
    named.sort(key=lambda e: e["share"], reverse=True)
    return {
        "variant": variant.name,
        "runs": runs,
        "profiled_us_per_step": wall / steps * 1e6,
        "self_time": [entry(_spot_name(key), tt) for key, (tt, _) in self_time],
        "inclusive": named,
    }


def thread_round_trip_us(rounds: int = 5, batch: int = 2000) -> float:
    """The floor under a per-step thread handoff: put a job on a queue, a worker thread runs it
    and puts the result on another queue, the caller takes it. Median over ``rounds`` batches."""
    jobs: queue.SimpleQueue[Callable[[], int] | None] = queue.SimpleQueue()
    results: queue.SimpleQueue[int] = queue.SimpleQueue()

    def work() -> None:
        while (job := jobs.get()) is not None:
            results.put(job())

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batch):
            jobs.put(lambda: 1)
            results.get()
        timings.append((time.perf_counter() - start) / batch * 1e6)
    jobs.put(None)
    worker.join()
    return statistics.median(timings)


class _InlinePool:
    """Stands in for the runner pool: runs the node's job at once, on the kernel's thread."""

    def submit(self, job: Callable[[], None]) -> None:
        job()


@contextmanager
def nodes_inline() -> Iterator[None]:
    """What-if only, in this process: bypass the runner threads (losing cancel-while-blocked).
    No kernel file changes; the kernel's ``graph_run`` module looks ``default_pool`` up per step."""
    saved = graph_run.default_pool
    graph_run.default_pool = _InlinePool()  # type: ignore[assignment]
    try:
        yield
    finally:
        graph_run.default_pool = saved


def inline_variant(variant: Variant) -> Variant:
    def run_once() -> float:
        with nodes_inline():
            return variant.run_once()

    return Variant(f"{variant.name}_inline", f"{variant.label}, node run inline (what-if)", run_once)


def what_if_inline(variants: dict[str, Variant], n: int, rounds: int) -> dict[str, Samples]:
    """Our rows with and without the runner-thread handoff, beside LangGraph, interleaved."""
    names = [name for name in ("ours", "ours_ckpt", "langgraph") if name in variants]
    chosen = [variants[name] for name in names]
    chosen += [inline_variant(variants[name]) for name in ("ours", "ours_ckpt")]
    warm_up(chosen, 1)
    return measure(chosen, n, rounds)


def what_if_text(samples: dict[str, Samples]) -> str:
    peer = samples.get("langgraph")
    rows = [
        [s.label, fmt(s.median), fmt(s.best), fmt(ratio(s.median, peer.median) if peer else None, 2, "x")]
        for s in samples.values()
    ]
    return markdown_table(["what-if, interleaved", "µs/step (median)", "µs/step (best)", "vs LangGraph (median)"], rows)


def run_profile(variants: Sequence[Variant], settings: Settings) -> dict[str, Any]:
    by_name = {v.name: v for v in variants}
    runs = settings.profile_runs
    profiles = [profile_variant(by_name[name], settings.n, runs) for name in ("ours", "ours_ckpt")]
    inline = what_if_inline(by_name, settings.n, runs)
    round_trip = thread_round_trip_us()
    for profile in profiles:
        print()
        print(profile_text(profile))
    print()
    print(what_if_text(inline))
    print()
    print(f"Floor of a thread handoff here (queue round trip to a worker thread and back): {round_trip:.1f} µs")
    return {
        "cprofile": profiles,
        "what_if_inline": {name: s.to_dict() for name, s in inline.items()},
        "thread_round_trip_us": round(round_trip, 3),
    }


def profile_text(profile: dict[str, Any]) -> str:
    def table(entries: list[dict[str, Any]], title: str) -> str:
        rows = [[e["name"], fmt(e["share"] * 100, 1, "%"), fmt(e["us_per_step"], 1)] for e in entries]
        return markdown_table([title, "share of step", "µs/step (profiled)"], rows)

    head = (
        f"Profile of `{profile['variant']}` ({profile['runs']} runs, cProfile, kernel thread): "
        f"{profile['profiled_us_per_step']:.1f} µs/step under the profiler, which inflates Python-level work."
    )
    return "\n\n".join(
        [head, table(profile["self_time"], "self time"), table(profile["inclusive"], "inclusive (nested, overlapping)")]
    )


# --- report -----------------------------------------------------------------------------------


def build_payload(
    settings: Settings, samples: dict[str, Samples], rows: list[dict[str, Any]], profile: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "benchmark": "kernel_overhead",
        "description": "per-step wall time of an N-node chain of trivial nodes, in memory",
        "params": {"n": settings.n, "repeats": settings.repeats, "warmup": settings.warmup},
        "machine": machine_info(),
        "versions": {
            "langgraph": package_version("langgraph"),
            "langgraph-checkpoint": package_version("langgraph-checkpoint"),
        },
        "target": {"ratio_max": TARGET_RATIO, "case": rows[0]["case"], "met": rows[0]["target_met"]},
        "variants": {name: s.to_dict() for name, s in samples.items()},
        "comparisons": rows,
        "profile": profile,
    }


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.kernel_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="nodes in the chain (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per variant first (default 2)")
    parser.add_argument("--tiny", action="store_true", help="n=20, 1 run: a quick smoke check (writes no JSON)")
    parser.add_argument("--output", type=Path, default=None, help=f"JSON results (default {DEFAULT_OUTPUT})")
    parser.add_argument("--profile", action="store_true", help="also profile our kernel's run (cProfile, what-ifs)")
    parser.add_argument("--profile-runs", type=int, default=10, help="runs per profiled variant (default 10)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.n, args.repeats, args.warmup = 20, 1, 1
    if args.n < 1 or args.repeats < 1 or args.warmup < 0 or args.profile_runs < 1:
        parser.error("--n, --repeats and --profile-runs must be at least 1, --warmup at least 0")
    output = args.output if args.output is not None or args.tiny else DEFAULT_OUTPUT
    return Settings(args.n, args.repeats, args.warmup, output, args.profile, args.profile_runs)


def all_variants(n: int) -> list[Variant]:
    variants = our_variants(n)
    if langgraph_available():
        return variants + langgraph_variants(n)
    print(INSTALL_HINT)
    return variants


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    load_at_start = load_average()
    variants = all_variants(settings.n)
    print(
        f"kernel overhead: chain of {settings.n} trivial nodes, "
        f"{settings.warmup} warm-up + {settings.repeats} timed runs per variant, interleaved"
    )
    warm_up(variants, settings.warmup)
    samples = measure(variants, settings.n, settings.repeats)
    rows = comparison_rows(samples)
    print()
    print(results_table(rows))
    print()
    print(verdict(rows))
    profile = run_profile(variants, settings) if settings.profile else None
    if settings.output is None:
        print("\n(tiny run: no JSON written; pass --output PATH to keep it)")
    else:
        payload = build_payload(settings, samples, rows, profile)
        payload["machine"]["load_average_at_start"] = load_at_start
        write_json(settings.output, payload)
        print(f"\nresults: {settings.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
