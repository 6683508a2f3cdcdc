"""The portal's pages: one route per screen or form, each a thin layer over the stages' domain functions
(which check every permission themselves).  See :mod:`toisio.app.portal.web` for sessions, CSRF and
language."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from catalogue.datasets import dataset as get_dataset
from catalogue.datasets import datasets, search
from flows import data_request as DR
from permits import content as C
from permits import decision as D
from permits import service as S
from permits.actions import ACTION_BODIES
from permits.application import ApplicationForm, Purpose
from permits.lifecycle import PERMIT_IN_FORCE, WAITING_FOR, State
from permits.permissions import ACTIONS
from permits.validation import Report, validate_data
from secure_env.airlock import outputs as A
from secure_env.workspace import provision, server
from toisio import identity, notify
from toisio.app.portal.forms import action_fields, application_data
from toisio.app.portal.labels import ACTION_LABELS, FIELD_LABELS
from toisio.app.portal.web import Portal
from toisio.errors import Invalid, ToisioError, Unauthenticated
from toisio.identity import Actor, Role
from toisio.web import attachment_disposition

#: case actions taken from their own screens (messages) or only by the service's jobs
_NOT_BUTTONS = {"remark", "expire", "remind", "view"}


def _fields(action: str) -> list[dict[str, Any]]:
    """The typed fields of an action's form, from the action's pydantic body."""
    out = []
    for name, f in ACTION_BODIES[action].model_fields.items():
        ann = str(f.annotation)
        if "ApplicationForm" in ann:
            continue  # resubmitting without changes; the form itself is edited on the application page
        kind = ("date" if "date" in ann else "number" if any(t in ann for t in ("int", "float", "Decimal"))
                else "bool" if "bool" in ann else "text")
        out.append({"name": name, "kind": kind, "required": f.is_required(),
                    "long": name in ("reason", "reasons", "summary", "text")})
    return out


def _registries_of(form: ApplicationForm | None) -> list[str]:
    return sorted(form.extraction.registries) if form and form.extraction else []


def register(app: FastAPI, portal: Portal) -> None:  # noqa: C901 - one function per page, registered here
    svc = portal.svc

    async def call(fn, *args, **kwargs):
        return await run_in_threadpool(fn, *args, **kwargs)

    # ------------------------------------------------------------ signing in and out

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/"):
        return await portal.page(request, "login.html", next=_safe_next(next), oidc=bool(svc.settings.oidc_issuer))

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request):
        await portal.check_csrf(request)
        form = await request.form()
        user_id, password, code = (str(form.get(k) or "").strip() for k in ("user_id", "password", "code"))
        nxt = _safe_next(str(form.get("next") or "/"))
        try:
            new = await call(identity.login_local, svc, user_id, password, code, token_name="portal", days=1)
        except Unauthenticated as exc:
            locked = exc.code == "account_locked"
            return await portal.page(request, "login.html", 401, next=nxt, user_id=user_id, error=exc.code,
                                     locked_message=str(exc) if locked else None, oidc=bool(svc.settings.oidc_issuer))
        portal.sign_in(request, new.value, new.info.user_id)
        return portal.redirect(nxt)

    @app.post("/logout")
    async def logout(request: Request):
        await portal.check_csrf(request)
        await call(portal.sign_out, request)
        return portal.redirect("/login")

    @app.post("/language")
    async def language(request: Request):
        await portal.check_csrf(request)
        form = await request.form()
        lang = str(form.get("lang") or "")
        if lang not in ("fi", "sv", "en"):
            raise Invalid(f"unknown language {lang!r}", code="unknown_language")
        request.session["lang"] = lang
        actor = await portal.signed_in_or_none(request)
        if actor is not None:
            await call(identity.set_language, svc, actor, lang)
        return portal.redirect(_safe_next(str(form.get("next") or "/")))

    # ------------------------------------------------------------ home: my cases, my tasks, notifications

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request):
        actor = await portal.signed_in(request)
        tasks = await call(_tasks, svc, actor)
        notes = await call(C.notifications, svc, actor, limit=15)
        return await portal.page(request, "home.html", actor=actor, tasks=tasks, notifications=notes)

    @app.get("/notifications", response_class=HTMLResponse)
    async def notifications(request: Request):
        actor = await portal.signed_in(request)
        notes = await call(C.notifications, svc, actor, limit=100)
        messages = await call(notify.inbox, svc, actor)
        channel = await call(notify.channel_of, svc, actor)
        return await portal.page(request, "notifications.html", actor=actor, notifications=notes, messages=messages,
                                 channel=channel)

    @app.post("/notifications/{step}")
    async def notifications_step(request: Request, step: str):
        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        form = await request.form()
        if step == "channel":
            await call(notify.set_channel, svc, actor, str(form.get("channel") or ""))
        elif step == "read":
            await call(notify.mark_read, svc, actor)
        else:
            raise Invalid(f"unknown step {step!r}", code="unknown_action")
        return portal.redirect("/notifications")

    # ------------------------------------------------------------ catalogue

    @app.get("/catalogue", response_class=HTMLResponse)
    async def catalogue(request: Request, q: str = "", purpose: str = ""):
        actor = await portal.signed_in_or_none(request)
        found = search(q[:200], purpose=purpose or None)
        return await portal.page(request, "catalogue.html", actor=actor, datasets=found, q=q, purpose=purpose,
                                 purposes=[p.value for p in Purpose])

    @app.get("/catalogue/{dataset_id}", response_class=HTMLResponse)
    async def dataset_page(request: Request, dataset_id: str):
        actor = await portal.signed_in_or_none(request)
        return await portal.page(request, "dataset.html", actor=actor, d=get_dataset(dataset_id))

    # ------------------------------------------------------------ applying

    @app.get("/apply", response_class=HTMLResponse)
    async def apply_page(request: Request, kind: str = "data_permit", draft: str = ""):
        actor = await portal.signed_in(request)
        user = await call(identity.get_user, svc, actor.user_id)
        existing = await call(C.application, svc, actor, draft) if draft else None
        return await portal.page(request, "apply.html", actor=actor, user=user, kind=kind, draft=draft,
                                 form=existing.model_dump(mode="json") if existing else None,
                                 datasets=datasets(), purposes=[p.value for p in Purpose], report=None, wizard=True)

    @app.post("/apply/validate", response_class=HTMLResponse)
    async def apply_validate(request: Request):
        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        data = application_data(await request.form())
        return await portal.page(request, "_problems.html", actor=actor, report=validate_data(data),
                                 wizard=data.get("kind") != "amendment")

    @app.post("/apply/attach", response_class=HTMLResponse)
    async def apply_attach(request: Request):
        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        form = await request.form()
        which = str(form.get("which") or "research_plan")
        if which not in ("research_plan", "ethics_statement"):
            raise Invalid("unknown attachment slot", code="invalid_body")
        upload = form.get(which + "_file")
        try:
            if upload is None or isinstance(upload, str):
                raise Invalid("choose a file to upload", code="attachment_missing")
            data = await upload.read(C.MAX_ATTACHMENT_BYTES + 1)
            name = upload.filename or ""
        finally:
            await form.close()
        ref = await call(C.upload_attachment, svc, actor, name, data)
        return await portal.page(request, "_attachment.html", actor=actor, which=which, ref=ref, size=len(data))

    @app.post("/apply", response_class=HTMLResponse)
    async def apply(request: Request):
        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        form = await request.form()
        data = application_data(form)
        report = validate_data(data)
        how = str(form.get("action") or "draft")
        draft = str(form.get("draft") or "")
        if not report.ok:
            if data.get("kind") == "amendment":
                return await portal.page(request, "amend.html", 422, actor=actor, permit_id=data.get("permit_id"),
                                         form=data, report=report)
            user = await call(identity.get_user, svc, actor.user_id)
            return await portal.page(request, "apply.html", 422, actor=actor, user=user, kind=data.get("kind"),
                                     draft=draft, form=data, datasets=datasets(),
                                     purposes=[p.value for p in Purpose], report=report, wizard=True)
        app_form = ApplicationForm.model_validate(data)
        if draft:
            await call(C.update_draft, svc, actor, draft, app_form)
            case_id = draft
            if how == "submit":
                await call(S.act, svc, actor, case_id, "submit")
        elif how == "submit":
            case_id = (await call(S.submit_form, svc, actor, app_form)).case_id
        else:
            case_id = await call(S.create_draft, svc, actor, app_form)
        return portal.redirect(f"/cases/{case_id}")

    # ------------------------------------------------------------ cases

    @app.get("/cases", response_class=HTMLResponse)
    async def cases(request: Request, state: str = ""):
        actor = await portal.signed_in(request)
        found = await call(S.list_cases, svc, actor, state=state or None)
        return await portal.page(request, "cases.html", actor=actor, cases=found, state=state, states=list(State))

    @app.get("/cases/{case_id}", response_class=HTMLResponse)
    async def case_page(request: Request, case_id: str):
        actor = await portal.signed_in(request)
        page = await call(C.case_file, svc, actor, case_id)
        view, form, msgs = page.view, page.form, page.messages
        authority = page.role in ("handler", "decider", "controller", "auditor")
        estimates = await call(C.estimate_requests, svc, actor, case_id=case_id) if authority or \
            Role.CONTROLLER in actor.roles else []
        actions = [{"name": name, "label": ACTION_LABELS.get(name, name), "fields": _fields(name),
                    "description": ACTIONS[name].description}
                   for name in page.actions if name not in _NOT_BUTTONS]
        can_write = "remark" in page.actions
        decided = any(e.event in ("approved", "rejected") for e in view.history)
        statistics, can_produce = [], False
        if view.kind == "data_request" and view.state in (State.DELIVERED, State.ACTIVE, State.EXPIRED,
                                                          State.CLOSED):
            statistics = await call(A.requests_for_permit, svc, actor, case_id)
            can_produce = view.state in (State.DELIVERED, State.ACTIVE) and DR.STATISTICS.can("produce", actor)
        can_amend = actor.user_id == view.applicant_id and view.kind != "amendment" and \
            view.state in PERMIT_IN_FORCE
        dp_budget, can_set_budget = None, False
        if view.kind != "amendment" and any(e.event == "approved" for e in view.history):
            from secure_env.airlock import dp

            can_set_budget = dp.DP.can("set_budget", actor)
            try:
                dp_budget = await call(dp.budget, svc, actor, case_id)
            except ToisioError:
                dp_budget = None
        return await portal.page(request, "case.html", actor=actor, case=view, form=form, messages=msgs,
                                 estimates=estimates, actions=actions, field_labels=FIELD_LABELS,
                                 can_write=can_write, authority=authority, decided=decided,
                                 waiting_for=WAITING_FOR[view.state], registries=_registries_of(form),
                                 statistics=statistics, can_produce=can_produce, can_amend=can_amend,
                                 dp_budget=dp_budget, can_set_budget=can_set_budget)

    @app.post("/cases/{case_id}/dp-budget")
    async def case_dp_budget(request: Request, case_id: str):
        """The decider sets the permit's privacy budget (the DP query service charges every query to it)."""
        from secure_env.airlock import dp

        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        form = await request.form()
        try:
            epsilon = float(str(form.get("epsilon") or ""))
            delta = float(str(form.get("delta") or "0"))
        except ValueError as e:
            raise Invalid("epsilon and delta are numbers (for example 1.0 and 0)", code="bad_budget") from e
        if not (0 < epsilon <= 100 and 0 <= delta < 1):
            raise Invalid("epsilon must be above 0 and at most 100; delta at least 0 and below 1", code="bad_budget")
        await call(dp.set_budget, svc, actor, case_id, epsilon, delta)
        return portal.redirect(f"/cases/{case_id}#dp")

    @app.get("/cases/{case_id}/amend", response_class=HTMLResponse)
    async def amend_page(request: Request, case_id: str):
        """The permit holder's amendment form (validity or named users), prefilled from the permit; it is
        submitted to /apply like any application."""
        actor = await portal.signed_in(request)
        page = await call(C.case_file, svc, actor, case_id)
        base = page.form.model_dump(mode="json")
        form = {"kind": "amendment", "permit_id": case_id, "title": f"{page.view.title} (amendment)",
                **{k: base[k] for k in ("applicant", "organisation", "billing")}}
        return await portal.page(request, "amend.html", actor=actor, permit_id=case_id, form=form, report=None,
                                 case=page.view)

    @app.post("/cases/{case_id}/statistics")
    async def case_statistics(request: Request, case_id: str):
        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        request_id = await call(DR.produce_statistics, svc, actor, case_id)
        return portal.redirect(f"/outputs/{request_id}")

    @app.post("/cases/{case_id}/actions/{action}")
    async def case_action(request: Request, case_id: str, action: str):
        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        if action not in ACTION_BODIES or action in _NOT_BUTTONS:
            raise Invalid(f"unknown action {action!r}", code="unknown_action")
        fields = action_fields(await request.form())
        await call(S.act, svc, actor, case_id, action, **fields)
        return portal.redirect(f"/cases/{case_id}#history")

    @app.post("/cases/{case_id}/messages")
    async def case_message(request: Request, case_id: str):
        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        form = await request.form()
        text = str(form.get("text") or "").strip()
        public = str(form.get("public") or "true") != "false"
        await call(S.act, svc, actor, case_id, "remark", text=text, public=public)
        return portal.redirect(f"/cases/{case_id}#messages")

    @app.get("/cases/{case_id}/attachments/{sha256}")
    async def case_attachment(request: Request, case_id: str, sha256: str):
        actor = await portal.signed_in(request)
        ref, data = await call(C.read_attachment, svc, actor, case_id, sha256)
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": attachment_disposition(ref.filename)})

    @app.get("/cases/{case_id}/decision", response_class=HTMLResponse)
    async def case_decision(request: Request, case_id: str, lang: str = ""):
        actor = await portal.signed_in(request)
        d = await call(D.decision, svc, actor, case_id)
        return HTMLResponse(D.render_html(d, lang or portal.lang(request, actor)))

    @app.get("/cases/{case_id}/decision.pdf")
    async def case_decision_pdf(request: Request, case_id: str, lang: str = ""):
        actor = await portal.signed_in(request)
        d = await call(D.decision, svc, actor, case_id)
        lang = lang or portal.lang(request, actor)
        pdf = await call(D.render_pdf, d, lang)
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="decision-{case_id}-{lang}.pdf"'})

    # ------------------------------------------------------------ controllers

    @app.get("/estimates", response_class=HTMLResponse)
    async def estimates(request: Request):
        actor = await portal.signed_in(request)
        items = await call(C.estimate_requests, svc, actor)
        return await portal.page(request, "estimates.html", actor=actor, items=items)

    # ------------------------------------------------------------ output requests

    @app.get("/outputs", response_class=HTMLResponse)
    async def outputs(request: Request):
        actor = await portal.signed_in(request)
        queue = await call(A.checker_queue, svc, actor) if Role.OUTPUT_CHECKER in actor.roles else []
        mine = await call(A.requests_of, svc, actor)
        return await portal.page(request, "outputs.html", actor=actor, queue=queue, mine=mine)

    @app.get("/outputs/{request_id}", response_class=HTMLResponse)
    async def output_page(request: Request, request_id: str):
        actor = await portal.signed_in(request)
        view = await call(A.view, svc, actor, request_id)
        previews = {}
        for f in view["files"]:
            if f["kind"] in ("table", "text"):
                raw = await call(A.read_file, svc, actor, request_id, f["name"])
                previews[f["name"]] = _preview(raw, f)
        reviewer = await call(A.can_review, svc, actor, view["permit_id"], view["requester"])
        my_votes = {f["name"]: next((v for v in f["votes"] if v["reviewer"] == actor.user_id), None)
                    for f in view["files"]}
        return await portal.page(request, "output.html", actor=actor, r=view, previews=previews, reviewer=reviewer,
                                 my_votes=my_votes, is_requester=actor.user_id == view["requester"])

    @app.get("/outputs/{request_id}/files/{name}")
    async def output_file(request: Request, request_id: str, name: str):
        actor = await portal.signed_in(request)
        data = await call(A.read_file, svc, actor, request_id, name)
        media = "image/png" if name.lower().endswith(".png") else "image/svg+xml" if name.lower().endswith(
            ".svg") else "text/plain; charset=utf-8"
        return Response(data, media_type=media, headers={"Content-Security-Policy": "default-src 'none'",
                                                         "X-Content-Type-Options": "nosniff"})

    @app.get("/outputs/{request_id}/released/{name}")
    async def output_released(request: Request, request_id: str, name: str):
        actor = await portal.signed_in(request)
        data = await call(A.released_file, svc, actor, request_id, name)
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": attachment_disposition(name)})

    @app.post("/outputs/{request_id}/{step}")
    async def output_step(request: Request, request_id: str, step: str):
        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        form = await request.form()
        if step == "vote":
            await call(A.vote, svc, actor, request_id, str(form.get("file") or ""), str(form.get("decision") or ""),
                       str(form.get("comment") or ""))
        elif step == "submit_review":
            await call(A.submit_review, svc, actor, request_id)
        elif step == "decide":
            await call(A.decide, svc, actor, request_id, str(form.get("outcome") or ""))
        elif step == "release":
            await call(A.release, svc, actor, request_id)
        elif step == "submit":
            await call(A.submit, svc, actor, request_id)
        elif step == "withdraw":
            await call(A.withdraw, svc, actor, request_id)
        elif step == "group":
            await call(A.describe_group, svc, actor, request_id, str(form.get("group") or ""),
                       context=str(form.get("context") or ""), controls=str(form.get("controls") or ""))
        elif step == "comment":
            await call(A.comment, svc, actor, request_id, str(form.get("group") or ""), str(form.get("text") or ""),
                       str(form.get("visibility") or "public"))
        else:
            raise Invalid(f"unknown step {step!r}", code="unknown_action")
        return portal.redirect(f"/outputs/{request_id}")

    # ------------------------------------------------------------ analysts: workspaces and new requests

    @app.get("/workspaces", response_class=HTMLResponse)
    async def workspaces(request: Request):
        actor = await portal.signed_in(request)
        items = await call(_workspaces, svc, actor)
        return await portal.page(request, "workspaces.html", actor=actor, items=items,
                                 link=request.session.pop("workspace_link", None))

    @app.post("/workspaces/{permit_id}/{step}")
    async def workspace_step(request: Request, permit_id: str, step: str):
        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        if step == "start":
            await call(server.start, svc, actor, permit_id)
        elif step == "stop":
            await call(server.stop, svc, actor, permit_id, reason=f"stopped from the portal by {actor.user_id}")
        elif step == "link":
            token = await call(provision.issue_token, svc, actor, permit_id, actor.user_id)
            st = await call(server.status, svc, actor, permit_id)
            request.session["workspace_link"] = {"permit_id": permit_id, "token": token,
                                                 "url": f"{st.url}lab?token={token}" if st.url else None}
        else:
            raise Invalid(f"unknown step {step!r}", code="unknown_action")
        return portal.redirect("/workspaces")

    # ------------------------------------------------------------ imports (governed ingress)

    @app.get("/imports", response_class=HTMLResponse)
    async def imports_page(request: Request):
        """Import requests the user may see: a data steward decides those waiting; an analyst asks for files to
        come into their permits' workspaces."""
        from secure_env.workspace import ingress

        actor = await portal.signed_in(request)
        items = await call(ingress.list_imports, svc, actor)
        decidable = {r.import_id for r in items if r.state == ingress.REQUESTED and await call(
            _may_decide_import, svc, actor, r)}
        permits = [w["case"].case_id for w in await call(_workspaces, svc, actor)
                   if w["named"] and w["status"].exists]
        return await portal.page(request, "imports.html", actor=actor, items=sorted(
            items, key=lambda r: (r.state != ingress.REQUESTED, r.import_id)), decidable=decidable, permits=permits,
            max_mb=ingress.MAX_IMPORT_BYTES // (1024 * 1024))

    @app.post("/imports")
    async def request_import(request: Request):
        import tempfile
        from pathlib import Path

        from secure_env.workspace import ingress

        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        form = await request.form()
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str) or not upload.filename:
                raise Invalid("choose the file to import", code="file_missing")
            data = await upload.read(ingress.MAX_IMPORT_BYTES + 1)
            name = Path(upload.filename).name
            permit_id, purpose = str(form.get("permit_id") or ""), str(form.get("purpose") or "")
        finally:
            await form.close()
        if not ingress.is_plain_name(name):
            raise ingress.IngressError(f"{name!r} is not a plain file name (letters, digits, . _ -)", "bad_name")
        with tempfile.TemporaryDirectory(prefix="toisio-import-") as tmp:
            source = Path(tmp) / name
            source.write_bytes(data)
            await call(ingress.request_import, svc, actor, permit_id, source, purpose=purpose)
        return portal.redirect("/imports")

    @app.post("/imports/{import_id}/{decision}")
    async def decide_import(request: Request, import_id: str, decision: str):
        from secure_env.workspace import ingress

        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        if decision not in ("approve", "reject"):
            raise Invalid(f"unknown decision {decision!r}", code="unknown_action")
        form = await request.form()
        await call(ingress.decide_import, svc, actor, import_id, approve=decision == "approve",
                   reason=str(form.get("reason") or ""))
        return portal.redirect("/imports")

    @app.get("/workspaces/{permit_id}/outputs/new", response_class=HTMLResponse)
    async def new_output(request: Request, permit_id: str):
        actor = await portal.signed_in(request)
        found = await call(provision.files, svc, actor, permit_id)
        return await portal.page(request, "new_output.html", actor=actor, permit_id=permit_id, files=found)

    @app.post("/workspaces/{permit_id}/outputs/new")
    async def create_output(request: Request, permit_id: str):
        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        form = await request.form()
        chosen = [str(v) for v in form.getlist("pick")]
        if not chosen:
            raise Invalid("choose at least one file to release", code="no_files")
        request_id = await call(A.create_request, svc, actor, permit_id)
        root = (await call(provision.existing, svc, permit_id)).root.resolve()
        groups = []
        for i in chosen:  # each field is named after the file's place in the list, whichever files were picked
            rel = str(form.get(f"path_{i}") or "")
            path = (root / rel).resolve()
            if not rel or not path.is_relative_to(root):
                raise A.AirlockError(f"{rel}: outputs must come from the workspace", "outside_workspace")
            context = {"description": str(form.get(f"description_{i}") or ""),
                       "method": str(form.get(f"method_{i}") or ""),
                       "statistic": str(form.get(f"statistic_{i}") or "count")}
            index = str(form.get(f"index_{i}") or "").strip()
            if index:
                context["index"] = index
            exception = str(form.get(f"exception_{i}") or "").strip()
            if exception:
                context["exception"] = exception
            group = A.group_name(str(form.get(f"group_{i}") or ""))
            groups.append(group)
            await call(A.add_file, svc, actor, request_id, path, context, group=group,
                       supporting=bool(form.get(f"supporting_{i}")))
        shared_context = str(form.get("group_context") or "").strip()
        controls = str(form.get("controls") or "").strip()
        if shared_context or controls:
            for group in dict.fromkeys(groups):
                await call(A.describe_group, svc, actor, request_id, group, context=shared_context,
                           controls=controls)
        if form.get("action") == "submit":
            await call(A.submit, svc, actor, request_id)
        return portal.redirect(f"/outputs/{request_id}")

    # ------------------------------------------------------------ auditors

    @app.get("/audit", response_class=HTMLResponse)
    async def audit_page(request: Request, subject: str = "", action: str = "", by: str = "", offset: int = 0):
        actor = await portal.signed_in(request)
        from toisio.audit_access import search as audit_search

        found = await call(audit_search, svc, actor, subject=subject or None, action=action or None,
                           by=by or None, limit=50, offset=max(0, offset))
        return await portal.page(request, "audit.html", actor=actor, found=found, subject=subject, action=action,
                                 by=by, offset=max(0, offset), verification=None)

    @app.post("/audit/verify", response_class=HTMLResponse)
    async def audit_verify(request: Request):
        actor = await portal.signed_in(request)
        await portal.check_csrf(request)
        from toisio.app.auditing import verify_all
        from toisio.audit_access import search as audit_search

        v = await call(verify_all, svc, actor)
        found = await call(audit_search, svc, actor, limit=50)
        return await portal.page(request, "audit.html", actor=actor, found=found, subject="", action="", by="",
                                 offset=0, verification=v)

    @app.get("/indicators", response_class=HTMLResponse)
    async def indicators_page(request: Request):
        actor = await portal.signed_in(request)
        from permits.report import indicators

        rows = await call(indicators, svc, actor)
        return await portal.page(request, "indicators.html", actor=actor, rows=rows)

    @app.get("/indicators.png")
    async def indicators_png(request: Request):
        actor = await portal.signed_in(request)
        png = await call(_chart, svc, actor)
        return Response(png, media_type="image/png")


