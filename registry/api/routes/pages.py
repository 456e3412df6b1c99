"""The public verification pages: what a phone opens after scanning a QR mark
(``/m/<token>``, ``/M/<token>``), a certificate by id (``/c/<id>``) and a file
check by digest (``/verify``).

Server-rendered, so the verdict reads with JavaScript off; with it on,
``static/verify.js`` re-checks the page's claims (checkpoint signature, inclusion
proofs, consistency with the last checkpoint the browser saw) from the JSON the
page embeds. A hostile token or id gets a page with a verdict, never an error.
"""

from __future__ import annotations

import binascii
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup
from starlette.types import Scope

from registry.api import chain_diagram, i18n, templating
from registry.api.auth import service_for
from registry.api.service import RegistryService
from registry.errors import NotFoundError
from registry.reports import certificate_report, issuer_summary
from verifier import mark
from verifier.errors import QILedgerError
from verifier.note import NoteVerifier
from verifier.trust import TrustState

router = APIRouter(include_in_schema=False)

API_DIR = Path(__file__).resolve().parent.parent
STATIC_DIR = API_DIR / "static"
MAX_CERTIFICATE_ID = 300
"""As the API's certificate id path parameter: longer ids are not looked up."""

HEADERS = {
    # Scripts and styles only from this origin; the page's JSON block is data, not code.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # A mark URL is a bearer of nothing secret, but it should not leak to other sites.
    "Referrer-Policy": "no-referrer",
    # The verdict is live: a status change must show on the next scan.
    "Cache-Control": "no-cache",
}

_RAW_HEADERS = tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in HEADERS.items())
_CONTENT_TYPE = (b"content-type", b"text/html; charset=utf-8")


class PageResponse(HTMLResponse):
    """A page (status 200 or 404) with :data:`HEADERS`: the headers an
    ``HTMLResponse(html, status, HEADERS)`` has, encoded once rather than for
    every page."""

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        if headers is not None:
            raise TypeError("a page's headers are HEADERS")
        length = (b"content-length", str(len(self.body)).encode("latin-1"))
        self.raw_headers = [*_RAW_HEADERS, length, _CONTENT_TYPE]


# The pages are answered on the event loop: their reads are a few indexed
# statements, cheaper than a hop to a worker thread (see RegistryService.read_certificate).

# Any value is taken (never a 422): only a known language changes anything.
Lang = Annotated[str | None, Query(include_in_schema=False)]

VERDICT_CLASS = {
    "active": "ok",
    "suspended": "warn",
    "withdrawn": "bad",
    "superseded": "warn",
    "expired": "warn",
    "invalid": "bad",
    "not_found": "bad",
}


@dataclass(frozen=True)
class Verdict:
    key: str
    """active, suspended, withdrawn, superseded, expired, invalid or not_found."""
    reasons: tuple[str, ...] = ()

    @property
    def css(self) -> str:
        return VERDICT_CLASS[self.key]


VERIFIED_MARKS_KEPT = 4096
"""Marks whose signature checked, remembered (about 1 KB each): a printed mark is
scanned again and again, and its signature is all a repeat scan would re-check."""


@functools.lru_cache(maxsize=VERIFIED_MARKS_KEPT)
def _verified_mark(token: str, log: NoteVerifier) -> mark.MarkClaims:
    """:func:`verifier.mark.verify`, remembered for the tokens that passed it (the
    same token and key always give the same answer; a failure raises, so it is
    never remembered and a forged token is checked every time)."""
    return mark.verify(token, log)


