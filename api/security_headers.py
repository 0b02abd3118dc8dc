"""Security headers on every response: a Content-Security-Policy that the web app (``/``)
and the offline docs (``/docs``, ``/redoc``) satisfy, ``nosniff``, and no framing.

The policy lets a page load scripts, styles, fonts and data only from this server. Styles may
be inline: Swagger UI and ReDoc (styled-components) write ``<style>`` elements at run time,
and the web app sets styles through the CSSOM. Images may also be ``data:`` and ``blob:``
URLs (icons in the docs, a chart exported as PNG from a canvas); ReDoc runs its search in a
``blob:`` worker. No ``unsafe-eval`` and no inline script anywhere: the docs pages start
their bundles from files of their own (``api/docs.py``)."""
from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    # frame-ancestors for browsers that know CSP; X-Frame-Options for those that do not.
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_NAMES = {name for name, _ in HEADERS}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k not in _NAMES]
                message["headers"] = [*headers, *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
