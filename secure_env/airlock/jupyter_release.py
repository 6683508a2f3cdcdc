"""Asking for a release from inside the workspace: a page of the workspace's own JupyterLab server.

``<workspace>/toisio/release`` (a Jupyter server extension of the airlock, loaded by the workspace's generated
configuration; the server runs on the host side, never in a kernel).  The signed-in analyst sees a banner with the
permit, its end date, the scratch space left and the DP budget left; picks files from the workspace, puts them in
groups with their context and controls (supporting files, an exception with its reason); and submits the output
request *as themselves*: the page calls the airlock's own domain functions, which check who may.  Each file's
automatic verdict (and whether it was verified) is shown as soon as it is added.  Nothing is uploaded: the server
reads the files where they are.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

RELEASABLE = (".csv", ".parquet", ".png", ".svg", ".txt", ".md", ".json")
PAGE = "toisio/release"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def releasable_files(root: Path) -> list[str]:
    """Files of the workspace an analyst may put in a request (not hidden, a releasable type), relative to root."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(RELEASABLE) or name.endswith(".spec.json"):
                continue
            out.append(str((Path(dirpath) / name).relative_to(root)))
    return out


class ReleaseHandler(JupyterHandler):
    """The release page: GET shows it, POST makes the request."""

    def _context(self):
        from secure_env.workspace.jupyter_auth import permit_of, server_service
        from toisio.identity import Actor

        return server_service(), permit_of(self), Actor(self.current_user.username)

    def _banner(self, svc, permit: str, actor) -> str:
        from permits.service import permit_access
        from secure_env.airlock import dp
        from toisio.errors import ToisioError

        access = permit_access(svc, permit)
        root = Path(self.settings["server_root_dir"])
        used = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        quota = int(self.settings.get("toisio_quota_bytes", 0))
        try:
            b = dp.budget(svc, actor, permit)
            budget = f"epsilon {b.remaining_epsilon:g} left of {b.epsilon:g}"
        except ToisioError:
            budget = "no privacy budget set"
        return (f'<div class="banner" role="status"><strong>Permit {_e(permit)}</strong> · '
                f'{"in force" if access.in_force else _e(access.reason)}'
                f'{" until " + _e(access.valid_until) if access.valid_until else ""} · '
                f'scratch space left {max(0, quota - used) / 1048576:.1f} MB of {quota / 1048576:.0f} MB · '
                f'DP: {_e(budget)}</div>')

    def _page(self, body: str, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Ask for a release</title><style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;max-width:70rem;color:#1b1b1b}}
.banner{{background:#eef3fb;border-left:4px solid #2b5797;padding:.6rem .8rem;margin-bottom:1rem}}
.error{{background:#fdecea;border-left:4px solid #b3261e;padding:.6rem .8rem}}
fieldset{{margin:.8rem 0;border:1px solid #bbb}} label{{display:block;margin-top:.4rem}}
input[type=text],textarea{{width:100%;max-width:40rem}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3rem .5rem;text-align:left}}
.pass{{color:#1e6b2b}} .fail{{color:#b3261e}} .review{{color:#8a5a00}}
</style></head><body><main><h1>Ask for a release</h1>{body}</main></body></html>""")

    @web.authenticated
    def get(self) -> None:
        from secure_env.airlock import outputs as A

        svc, permit, actor = self._context()
        root = Path(self.settings["server_root_dir"])
        shown = self.get_argument("request", "")
        parts = [self._banner(svc, permit, actor)]
        if shown:
            parts.append(self._request_view(svc, actor, shown))
        files = releasable_files(root)
        rows = []
        for i, rel in enumerate(files):
            rows.append(f"""<fieldset><legend><label><input type="checkbox" name="pick" value="{i}">
 {_e(rel)}</label></legend><input type="hidden" name="path_{i}" value="{_e(rel)}">
<label for="d{i}">What it shows</label><input type="text" id="d{i}" name="description_{i}">
<label for="m{i}">How it was made</label><input type="text" id="m{i}" name="method_{i}">
<label for="r{i}">Columns with the row labels (a table; comma-separated)</label>
<input type="text" id="r{i}" name="index_{i}">
<label for="g{i}">Group</label><input type="text" id="g{i}" name="group_{i}" value="default">
<label><input type="checkbox" name="supporting_{i}" value="1"> Supporting file (shown to the checkers, never
released)</label>
<label for="x{i}">Exception asked for, with the reason (only if its automatic check fails)</label>
<input type="text" id="x{i}" name="exception_{i}"></fieldset>""")
        mine = [r for r in A.requests_for_permit(svc, actor, permit) if r["requester"] == actor.user_id]
        parts.append("<h2>Your requests</h2>" + ("<ul>" + "".join(
            f'<li><a href="?request={_e(r["request_id"])}">{_e(r["request_id"])}</a>: {_e(r["state"])}, '
            f'{_e(", ".join(r["files"]))}</li>' for r in mine) + "</ul>" if mine else "<p>None yet.</p>"))
        parts.append(f"""<h2>New request</h2><form method="post">{self.xsrf_form_html()}
{"".join(rows) or "<p>The workspace has no files that can be released (tables, figures, text).</p>"}
<fieldset><legend>Context for the checkers (every group)</legend>
<label for="ctx">What the files are for</label><textarea id="ctx" name="group_context"></textarea>
<label for="ctl">Disclosure controls applied (suppression, rounding, bands)</label>
<textarea id="ctl" name="controls"></textarea></fieldset>
<button type="submit" name="action" value="submit">Submit for review</button>
<button type="submit" name="action" value="draft">Save without submitting</button></form>""")
        self._page("".join(parts))

    def _request_view(self, svc, actor, request_id: str) -> str:
        from secure_env.airlock import outputs as A

        v = A.view(svc, actor, request_id)
        rows = "".join(
            f'<tr><td>{_e(f["name"])}</td><td>{_e(f["group"])}</td><td class="{_e(f["check_status"])}">'
            f'{_e(f["check_status"])}</td><td>{"verified" if f["check_report"].get("verified") else ("not verified" if "verified" in f["check_report"] else "")}'  # noqa: E501
            f'</td><td>{_e("; ".join(f["check_report"].get("table_findings", [])[:3]))}</td></tr>'
            for f in v["files"])
        return (f'<h2>Request {_e(request_id)}: {_e(v["state"])}</h2><table><thead><tr><th>File</th><th>Group</th>'
                f'<th>Automatic check</th><th>Verified</th><th>Findings</th></tr></thead><tbody>{rows}</tbody>'
                f'</table>')

    @web.authenticated
    def post(self) -> None:
        from secure_env.airlock import outputs as A
        from toisio.errors import ToisioError

        svc, permit, actor = self._context()
        root = Path(self.settings["server_root_dir"]).resolve()
        picked = self.get_arguments("pick")
        try:
            if not picked:
                raise A.AirlockError("choose at least one file", "no_files")
            request_id = A.create_request(svc, actor, permit)
            groups = []
            for i in picked:
                rel = self.get_argument(f"path_{i}", "")
                path = (root / rel).resolve()
                if not rel or not path.is_relative_to(root):
                    raise A.AirlockError(f"{rel}: outputs come from the workspace", "outside_workspace")
                context = {"description": self.get_argument(f"description_{i}", ""),
                           "method": self.get_argument(f"method_{i}", "")}
                index = self.get_argument(f"index_{i}", "").strip()
                if index:
                    context["index"] = index
                exception = self.get_argument(f"exception_{i}", "").strip()
                if exception:
                    context["exception"] = exception
                group = A.group_name(self.get_argument(f"group_{i}", ""))
                groups.append(group)
                A.add_file(svc, actor, request_id, path, context, group=group,
                           supporting=bool(self.get_argument(f"supporting_{i}", "")))
            shared, controls = self.get_argument("group_context", "").strip(), self.get_argument("controls", "").strip()
            if shared or controls:
                for group in dict.fromkeys(groups):
                    A.describe_group(svc, actor, request_id, group, context=shared, controls=controls)
            if self.get_argument("action", "") == "submit":
                A.submit(svc, actor, request_id)
        except ToisioError as e:
            self._page(f'{self._banner(svc, permit, actor)}<p class="error" role="alert">{_e(e)}</p>'
                       f'<p><a href="">Back</a></p>', status=e.http_status)
            return
        self.redirect(url_path_join(self.base_url, PAGE) + f"?request={request_id}")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "secure_env.airlock.jupyter_release"}]


def _load_jupyter_server_extension(serverapp) -> None:
    serverapp.web_app.add_handlers(".*$", [(url_path_join(serverapp.base_url, PAGE), ReleaseHandler)])
