"""The dataset catalogue: generated from the registry contracts, exported as valid HealthDCAT-AP."""

from __future__ import annotations

import json

import pytest
from rdflib import Graph, URIRef
from rdflib.namespace import DCAT, DCTERMS, RDF

from catalogue import dcat
from catalogue.datasets import LANGS, UnknownDataset, dataset, datasets, search
from catalogue.registries import FHIR_REGISTRIES, REGISTRIES, load_schema
from permits.application import Purpose


def test_every_registry_contract_is_in_the_catalogue_with_its_variables():
    assert [d.id for d in datasets()] == list(REGISTRIES)
    for d in datasets():
        schema = load_schema(d.id)
        assert d.variable_names == tuple(schema.names)
        assert d.controller == schema.controller
        for v, c in zip(d.variables, schema.columns, strict=True):
            assert (v.type, v.nullable, v.code_system) == (c.type, c.nullable, c.code_system)
        assert d.coverage.start < d.coverage.end
        assert 0 < d.individuals <= d.records
        for lang in LANGS:
            assert d.title.get(lang) and d.description.get(lang) and getattr(d.keywords, lang)


def test_every_purpose_named_in_the_catalogue_is_a_purpose_of_the_act():
    for d in datasets():
        assert d.purposes and set(d.purposes) <= {p.value for p in Purpose}


def test_search_finds_by_any_language_and_filters_by_purpose():
    assert [d.id for d in search("syöpä")] == ["cancer"]
    assert [d.id for d in search("Cancerregistret")] == ["cancer"]
    assert "kela_purchases" in [d.id for d in search("atc")]
    assert [d.id for d in search("", purpose="knowledge_management")] == ["population", "hilmo", "avohilmo",
                                                                        *FHIR_REGISTRIES]
    assert search("no such thing anywhere") == ()
    with pytest.raises(UnknownDataset, match="no dataset 'hilmoo'"):
        dataset("hilmoo")


def test_the_export_conforms_to_the_healthdcat_ap_shapes():
    conforms, report = dcat.validate()
    assert conforms, report


MANDATORY = [DCTERMS.title, DCTERMS.description, DCTERMS.identifier, DCTERMS.accessRights,
             dcat.DCATAP.applicableLegislation, DCAT.contactPoint, DCAT.distribution, DCAT.keyword, DCAT.theme,
             DCTERMS.type, DCTERMS.provenance, dcat.HEALTH.healthCategory, dcat.HEALTH.hasStructuredData,
             dcat.HEALTH.hdab]


@pytest.mark.parametrize("prop", MANDATORY, ids=lambda p: p.split("/")[-1].split("#")[-1])
def test_a_dataset_missing_a_mandatory_property_fails_validation(prop):
    g = dcat.graph()
    hilmo = URIRef(dcat.BASE + "hilmo")
    g.remove((hilmo, prop, None))
    conforms, report = dcat.validate(g)
    assert not conforms
    assert "hilmo" in report


def test_public_access_rights_or_structured_data_without_variables_fail():
    g = dcat.graph()
    hilmo = URIRef(dcat.BASE + "hilmo")
    g.set((hilmo, DCTERMS.accessRights, URIRef("http://publications.europa.eu/resource/authority/access-right/PUBLIC")))
    assert not dcat.validate(g)[0]
    g = dcat.graph()
    g.remove((hilmo, dcat.HEALTH.hasVariables, None))
    conforms, report = dcat.validate(g)
    assert not conforms and "hasVariables" in report


def test_json_ld_and_turtle_carry_the_same_graph():
    turtle, jsonld = dcat.export("turtle"), dcat.export("json-ld")
    a, b = Graph().parse(data=turtle, format="turtle"), Graph().parse(data=jsonld, format="json-ld")
    assert len(a) == len(b) > 0
    assert len(list(a.subjects(RDF.type, DCAT.Dataset))) == len(REGISTRIES)
    json.loads(jsonld)
    with pytest.raises(ValueError, match="unknown format"):
        dcat.export("xml")


def test_personal_data_is_declared_with_dpv():
    g = dcat.graph()
    population = URIRef(dcat.BASE + "population")
    declared = set(g.objects(population, dcat.DPV.hasPersonalData))
    assert dcat.DPVPD.BirthDate in declared and dcat.DPVPD.Gender in declared
