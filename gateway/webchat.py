"""The bundled web chat: a page at ``/`` and its assets at ``/static/``, shipped inside the package.

The page connects back to the gateway that served it (gateway/origin.py trusts the gateway's own
origin once a page is served at ``/``, without widening ``CHATGW_ALLOWED_ORIGINS``). Model output is
untrusted, so every response carries a Content-Security-Policy that allows scripts and styles from
this origin only: no inline script, no inline event handler, no eval, no plugin, no framing.
See docs/webchat.md.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from shared.settings import Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"
# host, host:port, [v6], [v6]:port: anything else stays out of the policy rather than be echoed.
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


def content_security_policy(host: str | None) -> str:
    """The page's policy. ``connect-src 'self'`` covers ws:/wss: in current browsers; the socket's
    own address is added for older ones when the Host header is a plain host[:port]."""
    sockets = f" ws://{host} wss://{host}" if host and _HOST_RE.match(host) else ""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src 'self'{sockets}",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ]
    )


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    # No hashed file names: revalidate every time (cheap with ETag) so an upgrade is never half-seen.
    "Cache-Control": "no-cache",
}


# Scripts and styles ignore their own response's policy; a document opened from /static/ directly
# (index.html is a template there) gets nothing to run.
ASSET_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Content-Security-Policy"] = ASSET_POLICY
        # Module scripts need a JavaScript type; the system's mime.types may not know .mjs.
        if path.endswith((".js", ".mjs")):
            response.headers["Content-Type"] = "text/javascript; charset=utf-8"
        elif path.endswith(".d.ts"):
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
        return response


def render_page(settings: Settings) -> str:
    """index.html with the auth mode filled in (the page asks for a user name or a token)."""
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return template.replace("{{auth}}", html.escape(settings.auth, quote=True))


def mount_webchat(app: FastAPI, settings: Settings) -> None:
    """Serve the page at ``/`` and its assets at ``/static/``. Call before the origin policy is
    built: a page at ``/`` is what makes the gateway's own origin trusted."""
    page = render_page(settings)

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:
        headers = {
            **SECURITY_HEADERS,
            "Content-Security-Policy": content_security_policy(request.headers.get("host")),
        }
        return HTMLResponse(page, headers=headers)

    app.mount("/static", _Assets(directory=STATIC_DIR), name="static")
