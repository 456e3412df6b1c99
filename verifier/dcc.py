"""Reading PTB Digital Calibration Certificates (DCC XML), safely and strictly.

- Parsing never touches the network or the file system beyond the bytes given,
  never expands entities, and refuses any DOCTYPE (billion laughs, XXE).
- Validation uses the PTB schema of the DCC's own ``schemaVersion`` from a
  schema folder laid out like ``dcc/schemas/dcc`` (``v3.3.0/dcc.xsd`` …);
  compiled schemas are cached.
- Extraction reads ``coreData`` and the calibration laboratory's name: only
  identifiers, dates and the issuer — never the customer, items or results,
  which must not enter the public log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from lxml import etree

from verifier.errors import MalformedError, TooLargeError

DCC_NS = "https://ptb.de/dcc"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
SUPPORTED_VERSIONS = ("3.1.1", "3.1.2", "3.2.0", "3.2.1", "3.3.0")
MAX_DOCUMENT_SIZE = 20 * 1024 * 1024
"""Largest certificate document accepted (DCC or certification), in bytes."""
_NS = {"dcc": DCC_NS, "ds": DS_NS}
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+")


class DccSchemaError(MalformedError):
    """The DCC does not validate against the PTB schema of its version."""

    code = "schema_invalid"


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def parse_xml(data: bytes, what: str = "document") -> Any:
    """Parse untrusted XML; refuse DTDs and entities outright."""
    if len(data) > MAX_DOCUMENT_SIZE:
        raise TooLargeError(f"{what} is {len(data)} bytes; the limit is {MAX_DOCUMENT_SIZE}")
    head = data[:4096].lstrip()
    if not head.startswith(b"<"):
        raise MalformedError(f"{what} is not XML")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise MalformedError(f"{what} contains a DOCTYPE or entity declaration; refused")
    try:
        tree = etree.fromstring(data, _parser()).getroottree()
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise MalformedError(f"{what} is not well-formed XML: {exc}") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise MalformedError(f"{what} contains a DOCTYPE; refused")
    return tree


class DccSchemas:
    """The PTB DCC schemas of one folder, compiled once per version."""

    def __init__(self, folder: Path) -> None:
        if not (folder / f"v{SUPPORTED_VERSIONS[-1]}" / "dcc.xsd").is_file():
            raise MalformedError(f"{folder} does not hold the DCC schemas (v<version>/dcc.xsd)")
        self.folder = folder
        self._compiled: dict[str, Any] = {}

    def schema(self, version: str) -> Any:
        compiled = self._compiled.get(version)
        if compiled is None:
            path = self.folder / f"v{version}" / "dcc.xsd"
            if not path.is_file():
                raise DccSchemaError(f"no schema for DCC version {version} in {self.folder}")
            try:
                compiled = etree.XMLSchema(etree.parse(str(path), _parser()))
            except (etree.XMLSchemaParseError, etree.XMLSyntaxError, OSError) as exc:
                raise MalformedError(f"cannot load the DCC {version} schema: {exc}") from None
            self._compiled[version] = compiled
        return compiled

    def validate(self, tree: Any, version: str) -> None:
        schema = self.schema(version)
        if not schema.validate(tree):
            errors = [f"line {e.line}: {e.message}" for e in list(schema.error_log)[:3]]
            raise DccSchemaError(
                f"DCC does not validate against the PTB {version} schema: " + "; ".join(errors)
            )


@dataclass(frozen=True)
class DccCoreData:
    """What the log may learn from a DCC: identifiers, dates and the issuer."""

    schema_version: str
    unique_identifier: str
    begin_performance_date: date
    end_performance_date: date
    issue_date: date | None
    laboratory_name: str
    replaces: str | None
    """``reportAmendedSubstituted/replacedUniqueIdentifier`` (amended or substituted)."""
    change: str | None
    """``reportAmendedSubstituted/typeOfChange``: amended or substituted."""
    previous_report: str | None
    """``previousReport/referralID``: a linked earlier report, for the record."""
    has_signature: bool
    schema_validated: bool


def _optional_text(root: Any, path: str) -> str | None:
    found = root.find(path, _NS)
    if found is None or not (found.text or "").strip():
        return None
    return str(found.text).strip()


def _text(root: Any, path: str) -> str:
    text = _optional_text(root, path)
    if text is None:
        raise MalformedError(f"DCC lacks {path.replace('dcc:', '')}")
    return text


def _to_date(text: str, path: str) -> date:
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise MalformedError(f"DCC {path.replace('dcc:', '')} {text!r} is not a date") from None


def _optional_date(root: Any, path: str) -> date | None:
    text = _optional_text(root, path)
    return None if text is None else _to_date(text, path)


def read_dcc(data: bytes, schemas: DccSchemas | None) -> DccCoreData:
    """Parse, validate (when ``schemas`` is given) and extract a DCC's core data."""
    tree = parse_xml(data, "DCC")
    root = tree.getroot()
    if root.tag != f"{{{DCC_NS}}}digitalCalibrationCertificate":
        raise MalformedError("not a DCC: the root is not dcc:digitalCalibrationCertificate")
    version = root.get("schemaVersion") or ""
    if not _VERSION_RE.fullmatch(version) or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(SUPPORTED_VERSIONS)
        raise MalformedError(f"unsupported DCC schemaVersion {version!r} (supported: {supported})")
    if schemas is not None:
        schemas.validate(tree, version)
    core = "dcc:administrativeData/dcc:coreData/"
    lab = "dcc:administrativeData/dcc:calibrationLaboratory/dcc:contact/dcc:name/dcc:content"
    begin, end = core + "dcc:beginPerformanceDate", core + "dcc:endPerformanceDate"
    amended = core + "dcc:reportAmendedSubstituted/dcc:"
    return DccCoreData(
        schema_version=version,
        unique_identifier=_text(root, core + "dcc:uniqueIdentifier"),
        begin_performance_date=_to_date(_text(root, begin), begin),
        end_performance_date=_to_date(_text(root, end), end),
        issue_date=_optional_date(root, core + "dcc:issueDate"),
        laboratory_name=_optional_text(root, lab) or "",
        replaces=_optional_text(root, amended + "replacedUniqueIdentifier"),
        change=_optional_text(root, amended + "typeOfChange"),
        previous_report=_optional_text(root, core + "dcc:previousReport/dcc:referralID"),
        has_signature=root.find("ds:Signature", _NS) is not None,
        schema_validated=schemas is not None,
    )
