"""Asking for a release from inside the workspace: a page of the workspace's own JupyterLab server.

``<workspace>/toisio/release`` (a Jupyter server extension, loaded by the workspace's generated configuration; the
server runs on the host side, never in a kernel).  Like the portal, it is a thin layer of the composition root: it
holds no rules and shows the portal's words for states and verdicts.  The signed-in analyst sees a banner with the
permit, its end date, the scratch space left and the DP budget left; picks files from the workspace, puts them in
groups with their context and controls (supporting files, an exception with its reason); and submits the output
request *as themselves*: the page calls the airlock's own domain functions, which check who may.  In Finnish,
Swedish or English (the portal's catalogues); JupyterLab's menu bar has it under "Release" (a menu entry written
into the workspace's generated settings, :func:`secure_env.workspace.lockdown.write_config`).  Each file's
automatic verdict (and whether it was verified) is shown as soon as it is added.  Nothing is uploaded: the server
reads the files where they are.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

RELEASABLE = (".csv", ".parquet", ".png", ".svg", ".txt", ".md", ".json")
PAGE = "toisio/release"


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


@functools.cache
def _templates():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "portal" / "templates"),
                              autoescape=True, extensions=["jinja2.ext.i18n"], undefined=jinja2.StrictUndefined)


class ReleaseHandler(JupyterHandler):
    """The release page: GET shows it, POST makes the request.  In Finnish, Swedish or English: the language asked
    for (``?lang=``), else the one the analyst chose in the portal, else the browser's."""

    def _context(self):
        from secure_env.workspace.jupyter_auth import permit_of, server_service
        from toisio.identity import Actor

        return server_service(), permit_of(self), Actor(self.current_user.username)

    def _lang(self, svc, actor) -> str:
        from toisio import i18n
        from toisio.identity import language_of

        asked = self.get_argument("lang", "")
        if asked:
            return i18n.normalise(asked)
        return language_of(svc, actor) or i18n.from_accept_language(self.request.headers.get("Accept-Language"))

    def _render(self, svc, permit: str, actor, *, status: int = 200, error: str = "", shown: str = "") -> None:
        from permits.service import permit_access
        from secure_env.airlock import dp
        from secure_env.airlock import outputs as A
        from toisio import i18n
        from toisio.app.portal.labels import label
        from toisio.errors import ToisioError

        lang = self._lang(svc, actor)
        root = Path(self.settings["server_root_dir"])
        used = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        quota = int(self.settings.get("toisio_quota_bytes", 0))
        try:
            b = dp.budget(svc, actor, permit)
            budget = (f"{b.remaining_epsilon:g}", f"{b.epsilon:g}") if b.epsilon > 0 else None
        except ToisioError:
            budget = None
        env = _templates().overlay()
        translations = i18n.translations(lang)
        env.install_gettext_translations(translations, newstyle=True)
        page = env.get_template("workspace_release.html").render(
            label=lambda value: label(value, translations.gettext),
            lang=lang, languages=i18n.LANGUAGES, permit=permit, access=permit_access(svc, permit),
            scratch_left_mb=max(0, quota - used) / 1048576, quota_mb=quota / 1048576, budget=budget, error=error,
            shown=shown, request=A.view(svc, actor, shown) if shown and not error else None,
            mine=[r for r in A.requests_for_permit(svc, actor, permit) if r["requester"] == actor.user_id],
            files=releasable_files(root), xsrf=self.xsrf_form_html())
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(page)

    @web.authenticated
    def get(self) -> None:
        svc, permit, actor = self._context()
        self._render(svc, permit, actor, shown=self.get_argument("request", ""))

    @web.authenticated
    def post(self) -> None:
        from secure_env.airlock import outputs as A
        from toisio import i18n
        from toisio.errors import ToisioError

        svc, permit, actor = self._context()
        root = Path(self.settings["server_root_dir"]).resolve()
        picked = self.get_arguments("pick")
        request_id = None
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
            if request_id is not None:  # nothing half made is left behind: the draft is withdrawn
                with contextlib.suppress(ToisioError):
                    A.withdraw(svc, actor, request_id)
            self._render(svc, permit, actor, status=e.http_status, error=str(e))
            return
        lang = self.get_argument("lang", "")
        lang = i18n.normalise(lang) if lang else ""
        self.redirect(url_path_join(self.base_url, PAGE) + f"?request={request_id}" + (f"&lang={lang}" if lang else ""))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "toisio.app.release_page"}]


def _load_jupyter_server_extension(serverapp) -> None:
    serverapp.web_app.add_handlers(".*$", [(url_path_join(serverapp.base_url, PAGE), ReleaseHandler)])
