"""The DP query service's door into a workspace: a Unix socket in the workspace's runtime directory.

The kernel has no network and no database; its sandbox binds the runtime directory, so the kernel reaches this
socket (``$TOISIO_DP_SOCKET``) and nothing else.  A request is one line of JSON (at most 64 KiB): the query's
specification, never data.  The gateway runs on the host side with the service's settings, answers with
:func:`secure_env.airlock.dp_service.answer` on the permit's read-only data copy (charged to the permit's ledger
before it runs, signed with the service's receipt key, which never enters the sandbox) and replies one line of
JSON.  The workspace server starts it with the JupyterLab server and stops it with it.

Protocol::

    -> {"op": "query", "query": {...DpQuery...}}       <- {"ok": true, "answer": {...DpAnswer...}}
    -> {"op": "budget"}                                <- {"ok": true, "budget": {"epsilon": ..., ...}}
    <- {"ok": false, "code": "budget_exceeded", "message": "..."}   on any refusal
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socketserver
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from toisio.errors import ToisioError
from toisio.identity import Actor, AuthMethod, Role
from toisio.service import Service

MAX_REQUEST = 64 * 1024
log = logging.getLogger("toisio.dp_gateway")


def workspace_actor(permit_id: str) -> Actor:
    """Who a query from the workspace is charged to: the service acting for the permit's workspace."""
    return Actor(f"workspace:{permit_id}", frozenset({Role.SYSTEM}), method=AuthMethod.SERVICE)


def handle(svc: Service, permit_id: str, line: bytes) -> dict:
    """One request line to its reply (pure of sockets, so it is tested directly)."""
    from secure_env.airlock import dp_service

    if len(line) > MAX_REQUEST:
        return {"ok": False, "code": "too_large", "message": f"a DP request is at most {MAX_REQUEST} bytes"}
    try:
        req = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        return {"ok": False, "code": "bad_request", "message": "a DP request is one line of JSON"}
    if not isinstance(req, dict) or req.get("op") not in ("query", "budget"):
        return {"ok": False, "code": "bad_request", "message": "op must be 'query' or 'budget'"}
    actor = workspace_actor(permit_id)
    try:
        if req["op"] == "budget":
            return {"ok": True, "budget": dp_service.remaining(svc, actor, permit_id)}
        query = dp_service.DpQuery.model_validate(req.get("query"))
        ans = dp_service.answer(svc, actor, permit_id, query)
        return {"ok": True, "answer": json.loads(ans.model_dump_json())}
    except ValidationError as e:
        where = ".".join(str(x) for x in e.errors()[0]["loc"])
        return {"ok": False, "code": "bad_dp_query", "message": f"{where or 'query'}: {e.errors()[0]['msg']}"}
    except ToisioError as e:
        return {"ok": False, "code": e.code, "message": str(e)}
    except Exception:  # a failure of the service itself: logged here, never a traceback into the notebook
        log.exception("DP query of %s failed", permit_id)
        return {"ok": False, "code": "internal", "message": "the DP query service failed; the operators are told "
                                                            "(nothing was released)"}


class Gateway(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A threaded Unix-socket server answering one permit's DP queries."""

    daemon_threads = True

    def __init__(self, svc: Service, permit_id: str, path: Path):
        self.svc, self.permit_id = svc, permit_id
        path.unlink(missing_ok=True)
        old = os.umask(0o177)  # the socket is the service account's only (the sandbox runs as it, mapped)
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)
        self.path = path

    def start(self) -> Gateway:
        threading.Thread(target=self.serve_forever, name=f"dp-gateway-{self.permit_id}", daemon=True).start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.path.unlink(missing_ok=True)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST + 1)
        reply = handle(self.server.svc, self.server.permit_id, line)
        self.wfile.write(json.dumps(reply).encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m secure_env.airlock.dp_gateway PERMIT_ID SOCKET``: serve until SIGTERM."""
    from toisio.service import service

    permit_id, path = (argv or sys.argv[1:])[:2]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    gw = Gateway(service(), permit_id, Path(path))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    gw.start()
    log.info("DP query service for %s on %s", permit_id, path)
    stop.wait()
    gw.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
