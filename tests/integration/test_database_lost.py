"""A database connection lost under the service (a restart, a failover): the request that finds it gets a 503
with a code saying so (and that a change sent may need checking), and the next request works on fresh connections."""

import httpx
import pytest
import sqlalchemy as sa

from tests.factories import PortalUser, make_case, make_staff, make_token, portal_login, serve_in_thread
from toisio.app.api import create_app

pytestmark = pytest.mark.integration


def _drop_every_connection(svc) -> int:
    """What a database restart does to the service's pooled connections."""
    url = svc.engine.url
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        n = conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": url.database}).scalar()
    admin.dispose()
    return n


def test_a_lost_connection_is_a_503_and_the_next_request_reconnects(svc):
    if svc.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no connections to lose")
    staff = make_staff(svc)
    case = make_case(svc, staff, state="submitted").case_id
    token = make_token(svc, "hanna")
    with serve_in_thread(create_app(svc)) as root, httpx.Client(
            base_url=root, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        assert c.get(f"/api/v1/cases/{case}").status_code == 200
        assert _drop_every_connection(svc) >= 1
        first = c.get(f"/api/v1/cases/{case}")
        assert first.status_code == 503, first.text
        assert first.json()["error"]["code"] == "database_unavailable"
        assert "try again" in first.json()["error"]["message"]
        for _ in range(3):
            assert c.get(f"/api/v1/cases/{case}").status_code == 200


def test_the_portal_says_so_in_its_own_page(svc):
    if svc.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no connections to lose")
    user = PortalUser(svc, "alice")
    with serve_in_thread(create_app(svc)) as root, httpx.Client(base_url=root, timeout=10) as c:
        assert portal_login(c, user).status_code == 303
        assert c.get("/cases").status_code == 200
        assert _drop_every_connection(svc) >= 1
        page = c.get("/cases")
        assert page.status_code == 503 and "database_unavailable" in page.text
        assert page.headers["content-type"].startswith("text/html") and "Traceback" not in page.text
        assert "Try again" in page.text and "yritä uudelleen" in page.text and "försök igen" in page.text
        assert c.get("/cases").status_code == 200  # still signed in: the session is kept in the database


def test_a_portal_page_that_loses_the_database_says_so_in_the_layout(tmp_path, monkeypatch):
    """Lost inside a page (the session already loaded): the portal's own error page, in the user's layout."""
    from sqlalchemy.exc import OperationalError

    from tests.factories import make_service
    from toisio.app.portal import pages

    svc = make_service(tmp_path / "home")
    user = PortalUser(svc, "alice")

    def lost(*_a, **_k):
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"),
                               connection_invalidated=True)

    with serve_in_thread(create_app(svc)) as root, httpx.Client(base_url=root, timeout=10,
                                                                headers={"Accept-Language": "sv"}) as c:
        assert portal_login(c, user).status_code == 303
        monkeypatch.setattr(pages, "search", lost)
        page = c.get("/catalogue")
        assert page.status_code == 503 and "database_unavailable" in page.text
        assert "Anslutningen till databasen bröts: försök igen" in page.text  # the user's language
        assert 'href="/static/' in page.text and "Traceback" not in page.text  # the portal's layout
        monkeypatch.undo()
        assert c.get("/catalogue").status_code == 200  # the same keep-alive connection
