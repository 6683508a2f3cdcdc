"""Kanta's FHIR R4 bulk data as a source beside the registries' CSV extracts.

A bulk export (FHIR Bulk Data Access, ``$export``) is a directory: ``manifest.json`` lists the NDJSON
files of each resource type (``output: [{type, url, count}]``), and each line of those files is one
resource.  A registry contract of layout ``fhir_ndjson`` (``catalogue/schemas/kanta_*.yaml``) names the
resource type it reads and, for each column, the element it comes from as a small path:

- ``birthDate``, ``period.start``: nested elements;
- ``identifier[system=urn:oid:1.2.246.21].value``: the first item of a list whose ``system`` is the one given;
- ``onsetDateTime|recordedDate``: alternatives, the first present wins.

Every value is read as JSON text and then checked by the same rules as a CSV field
(:func:`pseudonymise.validate.validate_fields`), so a resource is valid, or quarantined with the first rule
it breaks, exactly as a registry row is.  Before those rules come the resource's own:

- ``invalid_json``: the line is not one JSON object, or an element has the wrong JSON shape (an object
  where FHIR has a list);
- ``wrong_resource_type``: ``resourceType`` is not the file's type;
- ``unresolved_reference``: the ``subject`` neither refers to a Patient of the same export (``Patient/<id>``,
  or a URL ending so) nor carries the identity code as a logical reference
  (``subject.identifier`` with system ``urn:oid:1.2.246.21``).

The identity code of a resource other than Patient is its Patient's, so it links with the registries and
is pseudonymised with the permit's key like theirs.  ``reference`` columns (an encounter's id, a
condition's encounter) are checked to be ``<Type>/<id>`` of their target type and are delivered keyed-hashed
with the permit's key, so the delivered datasets still join on them.

The hot path is Spark's own JSON reader (``from_json`` with a schema built from the contract's paths) and
native expressions; no Python runs per row.  fhir.resources' R4B models are the reference for what FHIR
itself requires of each resource (``tests/unit/test_fhir.py`` checks the contracts against them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, StringType, StructField, StructType

from catalogue.registries import RegistrySchema
from pseudonymise import hetu as H
from pseudonymise.files import GZIP_MAGIC, ExtractFileError

HETU_SYSTEM = H.FHIR_SYSTEM
MANIFEST = "manifest.json"
ID_PATTERN = r"[A-Za-z0-9\-.]{1,64}"  # FHIR R4 id
_CORRUPT = "_corrupt"
_STEP = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(?:\[system=([^\]]+)\])?$")


@dataclass(frozen=True)
class Step:
    """One step of an element path: an element, and for a list the ``system`` its item must have."""

    name: str
    system: str | None = None


Path_ = tuple[Step, ...]


def parse_path(text: str) -> tuple[Path_, ...]:
    """The alternatives of an element path (see the module docstring); ``ValueError`` naming the bad part."""
    alternatives = []
    for alt in text.split("|"):
        # a system may hold dots (urn:oid:1.2.246.21): split on the dots outside brackets
        parts = re.findall(r"[^.\[]+(?:\[[^\]]*\])?", alt.strip())
        if not parts or ".".join(parts) != alt.strip():
            raise ValueError(f"FHIR path {text!r}: cannot read {alt!r}")
        steps = []
        for part in parts:
            m = _STEP.match(part)
            if not m:
                raise ValueError(f"FHIR path {text!r}: {part!r} is not an element name, or name[system=...]")
            steps.append(Step(m.group(1), m.group(2)))
        alternatives.append(tuple(steps))
    return tuple(alternatives)


def _column_paths(schema: RegistrySchema) -> dict[str, tuple[Path_, ...]]:
    return {c.name: parse_path(c.fhir) for c in schema.columns if c.fhir}


def _subject_paths() -> tuple[Path_, ...]:
    return (parse_path("subject.reference")[0], parse_path("subject.identifier.system")[0],
            parse_path("subject.identifier.value")[0])


def _tree(paths: list[Path_]) -> dict:
    """Merge paths into a tree: name -> (is a list filtered by system, children)."""
    root: dict = {}
    for path in paths:
        node = root
        for i, step in enumerate(path):
            is_list = step.system is not None
            kind, children = node.setdefault(step.name, (is_list, {}))
            if kind != is_list:
                raise ValueError(f"FHIR element {step.name!r} is read both as a list and as a single element")
            if is_list:
                children.setdefault("system", (False, {}))
            if i == len(path) - 1 and children and not is_list:
                raise ValueError(f"FHIR element {step.name!r} is read both as a value and as an element")
            node = children
    return root


def _spark_type(node: dict) -> StructType:
    fields = []
    for name, (is_list, children) in sorted(node.items()):
        t: DataType = _spark_type(children) if children else StringType()
        fields.append(StructField(name, ArrayType(t) if is_list else t))
    return StructType(fields)


def resource_schema(schema: RegistrySchema) -> StructType:
    """The Spark schema ``from_json`` reads a resource with: only the elements the contract reads, all leaves
    as text, plus the raw line of a record that does not fit (``_corrupt``)."""
    paths = [p for alts in _column_paths(schema).values() for p in alts]
    paths += [(Step("resourceType"),), (Step("id"),)]
    if schema.resource != "Patient":
        paths += list(_subject_paths())
    struct = _spark_type(_tree(paths))
    return StructType([*struct.fields, StructField(_CORRUPT, StringType())])


def _value(root: Column, path: Path_) -> Column:
    col = root
    for step in path:
        col = col.getField(step.name)
        if step.system is not None:
            col = _first_of_system(col, step.system)
    return col


def _first_of_system(items: Column, system: str) -> Column:
    """The first item of a list of Codings or Identifiers whose ``system`` is ``system`` (null if none)."""
    return F.get(F.filter(items, lambda item: item.getField("system") == F.lit(system)), 0)


def path_value(root: Column, alternatives: tuple[Path_, ...]) -> Column:
    """The first present value of the alternatives, as text (empty text counts as absent)."""
    values = [F.nullif(F.trim(_value(root, p)), F.lit("")) for p in alternatives]
    return values[0] if len(values) == 1 else F.coalesce(*values)


def reference_value(raw: Column, target: str, *, own_id: bool) -> Column:
    """``<target>/<id>`` from a reference (``Encounter/1``, ``https://host/fhir/Encounter/1/_history/2``) or, for the
    resource's own ``id``, from the id; null if it is not one (checked apart)."""
    if own_id:
        return F.when(raw.rlike(f"^{ID_PATTERN}$"), F.concat(F.lit(f"{target}/"), raw))
    pattern = rf"(?:^|/)({re.escape(target)}/{ID_PATTERN})(?:/_history/{ID_PATTERN})?$"
    return F.nullif(F.regexp_extract(raw, pattern, 1), F.lit(""))


def _patient_id(reference: Column) -> Column:
    return F.nullif(F.regexp_extract(reference, rf"(?:^|/)Patient/({ID_PATTERN})(?:/_history/{ID_PATTERN})?$", 1),
                    F.lit(""))


PATIENT_LINK_SCHEMA = StructType([
    StructField("resourceType", StringType()), StructField("id", StringType()),
    StructField("identifier", ArrayType(StructType([StructField("system", StringType()),
                                                    StructField("value", StringType())]))),
])


def patient_identity_codes(spark: SparkSession, patient_files: list[Path]) -> DataFrame:
    """``_pid`` -> ``_pid_hetu``: each Patient id of the export with its identity code (raw text).

    An id given to two Patients with different identity codes links to neither (its references are
    unresolved): the export cannot say which person was meant."""
    if not patient_files:
        return spark.createDataFrame([], "_pid string, _pid_hetu string")
    lines = spark.read.text([str(f) for f in patient_files])
    r = F.from_json(F.col("value"), PATIENT_LINK_SCHEMA, {"mode": "PERMISSIVE"})
    hetu = _first_of_system(F.col("_r.identifier"), HETU_SYSTEM)
    pairs = (lines.select(r.alias("_r"))
             .where((F.col("_r.resourceType") == "Patient") & F.col("_r.id").isNotNull())
             .select(F.col("_r.id").alias("_pid"), F.trim(hetu.getField("value")).alias("_pid_hetu")))
    return (pairs.groupBy("_pid").agg(F.min("_pid_hetu").alias("_pid_hetu"),
                                      F.count_distinct(F.coalesce("_pid_hetu", F.lit(""))).alias("_n"))
            .where(F.col("_n") == 1).drop("_n"))


def read_resources(spark: SparkSession, files: list[Path], schema: RegistrySchema,
                   patients: DataFrame | None) -> DataFrame:
    """Lines of an export's files for ``schema``'s resource, parsed: ``_raw_<column>`` texts, ``_utf8`` and the
    structural verdicts ``_json_ok``, ``_type_ok`` and ``_subject_ok``; ``_line`` and ``_file`` as for a CSV."""
    raw = spark.read.text([str(f) for f in files])
    line = F.col("_line")
    base = raw.select(F.is_valid_utf8(F.col("value")).alias("_utf8"), F.col("value").alias("_bytes"),
                      F.input_file_name().alias("_file")).select(
        "_utf8", "_file",
        F.when(F.col("_utf8"), F.col("_bytes")).otherwise(F.make_valid_utf8(F.col("_bytes"))).alias("_line"))
    parsed = base.select("*", F.from_json(line, resource_schema(schema), {
        "mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}).alias("_r"))
    r = F.col("_r")
    trimmed = F.trim(line)
    json_ok = (trimmed.startswith(F.lit("{")) & trimmed.endswith(F.lit("}")) & r.isNotNull()
               & r.getField(_CORRUPT).isNull())
    fields = {name: path_value(r, alts) for name, alts in _column_paths(schema).items()}
    for c in schema.columns:
        if c.type == "reference":
            fields[c.name] = F.coalesce(reference_value(fields[c.name], c.target, own_id=c.fhir == "id"),
                                        F.when(fields[c.name].isNotNull(), F.lit("")))
    cols = [F.coalesce(json_ok, F.lit(False)).alias("_json_ok"),
            F.coalesce(r.getField("resourceType") == F.lit(schema.resource), F.lit(False)).alias("_type_ok")]
    if schema.resource == "Patient":
        out = parsed.select("_line", "_file", "_utf8", *cols, F.lit(True).alias("_subject_ok"),
                            *[fields[n].alias(f"_raw_{n}") for n in schema.names])
        return out
    subject = r.getField("subject")
    ident = subject.getField("identifier")
    logical = F.when(ident.getField("system") == F.lit(HETU_SYSTEM), F.nullif(F.trim(ident.getField("value")),
                                                                                F.lit("")))
    step = parsed.select("*", *cols, logical.alias("_logical"),
                         _patient_id(subject.getField("reference")).alias("_subject_pid"))
    if patients is not None:
        step = step.join(patients, step["_subject_pid"] == patients["_pid"], "left")
    else:
        step = step.select("*", F.lit(None).cast("string").alias("_pid"), F.lit(None).cast("string").alias("_pid_hetu"))
    subject_ok = F.col("_logical").isNotNull() | F.col("_pid").isNotNull()
    hetu = F.coalesce(F.col("_logical"), F.col("_pid_hetu"))
    return step.select("_line", "_file", "_utf8", "_json_ok", "_type_ok", subject_ok.alias("_subject_ok"),
                       hetu.alias("_raw_hetu"), *[fields[n].alias(f"_raw_{n}") for n in schema.names[1:]])


def structural_checks(schema: RegistrySchema) -> list[tuple[str, str, Column]]:
    """The resource's own rules, ``(reason, detail, broken)``, read from :func:`read_resources`' columns."""
    checks = [("encoding", "line", ~F.col("_utf8")),
              ("invalid_json", "line", ~F.col("_json_ok")),
              ("wrong_resource_type", "resourceType", ~F.col("_type_ok"))]
    if schema.resource != "Patient":
        checks.append(("unresolved_reference", "subject", ~F.col("_subject_ok")))
    return checks


# --- the export's manifest -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFile:
    """One NDJSON file of a bulk export, as its manifest lists it."""

    resource: str
    path: Path
    count: int | None


def _line_count(path: Path) -> int:
    n = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (0 if last == b"\n" else 1)


def read_manifest(directory: Path, *, counted: Collection[str] | None = None) -> list[ExportFile]:
    """The files a bulk export's ``manifest.json`` lists, checked: refused (:class:`ExtractFileError`, naming the
    file and the entry) if the manifest is missing or malformed, reports export errors, lists a file that is
    missing, outside the directory, compressed or binary, or whose line count is not the manifest's ``count``;
    or if the directory holds an NDJSON file the manifest does not list (a partial or mixed export).

    Counting lines reads a file whole: with ``counted``, only the files of those resource types are counted."""
    manifest = directory / MANIFEST
    if not directory.is_dir():
        raise ExtractFileError(f"{directory}: the FHIR bulk export's directory is missing")
    if not manifest.is_file():
        raise ExtractFileError(f"{manifest}: the FHIR bulk export has no manifest")
    try:
        doc = json.loads(manifest.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExtractFileError(f"{manifest}: not a JSON manifest ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("output"), list) or "transactionTime" not in doc:
        raise ExtractFileError(f"{manifest}: a bulk export manifest needs 'transactionTime' and an 'output' list")
    if doc.get("error"):
        raise ExtractFileError(f"{manifest}: the export reports {len(doc['error'])} error file(s); resources may be "
                               f"missing, so it cannot be used until the controller resolves them")
    files: list[ExportFile] = []
    root = directory.resolve()
    for i, entry in enumerate(doc["output"]):
        where = f"{manifest}: output[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str) \
                or not isinstance(entry.get("url"), str):
            raise ExtractFileError(f"{where}: each output entry needs a 'type' and a 'url'")
        count = entry.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise ExtractFileError(f"{where}: 'count' must be a whole number")
        name = Path(urlparse(entry["url"]).path).name
        path = (directory / name).resolve()
        if not name or path.parent != root:
            raise ExtractFileError(f"{where}: url {entry['url']!r} does not name a file of the export")
        if not path.is_file():
            raise ExtractFileError(f"{where}: {name} is listed but missing")
        with open(path, "rb") as fh:
            head = fh.read(65536)
        if head.startswith(GZIP_MAGIC):
            raise ExtractFileError(f"{path}: the file is gzip-compressed, not NDJSON text; decompress it first")
        if b"\0" in head:
            raise ExtractFileError(f"{path}: the file is binary, not NDJSON text")
        wanted = counted is None or entry["type"] in counted
        if count is not None and wanted and (found := _line_count(path)) != count:
            raise ExtractFileError(f"{path}: the manifest says {count:,} {entry['type']} resources, the file has "
                                   f"{found:,} lines; the export is incomplete or was changed")
        files.append(ExportFile(entry["type"], path, count))
    listed = {f.path.name for f in files}
    unlisted = sorted(p.name for p in directory.glob("*.ndjson") if p.name not in listed)
    if unlisted:
        raise ExtractFileError(f"{manifest}: {', '.join(unlisted)} not listed in the manifest; a partial or mixed "
                               f"export cannot be used")
    return files


def export_files(directory: Path, resource: str) -> list[Path]:
    """The checked files of one resource type (:func:`read_manifest`); refused if the export has none."""
    return linked_files(directory, resource)[0]


def linked_files(directory: Path, resource: str) -> tuple[list[Path], list[Path]]:
    """The checked files of ``resource`` and of the Patients its subjects refer to, from one reading of the
    manifest (only these files' lines are counted); refused if the export has no ``resource``."""
    listed = read_manifest(directory, counted={resource, "Patient"})
    files = [f.path for f in listed if f.resource == resource]
    if not files:
        raise ExtractFileError(f"{directory / MANIFEST}: the export has no {resource} resources")
    return files, [f.path for f in listed if f.resource == "Patient"]
