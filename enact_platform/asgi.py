"""ASGI entry point. Websockets and the SSE stream are served by consumers that hold no thread
while a client waits; every other request goes through Django."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from enact_platform import webserver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "enact_platform.settings")

django_application = get_asgi_application()  # sets Django up before the imports below
webserver.install()  # bodies bounded and websockets closed with a code where daphne reads them

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from enact_platform.admission import Admission  # noqa: E402
from executions.live.feed import TenantFeed  # noqa: E402
from executions.live.sockets import ExecutionSocket  # noqa: E402
from executions.live.sse import ExecutionStream  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                re_path(
                    r"^api/v1/executions/(?P<execution_id>[^/]+)/stream$", AuthMiddlewareStack(ExecutionStream.app)
                ),
                re_path(r"", Admission(django_application)),
            ]
        ),
        "websocket": AuthMiddlewareStack(
            URLRouter(
                [
                    path("ws/executions/", TenantFeed.as_asgi()),
                    path("ws/executions/<str:execution_id>/", ExecutionSocket.as_asgi()),
                ]
            )
        ),
    }
)