def _safe_next(nxt: str) -> str:
    """Only a path on this site (never an absolute URL elsewhere)."""
    return nxt if nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/"


def _preview(raw: bytes, f: dict) -> dict[str, Any]:
    """A table's rows with each flagged cell marked, or the start of a text."""
    text = raw[:200_000].decode("utf-8", errors="replace")
    if f["kind"] != "table":
        return {"text": text[:20_000]}
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text)))[:201]
    report = f.get("check_report") or {}
    flagged: dict[str, dict[str, Any]] = {}
    for cell in report.get("cells", []) if isinstance(report, dict) else []:
        if isinstance(cell, dict) and cell.get("status") != "pass":
            flagged[f"{cell.get('row')}|{cell.get('column')}"] = {
                "status": cell.get("status"), "reasons": [str(r) for r in cell.get("reasons", [])]}
    header = rows[0] if rows else []
    index = (f.get("context") or {}).get("index")
    at = header.index(index) if index in header else None
    table = []
    for i, r in enumerate(rows[1:]):
        label = r[at] if at is not None and at < len(r) else str(i)
        cells = []
        for j, value in enumerate(r):
            mark = flagged.get(f"{label}|{header[j]}") if j < len(header) and j != at else None
            cells.append({"value": value, "flag": mark})
        table.append(cells)
    return {"header": header, "rows": table, "flagged": len(flagged)}


