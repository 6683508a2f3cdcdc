"""Request limits shared by every web entry point (REST API, portal): size and valid text.

A pure ASGI middleware, so it holds before any route or body parsing:

* a body larger than :data:`MAX_BODY_BYTES` (declared by ``Content-Length`` or counted while it
  streams in) is answered 413 without being stored anywhere;
* a JSON body with a string that is not valid Unicode (``"\\ud800"``) is answered 422 naming the
  field, instead of failing later in the database driver.
"""

from __future__ import annotations

import json

from toisio.text import find_bad_text

MAX_BODY_BYTES = 2 * 1024 * 1024
#: paths that take a document upload (an attachment of at most 10 MB, with its multipart framing)
UPLOAD_PATHS = frozenset({"/api/v1/attachments", "/apply/attach"})
MAX_UPLOAD_BYTES = 11 * 1024 * 1024


def attachment_disposition(filename: str) -> str:
    """``Content-Disposition`` for a download: the name reduced to letters, digits and ``._-`` (no quoting,
    path or header tricks)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)
    return f'attachment; filename="{safe}"'


def _reply(status: int, code: str, message: str):
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})


class LimitsMiddleware:
    """413 for oversized bodies, 422 for JSON text that is not valid Unicode."""

    def __init__(self, app, max_body: int = MAX_BODY_BYTES):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        limit = MAX_UPLOAD_BYTES if scope.get("path") in UPLOAD_PATHS else self.max_body
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = f"the request body is over the limit of {limit:,} bytes"
        if declared is not None and declared.isdigit() and int(declared) > limit:
            for message in _reply(413, "request_too_large", too_big):
                await send(message)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                for reply in _reply(413, "request_too_large", too_big):
                    await send(reply)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if b"application/json" in headers.get(b"content-type", b"") and b"\\u" in body.lower():
            try:
                found = find_bad_text(json.loads(body))
            except ValueError:
                found = None  # not JSON: the route's own parser reports it
            if found:
                path, at = found
                where = ".".join(str(p) for p in path) or "(body)"
                for reply in _reply(422, "invalid_text", f"{where}: character {at} is an unpaired surrogate; "
                                                         f"text must be valid Unicode"):
                    await send(reply)
                return
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
