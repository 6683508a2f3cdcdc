"""What ``toisio serve`` runs on: uvicorn with its C HTTP parser and libuv's event loop (both picked by uvicorn
when installed; with h11 and asyncio's loop the same API answered markedly fewer requests per core)."""

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

pytestmark = pytest.mark.unit


async def _app(scope, receive, send):  # pragma: no cover - never called
    pass


def test_serve_gets_the_c_parser_and_uvloop():
    config = uvicorn.Config(_app, log_level="warning")  # serve's own choice: http and loop left at "auto"
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    import asyncio

    import uvloop

    policy = asyncio.get_event_loop_policy()
    try:
        factory = config.get_loop_factory()
        loop = factory()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()
    finally:
        asyncio.set_event_loop_policy(policy)