@router.get("/m/{token:path}", response_class=HTMLResponse)
@router.get("/M/{token:path}", response_class=HTMLResponse)
async def mark_page(request: Request, token: str, lang: Lang = None) -> Response:
    service = service_for(request)
    t = _translator(request, lang)
    try:
        claims = _verified_mark(token, service.ledger.identity.verifier)
    except QILedgerError:
        # Forged, truncated, altered, oversized or another log's: one answer for all.
        verdict = Verdict("invalid", (t("mark.not_authentic"),))
        return _certificate_response(request, t, lang, {"verdict": verdict}, 404)
    page = _certificate_page(service, claims.certificate_id)
    if page is None:
        reasons: tuple[str, ...] = (f"{t('mark.disagrees')}: {t('mark.no_certificate')}",)
        verdict = Verdict("invalid", reasons)
        return _certificate_response(request, t, lang, {"verdict": verdict}, 404)
    problems = []
    if bytes.fromhex(page["document_sha256"]) != claims.document_sha256:
        problems.append(t("mark.digest"))
    issued_at = page["history"][0]["index"] if page["history"] else None
    if claims.index != issued_at:
        problems.append(t("mark.index", claimed=claims.index, actual=issued_at))
    if problems:
        page["verdict"] = Verdict("invalid", tuple(f"{t('mark.disagrees')}: {p}" for p in problems))
        # The registry's record stays visible, but no "verified in your browser"
        # beside a verdict of "not authentic": that check is about the record.
        page["browser"] = None
    return _certificate_response(request, t, lang, _with_chain(page, t), 200)


@router.get("/c/{certificate_id:path}", response_class=HTMLResponse)
async def certificate_page(request: Request, certificate_id: str, lang: Lang = None) -> Response:
    service = service_for(request)
    t = _translator(request, lang)
    page = _certificate_page(service, certificate_id)
    if page is None:
        context: dict[str, Any] = {
            "verdict": Verdict("not_found", (t("not_found.text"),)),
            "certificate_id": certificate_id[:MAX_CERTIFICATE_ID],
        }
        return _certificate_response(request, t, lang, context, 404)
    return _certificate_response(request, t, lang, _with_chain(page, t), 200)


@router.get("/verify", response_class=HTMLResponse)
async def verify_page(request: Request, lang: Lang = None) -> Response:
    service = service_for(request)
    t = _translator(request, lang)
    context = {
        "registry_url": str(request.base_url).rstrip("/"),
        "log_key": str(service.ledger.identity.verifier),
        "messages": {
            k: t(k)
            for k in (
                "verify.hashing",
                "verify.unregistered",
                "verify.found",
                "verify.error",
                *(f"verdict.{v}" for v in VERDICT_CLASS),
            )
        },
    }
    return _render(request, t, lang, "verify.html", context, 200)


@router.get("/witnesses", response_class=HTMLResponse)
async def witnesses_page(request: Request, lang: Lang = None) -> Response:
    """The witnesses this browser requires to have cosigned a checkpoint before a
    page says "verified in your browser": chosen by the visitor (kept in this
    browser), never by the registry — which only names the witnesses it asks."""
    service = service_for(request)
    t = _translator(request, lang)
    context = {
        "log_key": str(service.ledger.identity.verifier),
        "declared": list(service.witness_keys),
        "messages": {
            k: t(k)
            for k in (
                "witnesses.saved",
                "witnesses.cleared",
                "witnesses.none_required",
                "witnesses.required",
                "witnesses.bad_min",
                "witnesses.no_keys",
                "browser.unsupported",
                "browser.no_webcrypto",
            )
        },
    }
    return _render(request, t, lang, "witnesses.html", context, 200)


# --- the certificate's page model ---------------------------------------------------


