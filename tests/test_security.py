"""Login throttling (django-axes) on the dashboard's and the admin's login pages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-password-for-tests"
LOGIN_PAGES = ["/login/", "/admin/login/"]


@pytest.fixture(autouse=True)
def _quick_hashes(settings: Any) -> None:
    """Forty wrong passwords need not cost forty slow hashes."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _user() -> User:
    return User.objects.create_user("olga", password=PASSWORD, is_staff=True)


def _post(client: Client, page: str, password: str, ip: str = "10.0.0.1") -> Any:
    return client.post(page, {"username": "olga", "password": password}, REMOTE_ADDR=ip)


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_wrong_passwords_lock_the_login_out_even_for_the_right_one(page: str) -> None:
    _user()
    client = Client()
    for _ in range(40):
        assert _post(client, page, "wrong").status_code in (200, 429)
    locked = _post(client, page, PASSWORD)
    assert locked.status_code == 429
    assert not _logged_in(client)
    text = locked.content.decode()
    assert "Too many failed logins" in text
    assert "try again in 15 minutes" in text


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_the_lockout_starts_at_the_limit_not_before(page: str) -> None:
    _user()
    client = Client()
    for _ in range(django_settings.AXES_FAILURE_LIMIT - 1):
        assert _post(client, page, "wrong").status_code == 200
    assert _post(client, page, PASSWORD).status_code == 302
    assert _logged_in(client)


def test_a_lockout_holds_for_that_username_from_that_address_only() -> None:
    _user()
    for _ in range(django_settings.AXES_FAILURE_LIMIT):
        _post(Client(), "/login/", "wrong", ip="10.0.0.1")
    assert _post(Client(), "/login/", PASSWORD, ip="10.0.0.1").status_code == 429
    # The same user from elsewhere, and the admin login too, answer as usual.
    elsewhere = Client()
    assert _post(elsewhere, "/admin/login/", PASSWORD, ip="10.0.0.2").status_code == 302
    assert _logged_in(elsewhere)


def test_the_lockout_ends_after_the_cool_off() -> None:
    from axes.models import AccessAttempt

    _user()
    for _ in range(django_settings.AXES_FAILURE_LIMIT):
        _post(Client(), "/login/", "wrong")
    assert _post(Client(), "/login/", PASSWORD).status_code == 429
    # As if the cool-off had passed since the last failure.
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= django_settings.AXES_COOLOFF_TIME + timedelta(seconds=1)
        attempt.save()
    client = Client()
    assert _post(client, "/login/", PASSWORD).status_code == 302
    assert _logged_in(client)


def test_an_operator_lifts_a_lockout_from_the_command_line() -> None:
    _user()
    for _ in range(django_settings.AXES_FAILURE_LIMIT):
        _post(Client(), "/admin/login/", "wrong")
    assert _post(Client(), "/admin/login/", PASSWORD).status_code == 429
    call_command("axes_reset_username", "olga")
    client = Client()
    assert _post(client, "/admin/login/", PASSWORD).status_code == 302
    assert _logged_in(client)


def test_an_operator_lifts_a_lockout_in_the_admin() -> None:
    from axes.models import AccessAttempt

    _user()
    for _ in range(django_settings.AXES_FAILURE_LIMIT):
        _post(Client(), "/login/", "wrong")
    operator = Client()
    operator.force_login(User.objects.create_superuser("root", password=PASSWORD))
    changelist = operator.get("/admin/axes/accessattempt/")
    assert changelist.status_code == 200
    assert "olga" in changelist.content.decode()
    ids = [str(pk) for pk in AccessAttempt.objects.values_list("pk", flat=True)]
    confirm = operator.post(
        "/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"}
    )
    assert confirm.status_code == 302
    client = Client()
    assert _post(client, "/login/", PASSWORD).status_code == 302
    assert _logged_in(client)


def test_a_success_clears_the_failures_before_it() -> None:
    _user()
    for _ in range(django_settings.AXES_FAILURE_LIMIT - 1):
        _post(Client(), "/login/", "wrong")
    assert _post(Client(), "/login/", PASSWORD).status_code == 302
    for _ in range(django_settings.AXES_FAILURE_LIMIT - 1):
        _post(Client(), "/login/", "wrong")
    assert _post(Client(), "/login/", PASSWORD).status_code == 302
