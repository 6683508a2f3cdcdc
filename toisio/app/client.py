"""The command line's way to the REST API: over HTTP to ``TOISIO_API_URL`` when one is configured, otherwise
to the same API application run in-process.  Either way the request carries the signed-in user's token
and the API authenticates it; the command line holds no rules and never names who acts.
"""

from __future__ import annotations

from typing import Any

import httpx

from toisio.errors import ToisioError, Unavailable


class ApiError(ToisioError):
    """An error the API answered with (its code, status and message, as the API gave them)."""


class _Remote:
    """The API over HTTP; one connection per call (a command makes a handful), closed at once."""

    def __init__(self, url: str, headers: dict[str, str]):
        self._url, self._headers = url, headers

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        with httpx.Client(base_url=self._url, headers=self._headers, timeout=60) as client:
            return client.request(method, url, **kwargs)

    def close(self) -> None:
        pass


class _InProcess:
    """The API application called in this process through httpx's ASGI transport (one event loop per call)."""

    def __init__(self, app, headers: dict[str, str]):
        self._app, self._headers = app, headers

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        import asyncio

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self._app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://in-process",
                                         headers=self._headers) as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(go())

    def close(self) -> None:
        pass


class ApiClient:
    """A small client for the REST API: ``get`` / ``post`` return the decoded JSON or raise :class:`ApiError`."""

    def __init__(self, svc, token: str):
        headers = {"Authorization": f"Bearer {token}"}
        url = svc.settings.api_url.rstrip("/")
        if url:
            self.where = url
            self._http = _Remote(url, headers)
        else:
            from toisio.app.api import create_app

            self.where = "in-process"
            self._http = _InProcess(create_app(svc), headers)

    def _call(self, method: str, path: str, **kwargs) -> Any:
        try:
            r = self._http.request(method, "/api/v1" + path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the API at {self.where} did not answer: {exc}", code="api_unreachable") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code >= 400:
            err = (body or {}).get("error") if isinstance(body, dict) else None
            if not err:
                raise ApiError(f"the API answered {r.status_code}", code="api_error", http_status=r.status_code)
            raise ApiError(err.get("message", ""), code=err.get("code", "api_error"), http_status=r.status_code)
        return body

    def get(self, path: str, **params) -> Any:
        return self._call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, json: Any = None, **params) -> Any:
        return self._call("POST", path, json=json, params={k: v for k, v in params.items() if v is not None})

    def put(self, path: str, json: Any = None) -> Any:
        return self._call("PUT", path, json=json)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)

    def close(self) -> None:
        self._http.close()


def api_client(svc) -> ApiClient:
    """A client authenticated as the signed-in user (``toisio login`` or ``TOISIO_TOKEN``)."""
    from toisio.cli_auth import stored_token
    from toisio.errors import Unauthenticated

    token = stored_token()
    if not token:
        raise Unauthenticated("you are not signed in: run `toisio login` (or set TOISIO_TOKEN)",
                              code="unauthenticated")
    return ApiClient(svc, token)
