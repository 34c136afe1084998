"""ASGI middleware of quantgate's vLLM servers: every request but ``/health`` needs the server's key.

Loaded by the server itself (``--middleware serve_guard.RequireKey``, this folder on its PYTHONPATH;
``quantgate.runners.serve``). Why: vLLM's own key check guards only paths under ``/v1``, ``/v2``,
``/inference`` and ``/cohere`` (vllm/entrypoints/serve/middleware/authenticate.py), so without this
``/invocations`` serves completions to anyone on the host, and ``/tokenize``, ``/metrics`` and the
rest answer them too. The key is the server's ``VLLM_API_KEY``, sent as ``Authorization: Bearer``.
``/health`` stays open: the readiness probe needs no key and learns nothing from it.
"""

from __future__ import annotations

import hashlib
import hmac
import os

OPEN_PATHS = ("/health",)


class RequireKey:
    """Answer 401 to any HTTP request (and close any websocket) without ``Bearer $VLLM_API_KEY``."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.expected = hashlib.sha256(f"Bearer {os.environ['VLLM_API_KEY']}".encode()).digest()

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] in ("http", "websocket") and scope["path"] not in OPEN_PATHS:
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(hashlib.sha256(given).digest(), self.expected):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": b'{"error": "Unauthorized"}'})
                return
        await self.app(scope, receive, send)
