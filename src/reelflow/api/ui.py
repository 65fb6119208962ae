"""`GET /ui`: the web dashboard, static files shipped in the `reelflow/ui` folder (no build step).

The page itself needs no key: it asks the user for one and sends it as `Authorization: Bearer` on its
calls to `/v1`. Only the files in the folder are served (by exact name), never anything else on disk.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response

from .problems import Problem

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

# The page loads its scripts and styles from /ui only; outputs play from blob: URLs (API artifacts,
# fetched with the key) or straight from object storage (https:). Data calls go to this origin only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' blob: data: https: http:; media-src 'self' blob: https: http:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def asset_names() -> dict[str, str]:
    """Name -> media type of every file the dashboard ships."""
    folder = resources.files("reelflow") / "ui"
    names = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in MEDIA_TYPES:
            names[entry.name] = MEDIA_TYPES[suffix]
    return names


def read_asset(name: str) -> bytes:
    return (resources.files("reelflow") / "ui" / name).read_bytes()


def install(app: FastAPI) -> None:
    """Add `/ui` (the page) and `/ui/<file>` (its assets) to `app`, outside the OpenAPI schema."""
    assets = asset_names()

    @app.get("/ui", include_in_schema=False)
    async def ui_page() -> Response:
        return Response(read_asset("index.html"), media_type=MEDIA_TYPES[".html"], headers=HEADERS)

    @app.get("/ui/", include_in_schema=False)
    async def ui_slash() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=308)

    @app.get("/ui/{name}", include_in_schema=False)
    async def ui_asset(name: str) -> Response:
        media_type = assets.get(name)
        if media_type is None:
            raise Problem(404, f"no dashboard file {name[:100]!r}")
        return Response(read_asset(name), media_type=media_type, headers=HEADERS)
