"""The workspace stage's REST routes: a permit's workspace (create, start, stop, status, tokens, destroy, its
session audit) and import requests into it.  A thin layer over :mod:`secure_env.workspace.provision`,
:mod:`secure_env.workspace.server` and :mod:`secure_env.workspace.ingress`; the domain functions check
who may.  The application that serves them is built by :mod:`toisio.app.api`."""

from __future__ import annotations

import base64
import binascii
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from secure_env.workspace import ingress, provision, server
from toisio.identity import Actor
from toisio.service import Service
from toisio.text import MAX_TEXT


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateWorkspace(_Body):
    quota_mb: int | None = Field(None, ge=1, le=1_000_000)


class Stop(_Body):
    reason: str = Field("stopped by request", min_length=1, max_length=1000)


class NewImport(_Body):
    permit_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=255, description="a plain file name: letters, digits, . _ -")
    content_base64: str = Field(description="the file, base64-encoded (the request is limited to 2 MB)")
    purpose: str = Field(min_length=1, max_length=MAX_TEXT)


class Reject(_Body):
    reason: str = Field(min_length=1, max_length=MAX_TEXT)


def _import_json(r: ingress.ImportRequest) -> dict[str, Any]:
    return asdict(r)


def workspace_router(svc: Service, actor: Callable[..., Actor]) -> APIRouter:
    r = APIRouter(tags=["workspaces"])

    @r.post("/api/v1/workspaces/{permit_id}", status_code=201)
    def create(permit_id: str, body: CreateWorkspace | None = None, a: Actor = Depends(actor)) -> dict[str, Any]:
        """Create the permit's workspace from its latest delivery; one login token per named analyst (shown
        once, only their hashes are kept)."""
        from pseudonymise.runs import latest_delivery

        with svc.engine.connect() as conn:
            found = latest_delivery(conn, permit_id)
        if found is None:
            raise provision.WorkspaceError(f"permit {permit_id} has no delivered extraction", "no_delivery")
        tokens = provision.create(svc, a, permit_id, Path(found), quota_mb=body.quota_mb if body else None)
        return {"permit_id": permit_id, "delivery": found, "tokens": tokens}

    @r.get("/api/v1/workspaces/{permit_id}")
    def status(permit_id: str, a: Actor = Depends(actor)) -> dict[str, Any]:
        """Whether the workspace exists and runs, where, for whom, and its scratch use."""
        return asdict(server.status(svc, a, permit_id))

    @r.post("/api/v1/workspaces/{permit_id}/start")
    def start(permit_id: str, a: Actor = Depends(actor)) -> dict[str, Any]:
        """Start the permit's JupyterLab (refused unless the permit is in force)."""
        return asdict(server.start(svc, a, permit_id))

    @r.post("/api/v1/workspaces/{permit_id}/stop")
    def stop(permit_id: str, body: Stop | None = None, a: Actor = Depends(actor)) -> dict[str, Any]:
        """Stop the permit's server and its kernels."""
        was = server.stop(svc, a, permit_id, reason=body.reason if body else "stopped by request")
        return {"permit_id": permit_id, "was_running": was}

    @r.post("/api/v1/workspaces/{permit_id}/tokens/{analyst}")
    def token(permit_id: str, analyst: str, a: Actor = Depends(actor)) -> dict[str, str | None]:
        """A new login token for an analyst named on the permit (the old one stops working); shown once.  An
        analyst may ask for their own: with the workspace running, ``login_url`` opens their JupyterLab."""
        token = provision.issue_token(svc, a, permit_id, analyst)
        info = server.status(svc, a, permit_id)
        return {"analyst": analyst, "token": token, "login_url": f"{info.url}lab?token={token}" if info.url else None}

    @r.delete("/api/v1/workspaces/{permit_id}")
    def destroy(permit_id: str, a: Actor = Depends(actor)) -> dict[str, Any]:
        """Delete the data copy and scratch space, recording what was deleted (the key is kept)."""
        return {"permit_id": permit_id, "deleted": provision.destroy(svc, a, permit_id)}

    @r.get("/api/v1/workspaces/{permit_id}/audit")
    def audit_(permit_id: str, a: Actor = Depends(actor)) -> list[dict[str, Any]]:
        """The session audit: logins, kernels, cells (code, output size, files written), files read."""
        return [{"seq": e.seq, "at": e.ts, "actor": e.actor, "action": e.action, "payload": e.payload}
                for e in provision.session_audit(svc, a, permit_id)]

    @r.post("/api/v1/imports", status_code=201, tags=["imports"])
    def request_import(body: NewImport, a: Actor = Depends(actor)) -> dict[str, Any]:
        """Ask for a file (code, a lookup table) to be imported into the permit's workspace."""
        try:
            data = base64.b64decode(body.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ingress.IngressError("content_base64 is not valid base64", "bad_content") from None
        if not ingress.is_plain_name(body.name):
            raise ingress.IngressError(f"{body.name!r} is not a plain file name (letters, digits, . _ -)",
                                       "bad_name")
        with tempfile.TemporaryDirectory(prefix="toisio-import-") as tmp:
            source = Path(tmp) / body.name
            source.write_bytes(data)
            return _import_json(ingress.request_import(svc, a, body.permit_id, source, purpose=body.purpose))

    @r.get("/api/v1/imports", tags=["imports"])
    def list_imports(permit_id: str | None = None, a: Actor = Depends(actor)) -> list[dict[str, Any]]:
        """Import requests the caller may see."""
        return [_import_json(x) for x in ingress.list_imports(svc, a, permit_id)]

    @r.post("/api/v1/imports/{import_id}/approve", tags=["imports"])
    def approve(import_id: str, a: Actor = Depends(actor)) -> dict[str, Any]:
        """Approve: the file is copied read-only into the workspace's imports/ folder."""
        return _import_json(ingress.decide_import(svc, a, import_id, approve=True))

    @r.post("/api/v1/imports/{import_id}/reject", tags=["imports"])
    def reject(import_id: str, body: Reject, a: Actor = Depends(actor)) -> dict[str, Any]:
        """Reject, with a reason the analyst can act on."""
        return _import_json(ingress.decide_import(svc, a, import_id, approve=False, reason=body.reason))

    return r
