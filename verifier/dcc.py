"""Reading PTB Digital Calibration Certificates (DCC XML), safely and strictly.

- Parsing never touches the network or the file system beyond the bytes given,
  never expands entities, and refuses any DOCTYPE (billion laughs, XXE) in
  whatever encoding the document is written (UTF-8 with or without a byte-order
  mark, UTF-16 with a byte-order mark or an XML declaration, or another declared
  encoding): the refusal reads the decoded text, and the parsed tree again.
- The tree is refused as soon as it passes a structural limit no real DCC
  comes near (:data:`MAX_ATTRIBUTES`, :data:`MAX_NAMESPACES`, :data:`MAX_DEPTH`,
  :data:`MAX_NODES`, :data:`MAX_TEXT`). A document over 1 MiB is parsed as a
  stream and costs what its first offending chunk costs, not what the whole
  would; a start tag filling a chunk with attributes is refused from its bytes
  before it is parsed.
- Validation uses the PTB schema of the DCC's own ``schemaVersion`` from a
  schema folder laid out like ``dcc/schemas/dcc`` (``v3.3.0/dcc.xsd`` …);
  compiled schemas are cached. It runs as a stream too and stops at the first
  part of the document that holds an error, so a document with a million
  errors costs no more than one with one.
- Extraction reads ``coreData`` and the calibration laboratory's name and
  code: only identifiers, dates and the issuer — never the customer, items or
  results, which must not enter the public log.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
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
"""Largest DCC (or PDF certificate) accepted, in bytes. Certification JSON has
its own, smaller limit (``verifier.certification.MAX_RECORD_SIZE``)."""

# Structural limits, checked while the document streams in. The shared example
# DCCs have at most 2 attributes and 3 namespace declarations on an element, a
# depth of 15 and ~70 bytes per element; dcc:comment and ds:Object take any
# content (xs:any, lax), so a schema-valid DCC could otherwise be anything.
MAX_ATTRIBUTES = 32
"""Attributes on one element."""
MAX_NAMESPACES = 32
"""Namespace declarations on one element."""
MAX_DEPTH = 64
"""Nesting depth of elements (the root is depth 1)."""
MAX_NODES = 250_000
"""Elements, attributes, comments and processing instructions in one document:
what a 15 MB DCC of the examples' density holds, and few enough that its tree
stays well under 100 MB."""
MAX_TEXT = 1024 * 1024
"""Characters in one attribute value or one element's text, but for base64 data
(:data:`_LONG_TEXT_ELEMENTS`) and value lists (``*XMLList``, whose items are
held to it): libxml2 checks a pattern facet with an automaton taking ~25 bytes
of memory per character (a 10 MB identifier would cost 250 MB); base64 costs
nothing like that, and a list is checked item by item."""
_LONG_TEXT_ELEMENTS = frozenset(
    {
        "dataBase64",  # dcc:byteDataType: an embedded file
        "X509Certificate",
        "X509CRL",
        "SignatureValue",
        "EncapsulatedX509Certificate",
        "EncapsulatedCRLValue",
        "EncapsulatedOCSPValue",
        "EncapsulatedTimeStamp",
        "EncapsulatedPKIData",
    }
)
MAX_IDENTIFIER = 128
"""Characters in the identifiers the log takes from a DCC (its uniqueIdentifier,
the one it replaces, the laboratory's code): a certificate number has at most 128."""
_CHUNK = 64 * 1024
"""Bytes fed to the parser at a time; the checks run between chunks."""
_SMALL_DOCUMENT = 1024 * 1024
"""Up to this size a document is parsed at once and its tree walked (quicker:
what it can hold is small anyway); a larger one streams in chunks."""
_EVENTS = ("start", "end", "start-ns", "comment", "pi")
"""What the checks look at (only elements cost a DCC anything: the others are few)."""
_MESSAGE_CHARS = 200
"""Longest piece of a parser's or validator's message quoted in our errors (they
may quote the document, e.g. an attribute's value)."""

_NS = {"dcc": DCC_NS, "ds": DS_NS}
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+")
_DECLARED_ENCODING = re.compile(
    rb"<\?xml[ \t\r\n][^>]{0,200}?encoding[ \t\r\n]*=[ \t\r\n]*"
    rb"[\"']([A-Za-z][A-Za-z0-9._-]{0,39})[\"']"
)
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_ASSIGNMENT = re.compile(rb"=[ \t\r\n]*[\"']")
_ASSIGNMENTS = MAX_ATTRIBUTES + MAX_NAMESPACES
_XML_WHITESPACE = " \t\r\n"
_WHITESPACE = re.compile("[ \t\r\n]")


class DccSchemaError(MalformedError):
    """The DCC does not validate against the PTB schema of its version."""

    code = "schema_invalid"


class DccStructureError(MalformedError):
    """The DCC's tree passes a structural limit (attributes or namespace
    declarations on one element, depth, number of nodes) that no real DCC
    reaches; refused before it is read any further or validated."""


def clip(text: str, limit: int = _MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (marked), for quoting in an error."""
    return text if len(text) <= limit else text[:limit] + "…"


_PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_blank_text": False,
}


def _parser() -> etree.XMLParser:
    return etree.XMLParser(**_PARSER_OPTIONS)


def xml_encoding(data: bytes) -> str | None:
    """The encoding an XML processor reads ``data`` in (XML 1.0 appendix F):
    from a byte-order mark, else the first bytes of a UTF-16 XML declaration,
    else the declared ``encoding`` (UTF-8 when there is none); lower case.
    None if the bytes cannot begin an XML document in a supported encoding
    (UTF-32 and EBCDIC are not supported)."""
    if data.startswith(
        (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00", b"\x00\x00\x00<", b"<\x00\x00\x00")
    ):
        return None  # UTF-32 / UCS-4: not required by XML 1.0, not accepted here
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8"
    if data.startswith((b"\xfe\xff", b"\x00<\x00?")):
        return "utf-16-be"
    if data.startswith((b"\xff\xfe", b"<\x00?\x00")):
        return "utf-16-le"
    declared = _DECLARED_ENCODING.match(data, 0, 256)
    return declared.group(1).decode("ascii").lower() if declared else "utf-8"


def _strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


def _is_text_encoding(encoding: str) -> bool:
    """Whether Python knows ``encoding`` as a text encoding (not e.g. ``zlib``)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        return False
    return bool(getattr(info, "_is_text_encoding", True))


def _decode_head(data: bytes, encoding: str) -> str | None:
    try:
        return codecs.getincrementaldecoder(encoding)(errors="replace").decode(data[:4096])
    except (UnicodeError, ValueError, TypeError):
        return None


def looks_like_xml(data: bytes) -> bool:
    """Whether ``data`` begins like an XML document (after a byte-order mark and
    white space, the first character is ``<``) in a supported encoding."""
    encoding = xml_encoding(data)
    if encoding is None:
        return False
    head = _decode_head(data, encoding) if _is_text_encoding(encoding) else None
    if head is None:  # an encoding refused later, by its name or its bytes
        return data[:4096].lstrip(_XML_WHITESPACE.encode()).startswith(b"<")
    return _strip_bom(head).lstrip(_XML_WHITESPACE).startswith("<")


def _readable(data: bytes, encoding: str, what: str) -> bytes:
    """The document as the parser will read it, as UTF-8, for cheap scans: UTF-8
    bytes as they are, any other encoding decoded and encoded again (a UTF-16
    ``<!DOCTYPE`` does not contain the bytes ``<!DOCTYPE``)."""
    if encoding in _UTF8:
        return data
    if not _is_text_encoding(encoding):
        raise MalformedError(f"{what} declares an unsupported encoding {encoding!r}")
    try:
        return data.decode(encoding).encode("utf-8", "surrogatepass")
    except (UnicodeError, ValueError, TypeError) as exc:
        raise MalformedError(f"{what} is not valid {encoding}: {clip(str(exc))}") from None


def _scan(text: bytes, what: str) -> bool:
    """C-speed scans of the whole text before it is parsed: refuse a DOCTYPE and
    a start tag that fills a chunk with assignments; whether some chunk holds no
    ``<`` (then a text or value longer than a chunk is possible)."""
    if b"<!DOCTYPE" in text:  # an entity declaration can only stand in a DOCTYPE
        raise MalformedError(f"{what} contains a DOCTYPE or entity declaration; refused")
    long_runs = False
    for offset in range(0, len(text), _CHUNK):
        chunk = text[offset : offset + _CHUNK]
        if b"<" in chunk:
            continue
        long_runs = True
        # A chunk without "<" lies inside one start tag, text, comment, CDATA
        # section or processing instruction (an attribute value cannot hold
        # "<"). With more assignments than an element may have attributes and
        # namespace declarations, it is a start tag beyond the limits (or a text
        # no DCC has): refused before the parser builds that element (lxml
        # builds and frees attributes holding the interpreter lock, ~1 us each).
        if chunk.count(b"=") > _ASSIGNMENTS and len(_ASSIGNMENT.findall(chunk)) > _ASSIGNMENTS:
            raise _Structure(what).refuse(
                f"more than {_ASSIGNMENTS} attribute assignments in {len(chunk)} bytes "
                "without markup (an element with that many attributes and namespace "
                f"declarations; the limits are {MAX_ATTRIBUTES} and {MAX_NAMESPACES})"
            )
    return long_runs


def _has_item_longer_than(text: str, limit: int) -> bool:
    """Whether ``text`` holds a run of more than ``limit`` characters without
    white space. Such a run covers a whole block of ``limit // 2`` characters;
    only those blocks are measured exactly (every scan a C loop)."""
    block = max(1, limit // 2)
    for start in range(0, len(text) - block + 1, block):
        piece = text[start : start + block]
        if any(space in piece for space in _XML_WHITESPACE):
            continue
        left = max(text.rfind(space, 0, start) for space in _XML_WHITESPACE) + 1
        after = _WHITESPACE.search(text, start + block)
        right = after.start() if after is not None else len(text)
        if right - left > limit:
            return True
    return False


class _Structure:
    """Consumes parse events (of a streaming parser or of a walk over a tree)
    and refuses the document as soon as a structural limit is passed. ``texts``:
    check the length of texts and attribute values (only a document with a
    chunk free of markup can hold one over the limit)."""

    def __init__(self, what: str, *, texts: bool = True) -> None:
        self.what = what
        self.texts = texts
        self.nodes = self.depth = self.declarations = 0

    def refuse(self, found: str) -> DccStructureError:
        return DccStructureError(f"{self.what} refused: {found}; no real DCC comes near that")

    def consume(self, events: Any) -> None:
        # The loop runs once per element: its state lives in locals.
        nodes, depth, declarations, texts = self.nodes, self.depth, self.declarations, self.texts
        try:
            for event, item in events:
                if event == "start":
                    depth += 1
                    attributes = len(item.attrib)
                    nodes += 1 + attributes
                    if (
                        depth > MAX_DEPTH
                        or attributes > MAX_ATTRIBUTES
                        or declarations > MAX_NAMESPACES
                        or nodes > MAX_NODES
                    ):
                        raise self._over(depth, attributes, declarations)
                    declarations = 0
                    if texts and attributes and max(map(len, item.values())) > MAX_TEXT:
                        raise self.refuse(f"an attribute value longer than {MAX_TEXT} characters")
                elif event == "end":
                    depth -= 1
                    if texts:
                        self._check_text(item)
                elif event == "start-ns":
                    declarations += 1
                else:  # a comment or processing instruction
                    nodes += 1
            if nodes > MAX_NODES:
                raise self._over(depth, 0, 0)
        finally:
            self.nodes, self.depth, self.declarations = nodes, depth, declarations

    def _over(self, depth: int, attributes: int, declarations: int) -> DccStructureError:
        if depth > MAX_DEPTH:
            return self.refuse(f"elements nested more than {MAX_DEPTH} deep")
        if attributes > MAX_ATTRIBUTES:
            return self.refuse(
                f"an element with {attributes} attributes (the limit is {MAX_ATTRIBUTES})"
            )
        if declarations > MAX_NAMESPACES:
            return self.refuse(f"an element declares more than {MAX_NAMESPACES} namespaces")
        return self.refuse(
            f"more than {MAX_NODES} elements, attributes, comments and processing instructions"
        )

    def _check_text(self, element: Any) -> None:
        text = element.text
        if text is None or len(text) <= MAX_TEXT:
            return
        local = element.tag.rsplit("}", 1)[-1]
        if local in _LONG_TEXT_ELEMENTS:
            return
        where = clip(element.tag, 100)
        if not local.endswith("XMLList"):
            raise self.refuse(
                f"a text of {len(text)} characters in {where} "
                f"(the limit is {MAX_TEXT} but for base64 data and value lists)"
            )
        if _has_item_longer_than(text, MAX_TEXT):
            raise self.refuse(
                f"a value list in {where} with an item of more than {MAX_TEXT} characters"
            )


def _not_well_formed(what: str, exc: Exception) -> MalformedError:
    # A feeding parser's exception may only say "no element found"; the first
    # error it met is in the thread's error log (see _errors_so_far).
    first = next(iter(_errors_so_far()), None)
    reason = f"{first.message} (line {first.line})" if first is not None else str(exc)
    return MalformedError(f"{what} is not well-formed XML: {clip(reason)}")


def _stream_tree(data: bytes, events: Sequence[str], seen: _Structure) -> Any:
    """Parse ``data`` in chunks, refusing it as soon as a structural limit is passed."""
    parser = etree.XMLPullParser(events=events, **_PARSER_OPTIONS)
    etree.clear_error_log()
    try:
        for offset in range(0, len(data), _CHUNK):
            parser.feed(data[offset : offset + _CHUNK])
            seen.consume(parser.read_events())
        return parser.close().getroottree()
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise _not_well_formed(seen.what, exc) from None


def _walked_tree(data: bytes, events: Sequence[str], seen: _Structure) -> Any:
    """Parse ``data`` at once (a small document: its tree is small whatever it
    holds), then walk it with the same checks."""
    etree.clear_error_log()
    try:
        root = etree.fromstring(data, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise _not_well_formed(seen.what, exc) from None
    seen.consume(etree.iterwalk(root, events=events))
    return root.getroottree()


def parse_xml(data: bytes, what: str = "document") -> Any:
    """Parse untrusted XML; refuse DTDs and entities outright, and trees beyond
    the structural limits before they are built (a document over
    :data:`_SMALL_DOCUMENT` as a stream, refused at the first chunk that passes
    a limit)."""
    if len(data) > MAX_DOCUMENT_SIZE:
        raise TooLargeError(f"{what} is {len(data)} bytes; the limit is {MAX_DOCUMENT_SIZE}")
    encoding = xml_encoding(data)
    if encoding is None or not looks_like_xml(data):
        raise MalformedError(f"{what} is not XML")
    seen = _Structure(what, texts=_scan(_readable(data, encoding, what), what))
    build = _walked_tree if len(data) <= _SMALL_DOCUMENT else _stream_tree
    tree = build(data, _EVENTS, seen)
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise MalformedError(f"{what} contains a DOCTYPE; refused")
    return tree


class _Discard:
    """A parser target that builds nothing: schema validation needs no tree."""

    def close(self) -> None:
        return None


def _errors_so_far() -> list[Any]:
    # lxml gives no access to a feeding parser's own error log until it closes,
    # and a validator collects every error (one per undeclared attribute, with
    # a node path costing time in the number of siblings). But every error is
    # also copied into this thread's global error log (a ring of the last 100),
    # which every new lxml exception carries: enough to stop after the chunk
    # that held the first error.
    log = etree.LxmlError("probe").error_log
    return list(log.filter_from_errors())


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

    def validate(self, data: bytes, version: str) -> None:
        """Validate the DCC's bytes (already parsed by :func:`parse_xml`, so within
        the structural limits) against the PTB schema of ``version``, as a stream
        that stops after the first chunk holding an error."""
        schema = self.schema(version)
        parser = etree.XMLParser(schema=schema, target=_Discard(), **_PARSER_OPTIONS)
        etree.clear_error_log()
        errors: list[Any] = []
        try:
            for offset in range(0, len(data), _CHUNK):
                parser.feed(data[offset : offset + _CHUNK])
                errors = _errors_so_far()
                if errors:
                    break
            else:
                parser.close()
        except etree.XMLSyntaxError as exc:
            errors = _errors_so_far() or [exc]
        if errors:
            shown = "; ".join(clip(getattr(e, "message", None) or str(e)) for e in errors[:3])
            raise DccSchemaError(f"DCC does not validate against the PTB {version} schema: {shown}")


@dataclass(frozen=True)
class DccCoreData:
    """What the log may learn from a DCC: identifiers, dates and the issuer."""

    schema_version: str
    unique_identifier: str
    begin_performance_date: date
    end_performance_date: date
    issue_date: date | None
    laboratory_name: str
    laboratory_code: str | None
    """``calibrationLaboratory/calibrationLaboratoryCode``: the laboratory's own
    code, e.g. its accreditation number."""
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
        raise MalformedError(
            f"DCC {path.replace('dcc:', '')} {clip(text, 40)!r} is not a date"
        ) from None


def _check_identifiers(**identifiers: str | None) -> None:
    for what, text in identifiers.items():
        if text is not None and len(text) > MAX_IDENTIFIER:
            raise MalformedError(
                f"DCC {what} is {len(text)} characters; the limit is {MAX_IDENTIFIER}"
            )


def _optional_date(root: Any, path: str) -> date | None:
    text = _optional_text(root, path)
    return None if text is None else _to_date(text, path)


def read_dcc(data: bytes, schemas: DccSchemas | None) -> DccCoreData:
    """Parse, validate (when ``schemas`` is given) and extract a DCC's core data."""
    return read_dcc_tree(data, schemas)[0]


def read_dcc_tree(data: bytes, schemas: DccSchemas | None) -> tuple[DccCoreData, Any]:
    """What :func:`read_dcc` gives, and the parsed root element (for reading
    more of it without a second parse, e.g. :func:`verifier.links.read_links`)."""
    tree = parse_xml(data, "DCC")
    root = tree.getroot()
    if root.tag != f"{{{DCC_NS}}}digitalCalibrationCertificate":
        raise MalformedError("not a DCC: the root is not dcc:digitalCalibrationCertificate")
    version = root.get("schemaVersion") or ""
    if not _VERSION_RE.fullmatch(version) or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(SUPPORTED_VERSIONS)
        raise MalformedError(
            f"unsupported DCC schemaVersion {clip(version, 20)!r} (supported: {supported})"
        )
    if schemas is not None:
        schemas.validate(data, version)
    core = "dcc:administrativeData/dcc:coreData/"
    lab = "dcc:administrativeData/dcc:calibrationLaboratory/"
    begin, end = core + "dcc:beginPerformanceDate", core + "dcc:endPerformanceDate"
    amended = core + "dcc:reportAmendedSubstituted/dcc:"
    unique_identifier = _text(root, core + "dcc:uniqueIdentifier")
    laboratory_code = _optional_text(root, lab + "dcc:calibrationLaboratoryCode")
    replaces = _optional_text(root, amended + "replacedUniqueIdentifier")
    _check_identifiers(
        uniqueIdentifier=unique_identifier,
        calibrationLaboratoryCode=laboratory_code,
        replacedUniqueIdentifier=replaces,
    )
    read = DccCoreData(
        schema_version=version,
        unique_identifier=unique_identifier,
        begin_performance_date=_to_date(_text(root, begin), begin),
        end_performance_date=_to_date(_text(root, end), end),
        issue_date=_optional_date(root, core + "dcc:issueDate"),
        laboratory_name=_optional_text(root, lab + "dcc:contact/dcc:name/dcc:content") or "",
        laboratory_code=laboratory_code,
        replaces=replaces,
        change=_optional_text(root, amended + "typeOfChange"),
        previous_report=_optional_text(root, core + "dcc:previousReport/dcc:referralID"),
        has_signature=root.find("ds:Signature", _NS) is not None,
        schema_validated=schemas is not None,
    )
    return read, root
