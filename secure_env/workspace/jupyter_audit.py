"""Session audit and quota for a workspace's Jupyter server (all named in the generated config).

Every login (:mod:`secure_env.workspace.jupyter_auth`), kernel start and stop, executed cell (its code and the
size of its output, with the files the cell wrote) and every file saved through the contents API is
appended to the service's audit log with the analyst and the permit.  The contents manager refuses
a write that would take the Jupyter root over its quota; kernels get the quota as their file-size
limit (a file cut off at that limit is removed), and a cell that takes the root over the quota is
recorded.  A server extension re-checks the permit every few seconds and stops the server,
kernels included, once the permit is no longer in force.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from tornado.ioloop import PeriodicCallback

from secure_env.workspace.browser_rules import BrowserLimits, read_refusal, write_refusal
from secure_env.workspace.jupyter_auth import current_analyst, server_service
from secure_env.workspace.provision import tree_usage, used_bytes

OUTPUT_MSG_TYPES = frozenset({"stream", "execute_result", "display_data", "update_display_data", "error"})


def _record(permit: str, action: str, payload: dict[str, Any], actor: str | None = None) -> None:
    server_service().record(actor=actor or current_analyst.get(), action=action, subject=f"permit:{permit}",
                            payload=payload)


def _model_size(model: dict[str, Any]) -> int:
    content = model.get("content")
    if content is None:
        return 0
    if model.get("type") == "notebook":
        return len(json.dumps(content).encode())
    if model.get("format") == "base64":
        return len(base64.b64decode(content))
    return len(str(content).encode())


class QuotaContentsManager(AsyncLargeFileManager):
    """Contents API with a size quota on the Jupyter root, the browser rules of
    :mod:`secure_env.workspace.browser_rules` (no data-like file served, no upload accepted), and an audit
    event for each file read or written."""

    def _settings(self) -> dict[str, Any]:
        return self.parent.web_app.settings

    def _limits(self) -> BrowserLimits:
        return BrowserLimits(text_bytes=self._settings().get("toisio_read_max_bytes", BrowserLimits.text_bytes))

    async def get(self, path, content=True, type=None, format=None, require_hash=False):
        os_path = Path(self._get_os_path(path.strip("/")))
        # Directory listings carry names and sizes, never file content; only file content is judged.
        if content and not os_path.is_dir():
            self._check_read(path.strip("/"), os_path, type)
        return await super().get(path, content=content, type=type, format=format, require_hash=require_hash)

    def _check_read(self, path: str, os_path: Path, requested_type: str | None) -> None:
        """Record the read and refuse it (403) unless
        :func:`~secure_env.workspace.browser_rules.read_refusal` allows it."""
        size = os_path.stat().st_size if os_path.is_file() else 0
        # A notebook asked for as a plain file is still judged as a notebook (its cells are checked).
        kind = "notebook" if (requested_type == "notebook" or os_path.suffix == ".ipynb") else "file"
        limits = self._limits()
        head = None
        if os_path.is_file() and (kind == "file" or size <= limits.notebook_bytes):
            with open(os_path, "rb") as f:
                head = f.read(limits.text_bytes + 1 if kind == "file" else size)
        refusal = read_refusal(path, kind, size, head, limits)
        _record(self._settings()["toisio_permit"], "workspace.file_read",
                {"path": path, "bytes": size, "type": kind, "via": "contents API", "refused": refusal is not None,
                 **({"reason": refusal} if refusal else {})})
        if refusal:
            raise web.HTTPError(403, refusal)

    def _check_quota(self, path: str, adding: int, replacing: bool) -> None:
        quota = self._settings()["toisio_quota_bytes"]
        root = Path(self.root_dir)
        usage = used_bytes(root)
        existing = root / path.strip("/")
        if replacing and existing.is_file():
            usage -= existing.stat().st_size
        if usage + adding > quota:
            _record(self._settings()["toisio_permit"], "workspace.quota_refused",
                    {"path": path, "bytes": adding, "used": usage, "quota": quota})
            raise web.HTTPError(507, f"scratch quota exceeded: {path} needs {adding:,} bytes, "
                                     f"{max(quota - usage, 0):,} of {quota:,} left")

    async def save(self, model, path=""):
        chunk = model.get("chunk")
        if "content" in model:
            refusal = write_refusal(path.strip("/"), model.get("type", "file"), model.get("format"),
                                    chunk is not None, model.get("content") if model.get("format") == "text" else None,
                                    self._limits())
            if refusal:
                _record(self._settings()["toisio_permit"], "workspace.upload_refused",
                        {"path": path.strip("/"), "bytes": _model_size(model), "format": model.get("format"),
                         "reason": refusal})
                raise web.HTTPError(403, refusal)
        self._check_quota(path, _model_size(model), replacing=chunk in (None, 1))
        saved = await super().save(model, path)
        if chunk in (None, -1) and model.get("type") != "directory":
            _record(self._settings()["toisio_permit"], "workspace.file_written",
                    {"path": path.strip("/"), "bytes": saved.get("size"), "via": "contents API"})
        return saved

    async def copy(self, from_path, to_path=None):
        source = Path(self.root_dir) / from_path.strip("/")
        size = used_bytes(source) if source.is_dir() else source.stat().st_size if source.exists() else 0
        self._check_quota(to_path or from_path, size, replacing=False)
        copied = await super().copy(from_path, to_path)
        _record(self._settings()["toisio_permit"], "workspace.file_written",
                {"path": copied["path"], "bytes": size, "via": "contents API copy", "from": from_path})
        return copied


class AuditedKernelManager(AsyncMappingKernelManager):
    """Starts kernels only while the permit is in force, and audits kernel starts and stops."""

    def _permit(self) -> str:
        return self.parent.web_app.settings["toisio_permit"]

    async def start_kernel(self, *, kernel_id=None, path=None, **kwargs):
        from permits.service import permit_access

        permit = self._permit()
        access = permit_access(server_service(), permit)
        if not access.in_force:
            raise web.HTTPError(403, f"permit {permit} is not in force ({access.reason})")
        started = kernel_id is None or kernel_id not in self
        kid = await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs)
        if started:
            _record(permit, "workspace.kernel_started", {"kernel_id": kid, "path": path,
                                                         "kernel_name": kwargs.get("kernel_name")})
        return kid

    async def shutdown_kernel(self, kernel_id, now=False, restart=False):
        await super().shutdown_kernel(kernel_id, now=now, restart=restart)
        _record(self._permit(), "workspace.kernel_stopped", {"kernel_id": kernel_id, "restart": restart})


def _frames(msg_list: list[Any]) -> list[bytes]:
    return [bytes(f.bytes) if hasattr(f, "bytes") else bytes(f) for f in msg_list]


class AuditedKernelConnection(ZMQChannelsWebsocketConnection):
    """Audits every executed cell: the analyst, its code, the bytes of output and the files it wrote."""

    def _pending(self) -> dict[str, dict[str, Any]]:
        return self.__dict__.setdefault("_toisio_pending", {})

    def _settings(self) -> dict[str, Any]:
        return self.websocket_handler.settings

    def handle_incoming_message(self, incoming_msg) -> None:
        try:
            self._note_request(incoming_msg)
        except Exception:  # the audit must never be skipped silently: log loudly, still forward
            self.log.exception("toisio: could not parse an incoming kernel message for the audit")
        super().handle_incoming_message(incoming_msg)

    def _note_request(self, incoming_msg) -> None:
        from jupyter_server.services.kernels.connection.base import (
            deserialize_binary_message,
            deserialize_msg_from_ws_v1,
        )

        if self.subprotocol == "v1.kernel.websocket.jupyter.org":
            channel, msg_list = deserialize_msg_from_ws_v1(incoming_msg)
            header = self.session.unpack(msg_list[0])
            content = self.session.unpack(msg_list[3])
        else:
            msg = deserialize_binary_message(incoming_msg) if isinstance(incoming_msg, bytes) \
                else json.loads(incoming_msg)
            channel, header, content = msg.get("channel"), msg["header"], msg.get("content", {})
        if channel == "shell" and header.get("msg_type") == "execute_request":
            root = Path(self._settings()["server_root_dir"])
            self._pending()[header["msg_id"]] = {
                "code": content.get("code", ""), "output_bytes": 0, "started": time.monotonic(),
                "analyst": self.websocket_handler.current_user.username, "before": tree_usage(root)}

    def handle_outgoing_message(self, stream, outgoing_msg) -> None:
        try:
            self._note_reply(stream, outgoing_msg)
        except Exception:
            self.log.exception("toisio: could not parse an outgoing kernel message for the audit")
        super().handle_outgoing_message(stream, outgoing_msg)

    def _note_reply(self, stream, outgoing_msg) -> None:
        pending = self._pending()
        if not pending:
            return
        _, fed = self.session.feed_identities(outgoing_msg)
        frames = _frames(fed)
        parent = self.session.unpack(frames[2])
        entry = pending.get(parent.get("msg_id"))
        if entry is None:
            return
        header = self.session.unpack(frames[1])
        kind = header["msg_type"]
        if kind in OUTPUT_MSG_TYPES:
            entry["output_bytes"] += sum(len(f) for f in frames[4:])
        elif kind == "execute_reply":
            entry["reply"] = self.session.unpack(frames[4])
        elif kind == "status" and self.session.unpack(frames[4]).get("execution_state") == "idle":
            entry["idle"] = True  # the kernel has published every output of this request
        # The reply (shell) and the outputs (iopub) travel on different channels: record once both are in.
        if "reply" in entry and entry.get("idle"):
            del pending[parent["msg_id"]]
            self._record_cell(entry, entry["reply"])

    def _record_cell(self, entry: dict[str, Any], reply: dict[str, Any]) -> None:
        settings = self._settings()
        root = Path(settings["server_root_dir"])
        after = tree_usage(root)
        written = sorted(p for p, stat in after.items() if entry["before"].get(p) != stat)
        quota = settings["toisio_quota_bytes"]
        truncated = [p for p in written if after[p][0] >= quota]  # stopped by the kernel's file-size limit
        for rel in truncated:
            (root / rel).unlink(missing_ok=True)
            after.pop(rel)
        code = entry["code"]
        # The whole code is recorded, never cut: padding cannot push a payload out of the record.
        payload = {"kernel_id": self.kernel_id, "code": code, "code_bytes": len(code.encode()),
                   "code_sha256": hashlib.sha256(code.encode()).hexdigest(), "status": reply.get("status"),
                   "execution_count": reply.get("execution_count"), "output_bytes": entry["output_bytes"],
                   "seconds": round(time.monotonic() - entry["started"], 3),
                   "files_written": [{"path": p, "bytes": after[p][0]} for p in written if p in after],
                   "files_removed_over_quota": truncated}
        _record(settings["toisio_permit"], "workspace.cell_executed", payload, actor=entry["analyst"])
        used = sum(size for size, _ in after.values())
        if used > quota:
            _record(settings["toisio_permit"], "workspace.quota_exceeded", {"used": used, "quota": quota},
                    actor=entry["analyst"])


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "secure_env.workspace.jupyter_audit"}]


def _load_jupyter_server_extension(serverapp) -> None:
    """Refuse the locked routes, and stop the server (and its kernels) once its permit is no longer in force."""
    from permits.service import permit_access
    from secure_env.workspace.jupyter_auth import refuse_routes

    refuse_routes(serverapp.web_app, serverapp.base_url)
    settings = serverapp.web_app.settings
    settings["server_root_dir"] = str(Path(serverapp.root_dir).resolve())
    permit = settings["toisio_permit"]

    def check() -> None:
        access = permit_access(server_service(), permit)
        if not access.in_force and not getattr(serverapp, "_toisio_stopping", False):
            serverapp._toisio_stopping = True
            _record(permit, "workspace.stopped", {"reason": access.reason, "by": "server permit check"},
                    actor="toisio")
            serverapp.log.warning("toisio: permit %s is not in force (%s): stopping", permit, access.reason)
            serverapp.stop()

    PeriodicCallback(check, settings["toisio_check_seconds"] * 1000).start()
