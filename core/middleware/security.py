"""Standard response headers, added to every response just before its headers are sent."""

from __future__ import annotations

from aiohttp import web

from core.middleware.correlation import CORRELATION_HEADER, CORRELATION_ID

__all__ = ["API_CSP", "SECURITY_HEADERS", "SERVER_NAME", "security_headers"]

API_CSP = "default-src 'none'; frame-ancestors 'none'"
SERVER_NAME = "aioshop"

# Every response's, whatever produced it (the app, or the server for an unparseable request).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: correlation id, nosniff, framing, a strict default CSP and
    ``Cache-Control: no-store`` unless the response sets its own."""
    correlation = request.get(CORRELATION_ID)
    if correlation is not None:
        response.headers[CORRELATION_HEADER] = correlation
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    # Set before aiohttp's own default: no software or version for a scanner to match.
    response.headers["Server"] = SERVER_NAME
    response.headers.setdefault("Content-Security-Policy", API_CSP)
    # API responses carry tokens and personal data: no cache may keep them unless the handler
    # says otherwise (static assets, Swagger UI and the event stream set their own).
    response.headers.setdefault("Cache-Control", "no-store")
