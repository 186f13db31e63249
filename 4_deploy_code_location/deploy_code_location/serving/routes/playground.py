"""`GET /`: the playground page (completion and chat, every sampling control, structured output, each token shaded by
its probability; the text streams in; the API key asked for when the server wants one), and its icon."""

from __future__ import annotations

import json
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from deploy_code_location.serving.state import Server

router = APIRouter(include_in_schema=False)
_FILES = resources.files("deploy_code_location.serving")
_PAGE = _FILES.joinpath("playground.html").read_text(encoding="utf-8")
_ICON = _FILES.joinpath("favicon.svg").read_bytes()


@router.get("/")
def playground(server: Server) -> HTMLResponse:
    """The playground, for the served model's id."""
    # JSON in a script element: "<" escaped, so that no model name can close the element.
    return HTMLResponse(_PAGE.replace("{{MODEL}}", json.dumps(server.model_name).replace("<", "\\u003c")))


@router.get("/favicon.ico")
@router.get("/favicon.svg")
def favicon() -> Response:
    """The icon browsers ask for (SVG, which they take from either path)."""
    return Response(_ICON, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"})