def _certificate_page(service: RegistryService, certificate_id: str) -> dict[str, Any] | None:
    """Everything the certificate page shows and the browser re-checks, or None for
    an id the log does not know."""
    if len(certificate_id) > MAX_CERTIFICATE_ID:
        return None
    ledger = service.ledger
    now = ledger.clock()

    def view(state: TrustState) -> dict[str, Any] | None:
        try:
            report = certificate_report(state, certificate_id, now)
        except NotFoundError:
            return None
        issuer = state.issuers.get(report["issuer_id"])
        report["issuer"] = None if issuer is None else issuer_summary(issuer)
        return report

    linked: set[str] = set()
    report = service.read_certificate(view, certificate_id=certificate_id, linked=linked)
    if report is None:
        return None
    if certificate_id in linked:  # traced to other certificates: is any of them at risk?
        trace = service.traceability(certificate_id)
        report["traceability_at_risk"] = trace["traceability_at_risk"]
        report["at_risk_because"] = trace["at_risk_because"]
        report["chain"] = trace
    # The checkpoint is read after the certificate: the latest covers every entry
    # named. With witnesses, the one most of them cosigned that covers the history.
    indexes = [e["index"] for e in report["history"]]
    note = None
    under = None
    if service.witness_keys:
        under, cosigned = ledger.witnessed_checkpoint(
            max(indexes, default=-1) + 1, service.witness_keys
        )
        note = cosigned.decode("utf-8")
    checkpoint, proven = ledger.history_proofs(indexes, under)
    entries = []
    entries_json = []
    for event, (stored, hashes) in zip(report["history"], proven, strict=True):
        leaf_data = _b64(stored.data)
        proof = [_b64(h) for h in hashes]
        entries.append(
            {"index": event["index"], "type": event["type"], "leaf_data": leaf_data, "proof": proof}
        )
        entries_json.append(_entry_json(event["index"], event["type"], leaf_data, proof))
    report["verdict"] = Verdict(
        report["status"].lower(), (report["reason"],) if report["reason"] else ()
    )
    report["tree_size"] = checkpoint.size
    report["checked_at"] = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    report["browser"] = {
        "certificate_id": certificate_id,
        "document_sha256": report["document_sha256"],
        "origin": ledger.identity.origin,
        "verifier_key": str(ledger.identity.verifier),
        "checkpoint": checkpoint.note.decode("utf-8") if note is None else note,
        "entries": entries,
        "consistency_url": "/api/v1/log/proof/consistency",
    }
    report["browser_json"] = _browser_json(report["browser"], {"entries": entries_json})
    return report


# --- the page's JSON for the in-browser check -----------------------------------------
#
# What ``{{ browser | tojson }}`` would write (json.dumps with sorted keys, then
# <, >, & and ' as \u escapes), made knowing what the values are: the leaf data
# and proof hashes are base64 (A-Z, a-z, 0-9, +, / and =, which neither JSON nor
# tojson escapes), so they are written as they are, not scanned character by
# character twice; a page holds a few kilobytes of them.


def _b64(data: bytes) -> str:
    """Standard padded base64 (``verifier.encoding.b64encode``'s text)."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


_JSON_STRING = json.encoder.encode_basestring_ascii
"""How ``json.dumps`` (ASCII) writes a string, quotes included."""


@functools.lru_cache(maxsize=1024)
def _json_text(value: str) -> str:
    """A string as ``tojson`` writes it (remembered: most are a page's keys, the
    log's origin and key, and the latest checkpoint)."""
    return (
        _JSON_STRING(value)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )


def _json_value(value: Any) -> str:
    """Any JSON value as ``tojson`` writes it (keys sorted)."""
    kind = type(value)
    if kind is str:
        return _json_text(value)
    if kind is int:
        return int.__repr__(value)
    return str(htmlsafe_json_dumps(value, dumps=templating.SORTED_JSON.encode))


def _entry_json(index: int, kind: str, leaf_data: str, proof: list[str]) -> str:
    """A history entry's JSON, as ``tojson`` writes it: base64 ``leaf_data`` and
    ``proof`` written as they are (nothing in them is escaped)."""
    hashes = '"' + '", "'.join(proof) + '"' if proof else ""
    return (
        f'{{"index": {_json_value(index)}, "leaf_data": "{leaf_data}", '
        f'"proof": [{hashes}], "type": {_json_value(kind)}}}'
    )


def _browser_json(browser: Mapping[str, Any], written: Mapping[str, list[str]]) -> Markup:
    """``browser`` as ``tojson`` writes it, with the lists in ``written`` given as
    their items' JSON already."""
    parts = []
    for key in sorted(browser):
        items = written.get(key)
        value = _json_value(browser[key]) if items is None else "[" + ", ".join(items) + "]"
        parts.append(f"{_json_text(key)}: {value}")
    return Markup("{" + ", ".join(parts) + "}")  # noqa: S704 — JSON, escaped as tojson does


def _with_chain(page: dict[str, Any], t: i18n.Translate) -> dict[str, Any]:
    """The page with its traceability chain drawn (in the page's language), for
    a certificate that links to others."""
    trace = page.get("chain")
    if trace is not None:
        page["chain_svg"] = chain_diagram.chain_svg(
            trace, lambda status: t(f"chain.{status}"), t("chain.cut")
        )
    return page


# --- rendering ----------------------------------------------------------------------

BROWSER_MESSAGES = (
    "browser.running",
    "browser.ok",
    "browser.failed",
    "browser.unsupported",
    "browser.no_webcrypto",
    "check.key",
    "check.signature",
    "check.checkpoint",
    "check.inclusion",
    "check.entry",
    "check.consistency",
    "check.first_visit",
    "check.witnesses",
    "witness.too_few",
)


@functools.cache
def _browser_messages(lang: str) -> Markup:
    """The in-browser check's messages in ``lang``, as the page embeds them (what
    Jinja's ``tojson`` makes of them, made once per language)."""
    t = i18n.translator(lang)
    return htmlsafe_json_dumps({k: t(k) for k in BROWSER_MESSAGES}, sort_keys=True)


_UNQUOTED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~/-"
"""The characters ``quote(path, safe="/")`` leaves as they are: a path of them
alone (a mark's token is one) is not quoted, as it would not be changed."""


def _unquoted(path: str) -> bool:
    """Is ``path`` only :data:`_UNQUOTED` characters? (ASCII, then nothing left
    once they are deleted: one pass, not a regular expression's per character.)"""
    return path.isascii() and not path.encode("ascii").translate(None, _UNQUOTED)


def _switch_url(scope: Scope, lang: str) -> str:
    """This page's path and query with ``lang`` set (every earlier ``lang``
    dropped): the language switch, a relative link."""
    path = scope.get("root_path", "") + scope["path"]
    if not _unquoted(path):
        path = quote(path, safe="/")
    query = scope.get("query_string", b"").decode("utf-8", "replace")
    if not query:  # what urlencode makes of ("lang", "en" or "zh") alone
        return f"{path}?lang={lang}"
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "lang"]
    return f"{path}?{urlencode([*kept, ('lang', lang)])}"


