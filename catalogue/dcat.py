"""The catalogue as HealthDCAT-AP (release 8): an RDF graph, JSON-LD and Turtle.

Every dataset is NON_PUBLIC (pseudonymised individual-level health data, reached only through a
permit), so it carries the mandatory set for non-public datasets: title, description, identifier,
access rights, applicable legislation (the EHDS regulation's ELI), contact point, distribution,
keywords, theme, type, provenance, health category, ``hasStructuredData`` with its variables as a
CSVW table group, and the health data access body.  ``dpv:hasPersonalData`` says which personal data
it holds.  ``tests/unit/test_catalogue.py`` validates the export with pyshacl against the pinned
HealthDCAT-AP shapes in ``catalogue/shapes/``.
"""

from __future__ import annotations

from importlib import resources

from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, RDFS, SH, XSD

from catalogue.datasets import LANGS, Dataset, datasets, hdab

DCATAP = Namespace("http://data.europa.eu/r5r/")
HEALTH = Namespace("http://healthdataportal.eu/ns/health#")
CSVW = Namespace("http://www.w3.org/ns/csvw#")
CV = Namespace("http://data.europa.eu/m8g/")
DPV = Namespace("https://w3id.org/dpv#")
DPVPD = Namespace("https://w3id.org/dpv/dpv-pd#")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
NON_PUBLIC = URIRef("http://publications.europa.eu/resource/authority/access-right/NON_PUBLIC")
THEME_HEALTH = URIRef("http://publications.europa.eu/resource/authority/data-theme/HEAL")
TYPE_PERSONAL = URIRef("http://publications.europa.eu/resource/authority/dataset-type/PERSONAL_DATA")
FILE_CSV = URIRef("http://publications.europa.eu/resource/authority/file-type/CSV")
FILE_PARQUET = URIRef("http://publications.europa.eu/resource/authority/file-type/PARQUET")
CATEGORIES = "https://hdeu-dcat.data.health.europa.eu/resource/authority/healthcategories/"
BASE = "https://toisio.example/catalogue/"

# which personal data each kind of variable is (dpv-pd); a date column is a date of an event about a person
_PERSONAL = {"sex": DPVPD.Gender, "birth_date": DPVPD.BirthDate, "municipality": DPVPD.Location,
             "death_date": DPVPD.HealthHistory}
_CSVW_TYPES = {"hetu": "string", "date": "date", "int": "integer", "decimal": "decimal", "code": "string",
               "reference": "string",
               "string": "string"}


def _texts(g: Graph, node, prop, texts) -> None:
    for lang in LANGS:
        g.add((node, prop, Literal(texts.get(lang), lang=lang)))


def _contact_point(g: Graph, email: str, page: str) -> BNode:
    cp = BNode()
    g.add((cp, RDF.type, CV.ContactPoint))
    g.add((cp, CV.email, Literal(email.removeprefix("mailto:"))))
    g.add((cp, CV.contactPage, URIRef(page)))
    return cp


def _agent(g: Graph, iri: str, name: str, email: str, page: str) -> URIRef:
    agent = URIRef(iri)
    g.add((agent, RDF.type, FOAF.Agent))
    g.add((agent, FOAF.name, Literal(name, lang="en")))
    g.add((agent, CV.contactPoint, _contact_point(g, email, page)))
    return agent


def _dataset(g: Graph, d: Dataset, hdab_node: URIRef, legislation: URIRef) -> URIRef:
    ds = URIRef(BASE + d.id)
    g.add((ds, RDF.type, DCAT.Dataset))
    _texts(g, ds, DCTERMS.title, d.title)
    _texts(g, ds, DCTERMS.description, d.description)
    g.add((ds, DCTERMS.identifier, Literal(d.id)))
    g.add((ds, DCTERMS.accessRights, NON_PUBLIC))
    g.add((ds, DCATAP.applicableLegislation, legislation))
    g.add((ds, DCAT.theme, THEME_HEALTH))
    g.add((ds, DCTERMS.type, TYPE_PERSONAL))
    for lang in LANGS:
        for k in getattr(d.keywords, lang):
            g.add((ds, DCAT.keyword, Literal(k, lang=lang)))
    contact = BNode()
    g.add((contact, RDF.type, VCARD.Kind))
    g.add((contact, VCARD.hasEmail, URIRef(d.controller_email)))
    g.add((ds, DCAT.contactPoint, contact))
    publisher = _agent(g, BASE + "controller/" + d.id, d.controller, d.controller_email, BASE + d.id)
    g.add((ds, DCTERMS.publisher, publisher))
    g.add((ds, HEALTH.hdab, hdab_node))
    for c in d.health_categories:
        g.add((ds, HEALTH.healthCategory, URIRef(CATEGORIES + c)))
    provenance = BNode()
    g.add((provenance, RDF.type, DCTERMS.ProvenanceStatement))
    g.add((provenance, RDFS.label, Literal(f"Extracted by {d.controller} for each permit; validated against the "
                                            f"extract contract, minimised to the permit's scope and pseudonymised "
                                            f"with a per-permit key by the access body", lang="en")))
    g.add((ds, DCTERMS.provenance, provenance))
    period = BNode()
    g.add((period, RDF.type, DCTERMS.PeriodOfTime))
    g.add((period, DCAT.startDate, Literal(d.coverage.start, datatype=XSD.date)))
    g.add((period, DCAT.endDate, Literal(d.coverage.end, datatype=XSD.date)))
    g.add((ds, DCTERMS.temporal, period))
    g.add((ds, HEALTH.numberOfRecords, Literal(d.records, datatype=XSD.nonNegativeInteger)))
    g.add((ds, HEALTH.numberOfUniqueIndividuals, Literal(d.individuals, datatype=XSD.nonNegativeInteger)))
    g.add((ds, HEALTH.minTypicalAge, Literal(d.ages[0], datatype=XSD.nonNegativeInteger)))
    g.add((ds, HEALTH.maxTypicalAge, Literal(d.ages[1], datatype=XSD.nonNegativeInteger)))
    for v in d.variables:
        if v.name in _PERSONAL:
            g.add((ds, DPV.hasPersonalData, _PERSONAL[v.name]))
    g.add((ds, DPV.hasPersonalData, DPVPD.HealthRecord))
    for p in d.purposes:
        purpose = URIRef(BASE + "purpose/" + p)
        g.add((purpose, RDF.type, DPV.Purpose))
        g.add((purpose, DCTERMS.description, Literal(p.replace("_", " "), lang="en")))
        g.add((ds, DPV.hasPurpose, purpose))
    g.add((ds, HEALTH.hasStructuredData, Literal(True)))
    g.add((ds, HEALTH.hasVariables, _variables(g, d)))
    for fmt, suffix in ((FILE_PARQUET, "parquet"), (FILE_CSV, "csv")):
        dist = URIRef(f"{BASE}{d.id}/distribution/{suffix}")
        g.add((dist, RDF.type, DCAT.Distribution))
        g.add((dist, DCTERMS.format, fmt))
        g.add((dist, DCATAP.applicableLegislation, legislation))
        g.add((dist, DCAT.accessURL, URIRef(hdab().page)))
        g.add((dist, DCTERMS.title, Literal(f"Pseudonymised extract in the permit's secure workspace ({suffix})",
                                            lang="en")))
        g.add((ds, DCAT.distribution, dist))
    return ds


