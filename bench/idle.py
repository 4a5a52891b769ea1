"""Idle cost: what the platform's processes spend with nothing running and no client connected.

Starts a deployment as the README does (``bench/deployment.py``), waits until it is ready and has
settled, then reads the CPU time of the web processes and of the worker clusters (each process
with every process it forked) over a window: a minute by default. Target: each process under 1 %
of a CPU.
Idle, workers sleep until woken (``executions/wakeups.py``) and the embedded relay reads the log
when told to, not on a tight poll.

    .venv/bin/python -m bench.idle [--deployments embedded scaled] [--window 60] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, machine_info, write_json
from bench.deployment import Deployment, scaled_reachable

TARGET_PERCENT = 1.0
SETTLE_SECONDS = 5.0


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                parent = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def measure(kind: str, window: float, workdir: Path) -> dict[str, Any]:
    with Deployment(kind, workdir, webs=1, clusters=1, database="enact_bench_idle") as deployment:
        time.sleep(SETTLE_SECONDS)  # start-up's own work (imports, first heartbeats) is not idling
        roles = {"web": deployment.processes[0].pid, "workers": deployment.processes[-1].pid}
        trees = {role: _tree(pid) for role, pid in roles.items()}
        before_each = {role: {pid: _cpu_seconds([pid]) for pid in pids} for role, pids in trees.items()}
        started = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - started
        after_each = {role: {pid: _cpu_seconds([pid]) for pid in pids} for role, pids in trees.items()}
        before = {role: sum(each.values()) for role, each in before_each.items()}
        after = {role: sum(each.values()) for role, each in after_each.items()}
    result: dict[str, Any] = {"window_s": round(elapsed, 1)}
    for role in roles:
        spent = [100 * (after_each[role][pid] - before_each[role][pid]) / elapsed for pid in trees[role]]
        result[role] = {
            "processes": len(trees[role]),
            "cpu_percent": round(100 * (after[role] - before[role]) / elapsed, 2),
            "busiest_process_percent": round(max(spent), 2),
            "met": max(spent) < TARGET_PERCENT,  # each process under 1 % of a CPU
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", nargs="+", default=["embedded", "scaled"], choices=["embedded", "scaled"])
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured (default 60)")
    parser.add_argument("--tiny", action="store_true", help="a few seconds, for CI: it must still run")
    args = parser.parse_args()
    window = 3.0 if args.tiny else args.window
    results: dict[str, Any] = {"machine": machine_info(), "window_s": window, "target_percent": TARGET_PERCENT}
    for kind in args.deployments:
        if kind == "scaled" and not scaled_reachable():
            print("scaled: skipped (no PostgreSQL or Redis here)")
            continue
        with tempfile.TemporaryDirectory(prefix=f"enact-idle-{kind}-") as workdir:
            results[kind] = measure(kind, window, Path(workdir))
        row = results[kind]
        for role in ("web", "workers"):
            verdict = "met" if row[role]["met"] else "NOT met"
            print(f"{kind:9} {role:8} {row[role]['cpu_percent']:6.2f} % of a CPU in all, busiest process "
                  f"{row[role]['busiest_process_percent']:.2f} % ({row[role]['processes']} processes, "
                  f"{row['window_s']} s)  target each < 1 %: {verdict}")  # fmt: skip
    if not args.tiny:
        write_json(RESULTS_DIR / "idle.json", results)


if __name__ == "__main__":
    main()
