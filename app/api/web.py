"""``GET /``: the page where people drop a photo and get its cut-out.

One self-contained HTML file (its CSS and script inline, no CDN), so it works
offline and behind any proxy. The Content-Security-Policy allows exactly that
inline CSS and script, by hash, and lets the page talk only to this server.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@cache
def _page() -> tuple[bytes, str]:
    html = files("app.web").joinpath("index.html").read_text(encoding="utf-8")
    return html.encode("utf-8"), _content_security_policy(html)


def _content_security_policy(html: str) -> str:
    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        digests = (base64.b64encode(hashlib.sha256(block.encode("utf-8")).digest()).decode("ascii") for block in blocks)
        return " ".join(f"'sha256-{digest}'" for digest in digests)

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "img-src 'self' blob: data:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


@router.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    body, policy = _page()
    return HTMLResponse(body, headers={"Content-Security-Policy": policy, "Cache-Control": "no-cache"})
