"""ASGI entry point: HTTP through Django; websockets are routed here once the consumers exist."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "enact_platform.settings")

application = get_asgi_application()
