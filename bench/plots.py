"""The plots of ``docs/BENCHMARKS.md``, drawn from the results the benchmarks wrote.

Latency distributions are drawn as curves of percentiles (a point at (x ms, q %) says q % of the
samples took at most x ms), on a logarithmic time axis, with the target as a line; a benchmark
stores each distribution as its percentiles (``quantiles``: 201 values, q = 0, 0.5, …, 100 %), so
that 61,000 deliveries cost a few kilobytes.

    .venv/bin/python -m bench.plots                 # redraw every plot in docs/ from bench/results/
    .venv/bin/python -m bench.plots --out /tmp/x    # somewhere else (CI checks they still draw)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR

DOCS = Path(__file__).resolve().parents[1] / "docs"
QUANTILE_STEPS = 200  # percentiles every 0.5 %


def quantiles(samples: Sequence[float]) -> list[float]:
    """The samples' values at q = 0, 1/200, …, 1 (nearest rank), for ``latency_curves``."""
    ordered = sorted(samples)
    if not ordered:
        return []
    last = len(ordered) - 1
    return [round(ordered[round(i * last / QUANTILE_STEPS)], 3) for i in range(QUANTILE_STEPS + 1)]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib not installed: pip install -e '.[bench]' for the plots")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def matplotlib_ticker() -> Any:
    import matplotlib.ticker

    return matplotlib.ticker


def latency_curves(
    curves: dict[str, list[float]], *, title: str, path: Path, target_ms: float | None = None, target_label: str = ""
) -> bool:
    """One percentile curve per label (its ``quantiles``), in one PNG. False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    for label, values in curves.items():
        if values:
            axis.plot(values, [100 * i / (len(values) - 1) for i in range(len(values))], label=label)
    if target_ms is not None:
        axis.axvline(target_ms, color="black", linestyle="--", linewidth=1, label=target_label or f"{target_ms:g} ms")
    axis.set_xscale("log")
    ticker = matplotlib_ticker()
    values = [v for curve in curves.values() for v in curve if v > 0]
    narrow = bool(values) and max(values) / min(values) < 30  # under a decade and a half: more labels
    axis.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0) if narrow else (1.0, 3.0)))
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    axis.set_xlabel("latency, ms (log scale)")
    axis.set_ylabel("percentile")
    axis.set_ylim(0, 100)
    axis.set_yticks([0, 25, 50, 75, 90, 100])
    axis.grid(alpha=0.3, which="both")
    _finish(plt, figure, axis, title, path)
    return True


def throughput_lines(lines: dict[str, dict[int, float]], *, title: str, path: Path) -> bool:
    """Executions/s against worker processes, one line per label. False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=110)
    ticks: set[int] = set()
    for label, medians in lines.items():
        workers = sorted(medians)
        ticks.update(workers)
        axis.plot(workers, [medians[w] for w in workers], marker="o", label=label)
    axis.set_xlabel("worker processes in all")
    axis.set_ylabel("executions / s (10 steps each)")
    axis.set_xticks(sorted(ticks))
    axis.set_ylim(bottom=0)  # from zero: the differences are small, and should look it
    axis.grid(alpha=0.3)
    _finish(plt, figure, axis, title, path)
    return True


