"""The catalogue's REST routes: public, so a researcher can browse before signing in or applying.

``/api/v1/catalogue`` lists the datasets (searchable, filtered by purpose), ``/api/v1/catalogue/{id}``
gives one with its variables, and ``/api/v1/catalogue.ttl`` / ``.jsonld`` export the whole catalogue as
HealthDCAT-AP for harvesting (HealthData@EU).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from catalogue import dcat
from catalogue.datasets import Dataset, dataset, search


def catalogue_router() -> APIRouter:
    app = APIRouter(tags=["catalogue"])

    @app.get("/api/v1/catalogue")
    def datasets(q: Annotated[str, Query(max_length=200, description="text to look for, any language")] = "",
                 purpose: str | None = None) -> list[Dataset]:
        """The datasets available for secondary use."""
        return list(search(q, purpose=purpose))

    @app.get("/api/v1/catalogue.ttl", response_class=Response,
             responses={200: {"content": {"text/turtle": {}}}})
    def turtle() -> Response:
        """The catalogue as HealthDCAT-AP in Turtle."""
        return Response(dcat.export("turtle"), media_type="text/turtle; charset=utf-8")

    @app.get("/api/v1/catalogue.jsonld", response_class=Response,
             responses={200: {"content": {"application/ld+json": {}}}})
    def jsonld() -> Response:
        """The catalogue as HealthDCAT-AP in JSON-LD."""
        return Response(dcat.export("json-ld"), media_type="application/ld+json")

    @app.get("/api/v1/catalogue/{dataset_id}")
    def one(dataset_id: str) -> Dataset:
        """One dataset with its variables, their types and code systems."""
        return dataset(dataset_id)

    return app