class _Task(BaseModel):
    kind: str
    ref: str
    title: str
    what: str
    due: date | None = None
    status: str = ""
    href: str


def _tasks(svc, actor: Actor) -> list[_Task]:
    """What waits for this user, soonest deadline first."""
    tasks: list[_Task] = []
    for v in S.list_cases(svc, actor):
        mine = v.applicant_id == actor.user_id or actor.user_id in v.members
        waits = WAITING_FOR[v.state]
        if mine and waits == "applicant":
            tasks.append(_Task(kind="case", ref=v.case_id, title=v.title, what=v.state.value,
                               href=f"/cases/{v.case_id}"))
    if actor.roles & {Role.HANDLER, Role.DECIDER}:
        for q in S.queue(svc, actor, all_handlers=True):
            waits = q.waiting_for
            if (waits == "handler" and Role.HANDLER in actor.roles) or \
                    (waits == "decider" and Role.DECIDER in actor.roles):
                tasks.append(_Task(kind="case", ref=q.case_id, title=q.title, what=q.state, due=q.deadline,
                                   status=q.status, href=f"/cases/{q.case_id}"))
    if Role.CONTROLLER in actor.roles:
        for e in C.estimate_requests(svc, actor):
            if not e.answered:
                tasks.append(_Task(kind="estimate", ref=e.case_id, title=f"{e.title} ({e.registry})",
                                   what="estimates_requested", due=e.due_on, href=f"/cases/{e.case_id}"))
    if Role.OUTPUT_CHECKER in actor.roles:
        for r in A.checker_queue(svc, actor):
            tasks.append(_Task(kind="output", ref=r["request_id"], title=r["permit_id"], what=r["state"],
                               href=f"/outputs/{r['request_id']}"))
    for r in A.requests_of(svc, actor):
        if r["requester"] == actor.user_id and r["state"] in ("pending", "returned"):
            tasks.append(_Task(kind="output", ref=r["request_id"], title=r["permit_id"], what=r["state"],
                               href=f"/outputs/{r['request_id']}"))
    return sorted(tasks, key=lambda t: (t.due or date.max, t.ref))


