"""A small client for a running workspace server: HTTP with an analyst token, and kernels over the websocket.

Used by the demo (to run an example notebook as the analyst, audited like a browser session) and the tests.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

import websocket


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict = field(default_factory=dict)

    def json(self):
        return json.loads(self.body)


def request(url: str, path: str, *, token: str | None = None, method: str = "GET", body: dict | None = None,
            cookie: str | None = None) -> Reply:
    """One HTTP request; returns the status whatever it is (no exception for 4xx/5xx)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    if cookie:
        headers["Cookie"] = cookie
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - the workspace server on loopback
            return Reply(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read(), dict(e.headers))


@dataclass
class CellResult:
    status: str
    stdout: str
    stderr: str
    error: str | None
    outputs: list[dict]
    cell_outputs: list[dict] = field(default_factory=list)  # nbformat-shaped outputs


class KernelSession:
    """Start a kernel through the server's REST API and run code over its websocket, as JupyterLab does."""

    def __init__(self, url: str, token: str, kernel_name: str | None = None):
        self.url, self.token = url.rstrip("/"), token
        body = {"name": kernel_name} if kernel_name else {}
        r = request(self.url, "/api/kernels", token=token, method="POST", body=body)
        if r.status != 201:
            raise RuntimeError(f"kernel start refused: {r.status} {r.body[:500]!r}")
        self.kernel_id = r.json()["id"]
        self.session = uuid.uuid4().hex
        ws_url = self.url.replace("http", "ws", 1) + f"/api/kernels/{self.kernel_id}/channels?session_id={self.session}"
        self.ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=120)

    def run(self, code: str, timeout: float = 120) -> CellResult:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session, "username": "",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out, err, outputs, error, status, cell_outputs = [], [], [], None, None, []
        idle = False
        self.ws.settimeout(timeout)
        # Done, as in JupyterLab, when the reply (shell) is in and the kernel is idle again (iopub): outputs
        # and the reply travel on different channels.
        while status is None or not idle:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind in ("stream", "execute_result", "display_data", "error"):
                cell_outputs.append({"output_type": kind, **msg["content"]})
            if kind == "stream":
                (out if msg["content"]["name"] == "stdout" else err).append(msg["content"]["text"])
            elif kind in ("execute_result", "display_data"):
                outputs.append(msg["content"]["data"])
            elif kind == "error":
                error = f"{msg['content']['ename']}: {msg['content']['evalue']}"
            elif kind == "execute_reply":
                status = msg["content"]["status"]
            elif kind == "status" and msg["content"].get("execution_state") == "idle":
                idle = True
        return CellResult(status, "".join(out), "".join(err), error, outputs, cell_outputs)

    def close(self) -> None:
        self.ws.close()
        request(self.url, f"/api/kernels/{self.kernel_id}", token=self.token, method="DELETE")


def run_notebook(url: str, token: str, path: str) -> list[CellResult]:
    """Run a notebook in the workspace as the token's analyst, cell by cell, and save it with its outputs.

    Stops at the first failing cell (its error is in the returned results and the saved notebook).
    """
    import nbformat

    r = request(url, f"/api/contents/{path}?content=1", token=token)
    if r.status != 200:
        raise RuntimeError(f"cannot open {path}: {r.status} {r.body[:300]!r}")
    nb = nbformat.from_dict(r.json()["content"])
    kernel = KernelSession(url, token)
    results = []
    try:
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            result = kernel.run(cell.source)
            results.append(result)
            cell.outputs = [nbformat.from_dict({k: v for k, v in o.items()
                                                if k not in ("transient", "execution_state")})
                            for o in result.cell_outputs]
            for o in cell.outputs:
                if o.output_type == "stream":
                    o.pop("execution_count", None)
            if result.status != "ok":
                break
    finally:
        kernel.close()
    saved = request(url, f"/api/contents/{path}", token=token, method="PUT",
                    body={"type": "notebook", "format": "json", "content": nb})
    if saved.status not in (200, 201):
        raise RuntimeError(f"cannot save {path}: {saved.status} {saved.body[:300]!r}")
    return results