def _translator(request: Request, lang: str | None) -> i18n.Translate:
    # What request.cookies and request.headers.get("accept-language") give, read
    # in one pass over the headers (no Headers made); cookies parsed as Starlette
    # does, only if there are any.
    has_cookie = False
    accept_language = None
    for key, value in request.scope["headers"]:
        if key == b"cookie":
            has_cookie = True
        elif key == b"accept-language" and accept_language is None:
            accept_language = value.decode("latin-1")
    cookie = request.cookies.get(i18n.COOKIE) if has_cookie else None
    return i18n.translator(i18n.choose(lang, cookie, accept_language))


def _render(
    request: Request,
    t: i18n.Translate,
    explicit_lang: str | None,
    template: str,
    context: dict[str, Any],
    status: int,
) -> Response:
    """``template`` in ``t``'s language with ``context`` (made for this page: the
    words every page has are added to it)."""
    other = "zh" if t.lang == "en" else "en"
    context.update(
        t=t,
        lang=t.lang,
        switch_url=_switch_url(request.scope, other),
        browser_messages_json=_browser_messages(t.lang),
    )
    response = PageResponse(
        templating.render(templating.template(t.lang, template), context), status
    )
    if explicit_lang in i18n.LANGUAGES:
        # The switch is remembered, so the next scan opens in the chosen language.
        response.set_cookie(
            i18n.COOKIE, explicit_lang, max_age=365 * 86400, samesite="lax", httponly=True
        )
    return response


def _certificate_response(
    request: Request,
    t: i18n.Translate,
    explicit_lang: str | None,
    context: dict[str, Any],
    status: int,
) -> Response:
    """``certificate.html`` for a page model (or a verdict alone), with the words
    only known now (the verdict's, a kind's, each accreditation's status and event
    type: a key it has no word for is shown as itself)."""
    context["verdict_text"] = t("verdict." + context["verdict"].key)
    if "history" in context:
        issuer = context["issuer"]
        context["kind_text"] = t.word("kind.", context["kind"])
        context["accreditations"] = [
            (a, t.word("acc.", a["status"])) for a in (issuer["accreditations"] if issuer else ())
        ]
        context["events"] = [(e, t.word("event.", e["type"])) for e in context["history"]]
    return _render(request, t, explicit_lang, "certificate.html", context, status)
