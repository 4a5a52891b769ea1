"""Row locks go through one module, which names their order (enact_platform/locks.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.apps import apps

from enact_platform.locks import ORDER, locked
from executions.models import Execution, ExecutionEvent
from tenants.models import Tenant

ROOT = Path(__file__).resolve().parents[1]


def test_every_select_for_update_is_in_the_locks_module() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ("executions", "tenants", "enact_platform")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "enact_platform" / "locks.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bselect_for_update\b", line)
    ]
    assert found == []


def test_every_model_in_the_order_exists() -> None:
    assert [apps.get_model(label)._meta.label for label in ORDER] == list(ORDER)


def test_a_model_without_a_place_in_the_order_is_refused() -> None:
    with pytest.raises(ValueError, match=r"executions\.ExecutionEvent has no place in the lock order"):
        locked(ExecutionEvent.objects.all())


def test_a_locked_queryset_says_for_update() -> None:
    assert locked(Tenant.objects.all()).query.select_for_update
    query = locked(Execution.objects.filter(pk="x"), no_key=True).query
    assert query.select_for_update
    assert query.select_for_no_key_update
