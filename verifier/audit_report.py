"""The two reports of an audit bundle, ``report.csv`` and ``report.html``: pure
functions of the verified rows, so ``qiverify audit`` derives them again and
compares them byte for byte with the ones in the bundle.

Each report is written in three parts so neither side holds all rows: a head
(from the manifest's facts), one line per selected event, and a tail (the
summary, known only after the last row). The HTML page is bilingual (English
and Chinese side by side), self-contained (no script, no external style) and
readable in any browser.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CSV_COLUMNS = (
    "logged_at",
    "index",
    "certificate_id",
    "issuer",
    "event_type",
    "status_after",
    "verdict",
)

LABELS: Mapping[str, tuple[str, str]] = {
    "title": ("QI Ledger audit bundle", "QI Ledger 审计包"),
    "log": ("Log", "日志"),
    "log_key": ("Log verifier key", "日志验证公钥"),
    "checkpoint": ("Proven against checkpoint size", "所依据的检查点大小"),
    "selection": ("Selection", "选取范围"),
    "logged_at": ("Logged at (UTC)", "记录时间（UTC）"),
    "index": ("Index", "条目序号"),
    "certificate_id": ("Certificate", "证书"),
    "issuer": ("Issuer or body", "签发机构或认可机构"),
    "event_type": ("Event", "事件"),
    "status_after": ("Status after the event", "事件后状态"),
    "verdict": ("Verdict", "结论"),
    "summary": ("Summary", "汇总"),
    "rows": ("Selected events", "所选事件数"),
    "issuers": ("Issuers and bodies", "机构数"),
    "by_type": ("Events by type", "按事件类型"),
    "by_status": ("Certificates by status after their last selected event", "证书最终状态"),
    "by_verdict": ("Events by verdict", "按结论"),
    "how": (
        "Check this bundle offline: qiverify audit BUNDLE.zip --log-key KEY. "
        "This page is derived from the signed entries; the check re-derives it.",
        "离线核验本审计包：qiverify audit BUNDLE.zip --log-key KEY。"
        "本页由已签名的日志条目生成，核验时会重新生成并逐字节比对。",
    ),
}


@dataclass(frozen=True)
class ReportRow:
    """One selected event as both reports show it."""

    logged_at: str
    index: int
    certificate_id: str
    issuer: str
    event_type: str
    status_after: str
    verdict: str

    def values(self) -> tuple[str, ...]:
        return (
            self.logged_at,
            str(self.index),
            self.certificate_id,
            self.issuer,
            self.event_type,
            self.status_after,
            self.verdict,
        )


_CSV_SPECIAL = frozenset(',"\r\n')


def _csv_line(values: tuple[str, ...]) -> bytes:
    if not any(_CSV_SPECIAL.intersection(v) for v in values):
        # what csv.writer writes for fields it need not quote, without its setup cost
        return (",".join(values) + "\r\n").encode("utf-8")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)  # RFC 4180 line ends
    return buffer.getvalue().encode("utf-8")


def csv_head() -> bytes:
    return _csv_line(CSV_COLUMNS)


def csv_row(row: ReportRow) -> bytes:
    return _csv_line(row.values())


def _both(key: str) -> str:
    en, zh = LABELS[key]
    return f'{html.escape(en)} <span lang="zh">{html.escape(zh)}</span>'


_PLAIN = re.compile("[^&<>\"']*")  # what html.escape leaves as it is


def _text(value: object) -> str:
    text = str(value)
    return text if _PLAIN.fullmatch(text) else html.escape(text, quote=True)


def html_head(facts: Mapping[str, Any]) -> bytes:
    """The page up to the table's first row; ``facts``: origin, log_key,
    checkpoint_size, selection (a JSON object)."""
    selection = ", ".join(f"{k}={v}" for k, v in sorted(facts["selection"].items()))
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(LABELS['title'][0])} / {_text(LABELS['title'][1])}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:.2em .5em;text-align:left}"
        "th span,h1 span,h2 span,dt span{color:#555}</style></head><body>",
        f"<h1>{_both('title')}</h1>",
        "<dl>",
        f"<dt>{_both('log')}</dt><dd>{_text(facts['origin'])}</dd>",
        f"<dt>{_both('log_key')}</dt><dd><code>{_text(facts['log_key'])}</code></dd>",
        f"<dt>{_both('checkpoint')}</dt><dd>{_text(facts['checkpoint_size'])}</dd>",
        f"<dt>{_both('selection')}</dt><dd>{_text(selection)}</dd>",
        "</dl>",
        f'<p>{_text(LABELS["how"][0])}<br><span lang="zh">{_text(LABELS["how"][1])}</span></p>',
        "<table><thead><tr>" + "".join(f"<th>{_both(c)}</th>" for c in CSV_COLUMNS),
        "</tr></thead><tbody>",
    ]
    return ("\n".join(head) + "\n").encode("utf-8")


def html_row(row: ReportRow) -> bytes:
    cells = "".join(f"<td>{_text(v)}</td>" for v in row.values())
    return f"<tr>{cells}</tr>\n".encode()


def _counts(title: str, counts: Mapping[str, int]) -> str:
    items = "".join(f"<li>{_text(k)}: {v}</li>" for k, v in sorted(counts.items()))
    return f"<h3>{_both(title)}</h3><ul>{items}</ul>"


def html_tail(summary: Mapping[str, Any]) -> bytes:
    """The rest of the page: the summary (:meth:`verifier.bundle.Summary.to_json`)."""
    tail = [
        "</tbody></table>",
        f"<h2>{_both('summary')}</h2>",
        f"<p>{_both('rows')}: {summary['rows']}; {_both('issuers')}: {summary['issuers']}</p>",
        _counts("by_type", summary["events_by_type"]),
        _counts("by_status", summary["certificates_by_status"]),
        _counts("by_verdict", summary["events_by_verdict"]),
        "</body></html>",
    ]
    return ("\n".join(tail) + "\n").encode("utf-8")
