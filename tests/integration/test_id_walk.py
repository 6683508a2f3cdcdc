"""One user cannot see another's case, file, message or output by changing an id in a URL: every GET route
of the API and of the portal that takes an id is walked with the ids of alice's case, attachment,
workspace and released output request, as a signed-in user who has nothing to do with them."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount

from tests.factories import (
    PortalUser,
    make_output_request,
    make_service,
    make_staff,
    make_token,
    plan_sha256,
    portal_login,
    serve_in_thread,
)
from toisio.app.api import create_app

#: routes anyone may read (the catalogue, the service's health, the API's own documentation)
PUBLIC = re.compile(r"^/(api/v1/(catalogue|health)|docs|redoc|openapi|static|api/docs-static|login|catalogue)")


def _get_routes(app) -> list[str]:
    """Every GET path with an id: the API's from its OpenAPI document, the portal's from its routes."""
    out = [p for p, ops in app.openapi()["paths"].items() if "get" in ops and "{" in p]
    for route in app.routes:
        if isinstance(route, Mount) and hasattr(route.app, "routes"):
            out += [r.path for r in route.app.routes
                    if isinstance(r, APIRoute) and "GET" in r.methods and "{" in r.path]
    return out


@pytest.fixture(scope="module")
def alices_things(tmp_path_factory):
    svc = make_service(tmp_path_factory.mktemp("idwalk") / "home")
    staff = make_staff(svc)
    request_id, permit = make_output_request(svc, staff, state="released")
    ids = {"case_id": permit, "permit_id": permit, "request_id": request_id, "sha256": plan_sha256(),
           "name": "table.csv", "dataset_id": "hilmo", "analyst": "bob", "token_id": "tok1", "import_id": "IMP-1"}
    eve = PortalUser(svc, "eve")
    return svc, ids, eve


def _fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


def test_every_get_route_with_an_id_refuses_a_stranger(alices_things):
    svc, ids, eve = alices_things
    app = create_app(svc)
    routes = sorted(set(_get_routes(app)))
    assert len(routes) >= 20, routes
    token = make_token(svc, "eve")
    seen = []
    with serve_in_thread(app) as root, httpx.Client(base_url=root, timeout=30) as api, \
            httpx.Client(base_url=root, timeout=30) as browser:
        assert portal_login(browser, eve).status_code == 303
        for path in routes:
            if PUBLIC.match(path):
                continue
            url = _fill(path, ids)
            client, headers = (api, {"Authorization": f"Bearer {token}"}) if path.startswith("/api/") else (browser, {})
            r = client.get(url, headers=headers, follow_redirects=False)
            seen.append(path)
            assert r.status_code in (403, 404), f"{url} answered {r.status_code} to a stranger: {r.text[:300]}"
            assert ids["case_id"] not in r.text or r.status_code == 403 and "may" in r.text.lower() \
                or path.startswith("/api/"), f"{url} showed the id's content"
        # the same ids are real: their owner reads them
        own = {"Authorization": f"Bearer {make_token(svc, 'alice')}"}
        for path in ("/api/v1/cases/{case_id}", "/api/v1/cases/{case_id}/attachments/{sha256}",
                     "/api/v1/outputs/{request_id}/released/{name}", "/api/v1/cases/{case_id}/messages"):
            assert api.get(_fill(path, ids), headers=own).status_code == 200, path
    assert any(p.startswith("/cases/") for p in seen) and any(p.startswith("/api/v1/outputs/") for p in seen)
