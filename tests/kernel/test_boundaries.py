"""The kernel stays plain Python: nothing under executions/kernel imports a framework."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

KERNEL = Path(__file__).resolve().parents[2] / "executions" / "kernel"
FORBIDDEN = ("django", "rest_framework", "channels", "django_q", "daphne", "psycopg", "redis")


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_kernel_module_imports_a_framework() -> None:
    files = sorted(KERNEL.rglob("*.py"))
    assert len(files) >= 10
    offenders = {str(f.relative_to(KERNEL)): sorted(_imported_roots(f) & set(FORBIDDEN)) for f in files}
    assert {name: roots for name, roots in offenders.items() if roots} == {}


def test_importing_the_kernel_loads_no_framework() -> None:
    # A fresh interpreter, so modules other tests imported do not hide a transitive import.
    code = (
        "import sys, executions.kernel, executions.kernel.graph_run, executions.kernel.memory\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=KERNEL.parents[1]
    )
    assert out.stdout.strip() == ""