def latency_bars(panels: dict[str, dict[str, float]], *, title: str, path: Path) -> bool:
    """One panel per workload, a bar per system (its p50, ms; ours in green), on a shared logarithmic
    axis. False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    height = max(len(bars) for bars in panels.values())
    figure, axes = plt.subplots(len(panels), 1, figsize=(7, 1.0 + 0.32 * height * len(panels)), dpi=110, sharex=True)
    for axis, (name, bars) in zip([axes] if len(panels) == 1 else axes, panels.items(), strict=True):
        labels = list(bars)
        colors = ["tab:green" if label.startswith("ours") else "tab:blue" for label in labels]
        axis.barh(range(len(labels)), [bars[label] for label in labels], color=colors)
        axis.set_yticks(range(len(labels)), labels, fontsize=8)
        axis.invert_yaxis()
        axis.set_title(name, fontsize=9, loc="left")
        axis.set_xscale("log")
        axis.grid(alpha=0.3, which="both", axis="x")
        for i, label in enumerate(labels):
            value = bars[label]
            axis.annotate(f"{value:,.0f}" if value >= 100 else f"{value:g}", (value, i), xytext=(3, 0), textcoords="offset points",
                          va="center", fontsize=7)  # fmt: skip
    ticker = matplotlib_ticker()
    last = [axes] if len(panels) == 1 else axes
    last[-1].xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    last[-1].set_xlabel("p50, ms (log scale)")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True


def _finish(plt: Any, figure: Any, axis: Any, title: str, path: Path) -> None:
    """Title, legend, and the PNG written."""
    axis.set_title(title)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


# --- each benchmark's plots, from its JSON -------------------------------------------------------


def plot_stream(result: dict[str, Any], out: Path) -> list[Path]:
    """Event latency (a curve per deployment and client count) and cancel latency (per deployment)."""
    by_kind = result["results"]
    events = {
        f"{kind}, {clients} client{'s' if clients != '1' else ''}": figures["quantiles"]
        for kind, found in by_kind.items()
        for clients, figures in found["events"].items()
        if figures.get("quantiles")
    }
    cancels = {
        kind: found["cancel"]["quantiles"] for kind, found in by_kind.items() if found["cancel"].get("quantiles")
    }
    targets = result["targets"]
    plots = [
        ("latency_events.png", events, "Event latency: committed -> received by a websocket client",
         targets["event_p99_ms_at_100"], "target p99 at 100 clients"),
        ("latency_cancel.png", cancels, "Cancel latency: request -> cancelled event at the client",
         targets["cancel_p99_ms"], "target p99"),
    ]  # fmt: skip
    drawn = []
    for name, curves, title, target, target_label in plots:
        path = out / name
        if curves and latency_curves(curves, title=title, path=path, target_ms=target, target_label=target_label):
            drawn.append(path)
    return drawn


def plot_pickup(result: dict[str, Any], out: Path) -> list[Path]:
    curves = {
        f"{broker} broker": figures["quantiles"]
        for broker, figures in result["pickup_ms"].items()
        if figures.get("quantiles")
    }
    path = out / "latency_pickup.png"
    target = result["targets"]["pickup_p50_ms"]
    title = "Pickup latency: submit -> first step started"
    if curves and latency_curves(curves, title=title, path=path, target_ms=target, target_label="target p50"):
        return [path]
    return []


def plot_throughput(result: dict[str, Any], out: Path) -> list[Path]:
    lines: dict[str, dict[int, float]] = {}
    for config in result["configurations"]:
        label = "one cluster" if config["clusters"] == 1 else f"{config['clusters']} clusters"
        lines.setdefault(label, {})[config["clusters"] * config["workers"]] = config["median"]
    path = out / "throughput.png"
    title = f"Throughput on PostgreSQL, {result['broker']} broker, {result['machine']['cpu_count']} CPUs"
    return [path] if throughput_lines(lines, title=title, path=path) else []


def plot_peers(result: dict[str, Any], out: Path) -> list[Path]:
    """Pickup, cancel and fairness p50 of ours and of each peer (``bench.peers``; a peer's median over rounds)."""
    panels = result.get("plot_p50_ms") or {}
    path = out / "peers.png"
    title = "Side by side with the peers, p50 (lower is better)"
    return [path] if panels and latency_bars(panels, title=title, path=path) else []


PLOTTERS = {
    "stream_latency.json": plot_stream,
    "durable_steps.json": plot_pickup,
    "throughput.json": plot_throughput,
    "peers.json": plot_peers,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DOCS)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    drawn: list[Path] = []
    for name, plot in PLOTTERS.items():
        source = args.results / name
        if not source.exists():
            print(f"no {source}: run its benchmark first")
            continue
        drawn += plot(json.loads(source.read_text()), args.out)
    if not drawn:
        raise SystemExit("nothing was drawn")
    for path in drawn:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
