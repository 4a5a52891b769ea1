"""The dashboard's theme in Chromium: dark mode by the system's preference or the reader's pick
(remembered), state badges readable in both (contrast measured from computed styles) and told by a
glyph as well as colour, and the base layout at a phone's width."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant

from .test_csp import watched  # noqa: F401  # the page, with what the browser said against the policy
from .test_live_pages import _log_in, _screenshot, _user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STATES = ["queued", "running", "waiting", "paused", "completed", "failed", "cancelled", "skipped", "pending"]
SHEET = Path(__file__).resolve().parents[2] / "executions" / "static" / "executions" / "dashboard.css"

# WCAG's contrast ratio of two computed colours (opaque ones: the badges' backgrounds are).
CONTRAST = """
(node) => {
  const parse = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const style = getComputedStyle(node);
  const a = lum(parse(style.color)), b = lum(parse(style.backgroundColor));
  const alpha = (style.backgroundColor.match(/rgba\\(.*,\\s*([\\d.]+)\\)/) || [0, "1"])[1];
  return { ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05), alpha: Number(alpha),
           glyph: getComputedStyle(node, "::before").content, bg: style.backgroundColor };
}
"""

BADGES = """
(states) => {
  const box = document.createElement("div");
  box.id = "badge-sample";
  for (const s of states) {
    const span = document.createElement("span");
    span.className = "state state-" + s;
    span.textContent = s;
    box.append(span, " ");
  }
  document.querySelector("main").prepend(box);
}
"""


def _luminance(page: Any, selector: str) -> float:
    return float(
        page.locator(selector).evaluate(
            """(n) => { const [r, g, b] = getComputedStyle(n).backgroundColor.match(/[\\d.]+/g).map(Number);
                        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255; }"""
        )
    )


def _badges(page: Any) -> dict[str, dict[str, Any]]:
    page.evaluate("() => document.querySelectorAll('#badge-sample').forEach((n) => n.remove())")
    page.evaluate(BADGES, STATES)
    return {s: page.locator(f"#badge-sample .state-{s}").evaluate(CONTRAST) for s in STATES}


def test_dark_mode_follows_the_system_and_the_readers_pick(
    live_server_url: str,
    watched: tuple[Any, list[str]],  # noqa: F811
    tenant_a: Tenant,
) -> None:
    page, violations = watched
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    page.emulate_media(color_scheme="dark")
    _log_in(page, live_server_url, "olga")
    assert page.evaluate("() => document.documentElement.dataset.theme") is None  # "as the system"
    assert _luminance(page, "body") < 0.15
    assert _luminance(page, "#list") < 0.2  # cards too
    expect(page.locator("#theme-choice")).to_have_value("system")

    page.select_option("#theme-choice", "light")
    assert page.evaluate("() => document.documentElement.dataset.theme") == "light"
    assert _luminance(page, "body") > 0.9
    page.reload()
    expect(page.locator("#theme-choice")).to_have_value("light")  # remembered
    assert _luminance(page, "body") > 0.9

    page.emulate_media(color_scheme="light")
    page.select_option("#theme-choice", "dark")
    assert _luminance(page, "body") < 0.15  # the pick wins over the system
    page.goto(f"{live_server_url}/usage/")
    assert _luminance(page, "body") < 0.15
    _screenshot(page, "usage-dark.png")

    page.select_option("#theme-choice", "system")
    assert page.evaluate("() => localStorage.getItem('enact-theme')") is None
    assert _luminance(page, "body") > 0.9  # the system says light now
    assert violations == []


def test_every_state_badge_reads_at_4_5_to_1_and_carries_a_glyph(
    live_server_url: str, page: Any, tenant_a: Tenant
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    done, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    _log_in(page, live_server_url, "olga")
    expect(page.locator(f'tr[data-id="{done.pk}"] .state')).to_have_text("completed", timeout=20_000)
    measured = {}
    for theme in ("light", "dark"):
        page.select_option("#theme-choice", theme)
        badges = _badges(page)
        measured[theme] = {s: round(b["ratio"], 2) for s, b in badges.items()}
        for state, badge in badges.items():
            assert badge["alpha"] == 1, (theme, state, badge)
            assert badge["ratio"] >= 4.5, (theme, state, badge)
        glyphs = {s: b["glyph"] for s, b in badges.items()}
        assert all(g not in ("none", "normal", '""') for g in glyphs.values()), glyphs
        assert len(set(glyphs.values())) == len(STATES), glyphs  # each state its own glyph
        # A real badge on the page, not only the samples.
        real = page.locator(f'tr[data-id="{done.pk}"] .state').evaluate(CONTRAST)
        assert real["ratio"] >= 4.5
        assert real["glyph"] == glyphs["completed"]
    # The webhooks' badges read too.
    page.evaluate("() => document.querySelectorAll('#badge-sample').forEach((n) => n.remove())")
    page.evaluate(BADGES, ["delivered", "active", "inactive"])
    for state in ("delivered", "active", "inactive"):
        assert page.locator(f"#badge-sample .state-{state}").evaluate(CONTRAST)["ratio"] >= 4.5, state
    # The two themes really differ.
    assert _badges(page)["completed"]["bg"] != "rgb(220, 250, 230)"
    print("contrast", measured)
    # The glyph is decoration: the badge's text (what tests and readers see) stays the word.
    expect(page.locator(f'tr[data-id="{done.pk}"] .state')).to_have_text("completed")


def test_the_base_layout_at_a_phones_width(
    live_server_url: str,
    watched: tuple[Any, list[str]],  # noqa: F811
    tenant_a: Tenant,
) -> None:
    page, violations = watched
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    for n in range(3):
        execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": f"hello {n} " * 30})
    page.set_viewport_size({"width": 390, "height": 844})
    _log_in(page, live_server_url, "olga")

    def fits() -> None:
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        for part in ("header.top .brand", "header.top nav", "header.top .tenant", "header.top .theme", ".logout"):
            box = page.locator(part).bounding_box()
            assert box is not None, part
            assert box["x"] >= 0, part
            assert box["x"] + box["width"] <= 390 + 0.5, (part, box)

    fits()
    # The side card (start form) and the list stack in one column, each full width.
    listing, start = page.locator("#list").bounding_box(), page.locator("#start").bounding_box()
    assert listing is not None
    assert start is not None
    assert abs(start["width"] - listing["width"]) < 2
    above, below = sorted([listing, start], key=lambda box: box["y"])
    assert below["y"] >= above["y"] + above["height"] - 1
    # A wide table scrolls inside its card.
    table_box = page.locator("#list").evaluate("c => [c.scrollWidth, c.clientWidth]")
    assert table_box[0] >= table_box[1]
    _screenshot(page, "executions-phone.png")

    page.goto(f"{live_server_url}/usage/")
    expect(page.locator("h1")).to_be_visible()
    fits()
    page.select_option("#theme-choice", "dark")
    fits()
    _screenshot(page, "usage-phone-dark.png")
    assert violations == []


def test_the_base_sheet_sets_colours_only_through_its_variables() -> None:
    """Outside the blocks that define the variables, dashboard.css names no colour itself."""
    css = re.sub(r"/\*.*?\*/", "", SHEET.read_text(), flags=re.S)
    rules = re.sub(r":root(\[data-theme=\"dark\"\]|:not\(\[data-theme=\"light\"\]\))?\s*\{[^}]*\}", "", css)
    assert "--st-completed-bg" in css
    assert re.findall(r"#[0-9a-fA-F]{3,8}\b|rgba?\(|hsla?\(", rules) == []