def _variables(g: Graph, d: Dataset) -> BNode:
    group, table = BNode(), BNode()
    g.add((group, RDF.type, CSVW.TableGroup))
    g.add((group, DCTERMS.title, Literal(f"{d.id} extract", lang="en")))
    g.add((group, CSVW.table, table))
    g.add((table, RDF.type, CSVW.Table))
    g.add((table, DCTERMS.title, Literal(d.id)))
    for v in d.variables:
        col = BNode()
        g.add((col, RDF.type, CSVW.Column))
        g.add((col, CSVW.name, Literal(v.name)))
        g.add((col, CSVW.title, Literal(v.name.replace("_", " "), lang="en")))
        desc = v.description or v.code_system_description or v.name.replace("_", " ")
        if v.direct_identifier:
            desc += " (replaced by a per-permit pseudonym before delivery)"
        g.add((col, DCTERMS.description, Literal(desc, lang="en")))
        g.add((col, CSVW.datatype, Literal(_CSVW_TYPES[v.type])))
        g.add((table, CSVW.column, col))
    return group


def graph() -> Graph:
    """The whole catalogue as one RDF graph."""
    g = Graph()
    for prefix, ns in (("dcat", DCAT), ("dct", DCTERMS), ("dcatap", DCATAP), ("healthdcatap", HEALTH),
                       ("csvw", CSVW), ("cv", CV), ("dpv", DPV), ("dpv-pd", DPVPD), ("vcard", VCARD),
                       ("foaf", FOAF)):
        g.bind(prefix, ns)
    h = hdab()
    legislation = URIRef(h.legislation)
    hdab_node = _agent(g, BASE + "hdab", h.name, h.email, h.page)
    catalog = URIRef(BASE)
    g.add((catalog, RDF.type, DCAT.Catalog))
    g.add((catalog, DCTERMS.title, Literal("Toisio dataset catalogue", lang="en")))
    g.add((catalog, DCTERMS.description, Literal("Registries available for secondary use through Toisio", lang="en")))
    g.add((catalog, DCATAP.applicableLegislation, legislation))
    g.add((catalog, DCTERMS.publisher, hdab_node))
    for d in datasets():
        g.add((catalog, DCAT.dataset, _dataset(g, d, hdab_node, legislation)))
    return g


def export(fmt: str = "turtle") -> str:
    """The catalogue serialised as ``turtle`` or ``json-ld``."""
    if fmt not in ("turtle", "json-ld"):
        raise ValueError(f"unknown format {fmt!r}; use turtle or json-ld")
    return graph().serialize(format=fmt)


def shapes() -> Graph:
    """The pinned HealthDCAT-AP shapes and Toisio's subset of the DCAT-AP core shapes they rely on."""
    g = Graph()
    folder = resources.files("catalogue").joinpath("shapes")
    for name in ("healthdcat-ap-r8-non-public-shapes.ttl", "dcat-ap-3-core-subset.ttl"):
        g.parse(data=folder.joinpath(name).read_text("utf-8"), format="turtle")
    # The release's "hasStructuredData true needs hasVariables" rule is written as an sh:property with no
    # sh:path (an sh:or over the node), which pyshacl refuses as malformed.  Applied as what it means, a
    # node constraint on the same target class, with its message and severity.
    for shape, _p, prop in list(g.triples((None, SH.property, None))):
        if (prop, SH.path, None) in g:
            continue
        g.remove((shape, SH.property, prop))
        g.add((prop, RDF.type, SH.NodeShape))
        for target in g.objects(shape, SH.targetClass):
            g.add((prop, SH.targetClass, target))
    return g


def validate(data: Graph | None = None) -> tuple[bool, str]:
    """SHACL validation of ``data`` (the catalogue by default) against :func:`shapes`: (conforms, report)."""
    import pyshacl

    conforms, _graph, text = pyshacl.validate(data if data is not None else graph(), shacl_graph=shapes(),
                                              inference="none", advanced=True, allow_warnings=True)
    return bool(conforms), text
