"""The traceability chain as an SVG diagram, drawn on the server for the
verification page (issue 15, item 3): readable with JavaScript off, one box per
certificate the chain reaches, national roots at the top, the certificate itself
at the bottom, each box coloured by its status, each arrow a link with its
digest check.

Drawn from the public answer of ``GET /api/v1/traceability/{id}``
(:func:`registry.traceability.trace_view`), so the picture says nothing the API
does not. Every text is escaped; a box of a registered certificate links to its
page. A large chain is cut to :data:`MAX_PER_ROW` boxes a row and
:data:`MAX_ROWS` rows, and says so (the API answer has all of it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from registry.traceability import EXTERNAL_WORDS
from verifier.traceability import MISMATCH
from verifier.trust import IAF_STATUS

MAX_PER_ROW = 6
MAX_ROWS = 6
BOX_W, BOX_H = 190, 46
GAP_X, GAP_Y = 20, 44
MARGIN = 10
LABEL_CHARS = 26
LINK_STROKE = 'stroke="#555" stroke-width="1.5"'
MISMATCH_STROKE = 'stroke="#a31515" stroke-width="2" stroke-dasharray="6 3"'

STATUS_KEY = {**{words: key for key, words in IAF_STATUS.items()}, EXTERNAL_WORDS: "external"}
"""The answer's status words back to the status keys the page translates."""
STATUS_CLASS = {
    "active": "ok",
    "suspended": "warn",
    "superseded": "warn",
    "expired": "warn",
    "withdrawn": "bad",
    "invalid": "bad",
    "external": "external",
}


@dataclass(frozen=True)
class _Box:
    certificate_id: str
    status: str
    """A status key (``active`` …) or ``external``."""
    row: int
    """0: the certificate itself; 1: what it links to; …"""
    column: int


def _label(certificate_id: str) -> str:
    if len(certificate_id) <= LABEL_CHARS:
        return certificate_id
    return certificate_id[: LABEL_CHARS - 1] + "…"


def _layout(trace: Mapping[str, Any]) -> tuple[dict[str, _Box], list[dict[str, Any]], bool]:
    """Boxes by id (each at the least depth it is reached), the drawn links, and
    whether anything was left out."""
    start = str(trace["certificate_id"])
    rows: list[list[str]] = [[start]]
    status = {start: STATUS_KEY.get(str(trace["status"]), "invalid")}
    cut = bool(trace.get("truncated"))
    for link in trace["links"]:
        target, depth = str(link["to"]), int(link["depth"])
        status.setdefault(target, STATUS_KEY.get(str(link["status"]), "invalid"))
        if any(target in row for row in rows):
            continue
        if depth >= MAX_ROWS:
            cut = True
            continue
        while len(rows) <= depth:
            rows.append([])
        if len(rows[depth]) >= MAX_PER_ROW:
            cut = True
            continue
        rows[depth].append(target)
    boxes = {
        cert_id: _Box(cert_id, status[cert_id], r, c)
        for r, row in enumerate(rows)
        for c, cert_id in enumerate(row)
    }
    drawn = [
        link
        for link in trace["links"]
        if str(link["from"]) in boxes and str(link["to"]) in boxes and link["from"] != link["to"]
    ]
    return boxes, drawn, cut or len(drawn) < len(trace["links"])


def chain_svg(trace: Mapping[str, Any], words: Callable[[str], str], cut_words: str) -> Markup:
    """The diagram of ``trace`` (a trace_view answer) as inline SVG markup.
    ``words(status key)`` names a status in the page's language; ``cut_words``
    is the note shown when the chain was cut."""
    boxes, links, cut = _layout(trace)
    rows = 1 + max(b.row for b in boxes.values())
    widest = max(sum(1 for b in boxes.values() if b.row == r) for r in range(rows))
    width = 2 * MARGIN + widest * BOX_W + (widest - 1) * GAP_X
    height = 2 * MARGIN + rows * BOX_H + (rows - 1) * GAP_Y + (24 if cut else 0)

    def place(box: _Box) -> tuple[float, float]:
        in_row = sum(1 for b in boxes.values() if b.row == box.row)
        row_width = in_row * BOX_W + (in_row - 1) * GAP_X
        x = (width - row_width) / 2 + box.column * (BOX_W + GAP_X)
        y = MARGIN + (rows - 1 - box.row) * (BOX_H + GAP_Y)  # roots on top
        return x, y

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="chain" class="chain" role="img" '
        f'viewBox="0 0 {width:g} {height:g}" width="{width:g}" height="{height:g}" '
        f'aria-labelledby="chain-title">',
        f'<title id="chain-title">{escape(str(trace["certificate_id"]))}</title>',
        '<defs><marker id="chain-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]
    for link in links:
        fx, fy = place(boxes[str(link["from"])])
        tx, ty = place(boxes[str(link["to"])])
        mismatch = link["digest_check"] == MISMATCH
        css, stroke = ("link mismatch", MISMATCH_STROKE) if mismatch else ("link", LINK_STROKE)
        out.append(
            f'<line class="{css}" '
            f'data-from="{escape(str(link["from"]))}" data-to="{escape(str(link["to"]))}" '
            f'x1="{fx + BOX_W / 2:g}" y1="{fy:g}" x2="{tx + BOX_W / 2:g}" y2="{ty + BOX_H:g}" '
            f'{stroke} marker-end="url(#chain-arrow)">'
            f"<title>{escape(str(link['role']))}: {escape(str(link['digest_check']))}</title>"
            "</line>"
        )
    for box in boxes.values():
        out.append(_box_svg(box, place(box), words))
    if cut:
        out.append(
            f'<text class="cut" x="{MARGIN}" y="{height - MARGIN:g}" font-size="13">'
            f"{escape(cut_words)}</text>"
        )
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 — every text and attribute above is escaped


def _box_svg(box: _Box, at: tuple[float, float], words: Callable[[str], str]) -> str:
    x, y = at
    css = STATUS_CLASS.get(box.status, "bad")
    external = box.status == "external"
    name = escape(box.certificate_id)
    dashed = ' stroke-dasharray="5 3"' if external else ""
    shape = (
        f'<rect x="{x:g}" y="{y:g}" width="{BOX_W}" height="{BOX_H}" rx="6" '
        f'class="node {css}" fill="#ffffff" stroke="#555555"{dashed}/>'
        f'<text x="{x + 8:g}" y="{y + 19:g}" font-size="13">{escape(_label(box.certificate_id))}'
        "</text>"
        f'<text x="{x + 8:g}" y="{y + 37:g}" font-size="12" class="status">'
        f"{escape(words(box.status))}</text>"
    )
    group = (
        f'<g class="box" data-certificate="{name}" data-status="{escape(box.status)}">'
        f"<title>{name} — {escape(words(box.status))}</title>{shape}</g>"
    )
    if external:
        return group
    return f'<a href="/c/{escape(quote(box.certificate_id, safe="/"))}">{group}</a>'
