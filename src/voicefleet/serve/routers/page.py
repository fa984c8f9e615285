"""The web page at `/`: one HTML file, one script and one style sheet from the package's
`static/` folder. The page calls the same public HTTP API as any client (it carries no second
code path); these routes serve its three files and nothing else."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

STATIC = resources.files("voicefleet.serve") / "static"
FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
# Everything the page loads comes from this server; audio and plots arrive as blobs it fetched itself.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "media-src 'self' blob:; connect-src 'self' blob:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def _static(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@router.get("/")
def index() -> Response:
    return Response(_static("index.html"), media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    media_type = FILES.get(name)
    if media_type is None:  # only the page's own files, by name: nothing else of the package is reachable
        raise HTTPException(404)  # answered like any unknown route
    return Response(_static(name), media_type=media_type, headers=HEADERS)