def _may_decide_import(svc, actor: Actor, req) -> bool:
    from secure_env.workspace import ingress

    try:
        ingress.check_can_decide(svc, actor, req)
    except ToisioError:
        return False
    return True


def _workspaces(svc, actor: Actor) -> list[dict[str, Any]]:
    """The workspaces of the permits the user is named on (or all, for handlers), with the DP budget left."""
    from secure_env.airlock import dp

    out = []
    for v in S.list_cases(svc, actor):
        if v.kind != "data_permit" or v.state not in (State.DELIVERED, State.ACTIVE, State.EXPIRED):
            continue
        if actor.user_id not in v.members and Role.HANDLER not in actor.roles:
            continue
        try:
            st = server.status(svc, actor, v.case_id)
        except ToisioError:
            continue
        try:
            budget = dp.budget(svc, actor, v.case_id)
        except ToisioError:
            budget = None
        out.append({"case": v, "status": st, "budget": budget, "named": actor.user_id in v.members})
    return out


def _chart(svc, actor: Actor) -> bytes:
    import tempfile
    from pathlib import Path

    from permits.report import build, check_can_see_indicators, write

    check_can_see_indicators(actor)
    with tempfile.TemporaryDirectory() as tmp:
        write(build(svc), Path(tmp))
        return (Path(tmp) / "indicators.png").read_bytes()


__all__ = ["register", "Report"]
