"""The dashboard's script modules are all asked for by the page at once (modulepreload), so a
first visit does not wait for one import level after another; a module added without its link
would quietly slow every first visit."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.template.loader import get_template

MODULES = Path(settings.BASE_DIR) / "executions" / "static" / "executions" / "dashboard"


def test_every_dashboard_module_is_preloaded() -> None:
    base = Path(get_template("base.html").origin.name).read_text()
    modules = sorted(path.name for path in MODULES.glob("*.js"))
    assert modules  # the folder is where the test looks
    missing = [name for name in modules if f"executions/dashboard/{name}' %}}\">" not in base]
    assert missing == []
    assert 'rel="modulepreload" href="{% static \'executions/dashboard.js\' %}"' in base
