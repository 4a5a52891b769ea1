"""``manage.py up``: the whole platform on one machine, in one command.

Migrates, makes sure a demo tenant and an admin login exist, then runs the web server and a
worker cluster until Ctrl-C, which stops both.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from executions.services.blueprints import blueprints_install_demo
from tenants.models import Membership, Tenant
from tenants.services import membership_set, tenant_create

DEMO_TENANT = "demo"
ADMIN_USER = "admin"


class Command(BaseCommand):
    help = "Start the platform: migrate, demo tenant and login, web server and worker (Ctrl-C stops all)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="run the web server only")

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = options["host"], options["port"]
        if _port_taken(host, port):
            raise CommandError(f"{host}:{port} is in use; pass --port to pick another")
        call_command("migrate", interactive=False, verbosity=0)
        password = self._ensure_demo()
        # A terminal's Ctrl-C, a supervisor's SIGTERM and a closed terminal all stop everything.
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _interrupt)
        children = self._start(host, port, with_worker=not options["no_worker"])
        try:
            self._wait_ready(host, port, children)
            self.stdout.write(
                self.style.SUCCESS(f"\nEnact is up: http://{host}:{port}/\n")
                + f"  log in as {ADMIN_USER} / {password}   (tenant '{DEMO_TENANT}')\n"
                + "  Ctrl-C stops the web server and the worker.\n"
            )
            self._supervise(children)
        except KeyboardInterrupt:
            self.stdout.write("\nstopping…")
        finally:
            _stop(children)

    def _ensure_demo(self) -> str:
        tenant = Tenant.objects.filter(slug=DEMO_TENANT).first() or tenant_create(slug=DEMO_TENANT, name="Demo")
        secret_file = Path(settings.ENACT_STATE_DIR) / "enact-admin-password.txt"
        users = get_user_model()
        user = users.objects.filter(username=ADMIN_USER).first()
        if user is None:
            password = os.environ.get("ENACT_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            user = users.objects.create_superuser(ADMIN_USER, "", password)
            secret_file.write_text(password + "\n")
            secret_file.chmod(0o600)
        elif secret_file.exists():
            password = secret_file.read_text().strip()
        else:
            password = "(as set before; change it with: python manage.py changepassword admin)"
        if not Membership.objects.filter(user=user, tenant=tenant).exists():
            membership_set(tenant=tenant, user=user, role=Membership.Role.ADMIN)
        blueprints_install_demo(tenant=tenant)
        return password

    def _start(self, host: str, port: int, *, with_worker: bool) -> list[subprocess.Popen[bytes]]:
        _share_metrics()
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        children = [subprocess.Popen([*manage, "runserver", "--noreload", f"{host}:{port}"], start_new_session=True)]
        if with_worker:
            children.append(subprocess.Popen([*manage, "qcluster"], start_new_session=True))
        return children

    def _wait_ready(self, host: str, port: int, children: list[subprocess.Popen[bytes]]) -> None:
        deadline = time.monotonic() + 60
        while not _port_taken(host, port):
            if any(child.poll() is not None for child in children):
                raise CommandError("a process exited during start-up; see its output above")
            if time.monotonic() > deadline:
                raise CommandError("the web server did not start within 60 s")
            time.sleep(0.1)

    def _supervise(self, children: list[subprocess.Popen[bytes]]) -> None:
        while True:
            for child in children:
                if child.poll() is not None:
                    raise CommandError(f"{' '.join(map(str, child.args[-2:]))} exited with {child.returncode}")  # type: ignore[index]
            time.sleep(0.5)


def _share_metrics() -> None:
    """The web server's /metrics adds up what the worker processes count (executions run, pickup
    times, slots in use): each process writes its figures into one directory, emptied first so a
    process of an earlier start counts nothing. One set here by the operator is kept."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    directory = Path(settings.ENACT_STATE_DIR) / "enact-metrics"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each child (not its whole group): the web server stops; the worker cluster
    stops its own processes in order, and each worker process stops claiming, hands its
    executions back (ENACT_STOP_SECONDS) and exits. A SIGTERM to every process of the cluster at
    once would leave its sentinel waiting for a monitor process that is gone. Waits for every
    process of the groups to be gone; SIGKILL only past the deadline."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.ENACT_STOP_SECONDS + 10
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(max(0.1, deadline - time.monotonic()))
        while time.monotonic() < deadline and _group_alive(child.pid):
            time.sleep(0.05)
        if _group_alive(child.pid):
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
