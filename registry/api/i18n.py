"""The public pages' words in English and Chinese, and which one a visitor gets.

The choice, first match wins: ``?lang=`` (the page's visible switch), the ``lang``
cookie that switch leaves, then the ``Accept-Language`` header (RFC 9110 §12.5.4,
q-values honoured), then English.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("en", "zh")
DEFAULT = "en"
COOKIE = "lang"

MESSAGES: Mapping[str, Mapping[str, str]] = {
    "title": {"en": "QI Ledger certificate check", "zh": "QI Ledger 证书核验"},
    "switch": {"en": "中文", "zh": "English"},
    "verdict.active": {"en": "Authentic and valid", "zh": "真实有效"},
    "verdict.suspended": {"en": "Authentic, but suspended", "zh": "真实，但已暂停"},
    "verdict.withdrawn": {"en": "Authentic, but withdrawn", "zh": "真实，但已撤销"},
    "verdict.superseded": {"en": "Authentic, but superseded", "zh": "真实，但已被替代"},
    "verdict.expired": {"en": "Authentic, but expired", "zh": "真实，但已过期"},
    "verdict.invalid": {"en": "Not authentic", "zh": "不可信"},
    "verdict.not_found": {"en": "Not found", "zh": "未找到"},
    "why": {"en": "Why", "zh": "原因"},
    "not_found.text": {
        "en": "This registry has no certificate with that id.",
        "zh": "本登记系统中没有该编号的证书。",
    },
    "mark.not_authentic": {
        "en": "This QR mark was not issued by this registry, or it was altered or cut short.",
        "zh": "此二维码标志并非本登记系统签发，或已被篡改或截断。",
    },
    "mark.disagrees": {
        "en": "The QR mark is signed by this registry, but it does not match the registry's "
        "record of the certificate",
        "zh": "此二维码标志由本登记系统签名，但与登记记录不符",
    },
    "mark.no_certificate": {
        "en": "the registry has no certificate with the id the mark names",
        "zh": "登记系统中没有标志所指的证书",
    },
    "mark.digest": {
        "en": "the mark names another document (SHA-256) than the one registered",
        "zh": "标志所指的文件（SHA-256）与登记的文件不同",
    },
    "mark.index": {
        "en": "the mark names log entry {claimed}, but the certificate was registered at {actual}",
        "zh": "标志所指的日志条目为 {claimed}，但证书登记于条目 {actual}",
    },
    "certificate_id": {"en": "Certificate", "zh": "证书编号"},
    "kind": {"en": "Kind", "zh": "类别"},
    "kind.dcc": {"en": "Digital calibration certificate (DCC)", "zh": "数字校准证书（DCC）"},
    "kind.management_system": {"en": "Management-system certification", "zh": "管理体系认证"},
    "kind.product": {"en": "Product certification", "zh": "产品认证"},
    "kind.person": {"en": "Person certification", "zh": "人员认证"},
    "issuer": {"en": "Accredited issuer", "zh": "获认可的签发机构"},
    "laboratory": {"en": "Laboratory named in the document", "zh": "文件所载实验室"},
    "accreditation": {"en": "Accreditation", "zh": "认可"},
    "accreditation.body": {"en": "Body", "zh": "认可机构"},
    "accreditation.number": {"en": "Number", "zh": "认可编号"},
    "accreditation.status": {"en": "Status", "zh": "状态"},
    "accreditation.until": {"en": "valid until", "zh": "有效期至"},
    "acc.granted": {"en": "granted", "zh": "有效"},
    "acc.suspended": {"en": "suspended", "zh": "暂停"},
    "acc.withdrawn": {"en": "withdrawn", "zh": "撤销"},
    "issued": {"en": "Issued", "zh": "签发日期"},
    "valid_until": {"en": "Valid until", "zh": "有效期至"},
    "none": {"en": "—", "zh": "—"},
    "superseded_by": {"en": "Superseded by", "zh": "替代证书"},
    "document_sha256": {"en": "Document SHA-256", "zh": "文件 SHA-256"},
    "history": {"en": "History in the log", "zh": "日志中的历史"},
    "history.index": {"en": "log index", "zh": "日志序号"},
    "event.certificate.issue": {"en": "Issued", "zh": "签发"},
    "event.certificate.amend": {"en": "Issued (amends another)", "zh": "签发（修订）"},
    "event.certificate.suspend": {"en": "Suspended", "zh": "暂停"},
    "event.certificate.reinstate": {"en": "Reinstated", "zh": "恢复"},
    "event.certificate.withdraw": {"en": "Withdrawn", "zh": "撤销"},
    "checked_at": {"en": "Checked at", "zh": "核验时间"},
    "traceability.at_risk": {
        "en": "Traceability at risk: a certificate it is traced to is suspended, withdrawn "
        "or invalid",
        "zh": "溯源存在风险：其所溯源的证书已被暂停、撤销或无效",
    },
    "traceability.via": {"en": "Through", "zh": "涉及证书"},
    "tree_size": {"en": "Log checkpoint size", "zh": "日志检查点大小"},
    "chain.heading": {"en": "Traceability chain", "zh": "溯源链"},
    "chain.caption": {
        "en": "Each arrow is a link in the certificate to the certificate of a standard or "
        "instrument used; the top row is where the chain ends. A dashed box is a "
        "certificate this registry does not hold; a dashed red arrow, a link whose "
        "SHA-256 does not match the registered document.",
        "zh": "每个箭头表示证书中对所用标准或仪器证书的引用；最上一行是溯源链的终点。"
        "虚线框表示本登记系统未收录的证书；红色虚线箭头表示其 SHA-256 与登记文件不符的引用。",
    },
    "chain.cut": {
        "en": "Only part of the chain is drawn; the JSON answer has all of it.",
        "zh": "图中只画出溯源链的一部分；JSON 答复包含全部内容。",
    },
    "chain.active": {"en": "Valid", "zh": "有效"},
    "chain.suspended": {"en": "Suspended", "zh": "已暂停"},
    "chain.withdrawn": {"en": "Withdrawn", "zh": "已撤销"},
    "chain.superseded": {"en": "Superseded", "zh": "已被取代"},
    "chain.expired": {"en": "Expired", "zh": "已过期"},
    "chain.invalid": {"en": "Invalid", "zh": "无效"},
    "chain.external": {"en": "External, unverified", "zh": "外部证书，未核验"},
    "browser.heading": {"en": "Check in your browser", "zh": "在您的浏览器中核验"},
    "browser.nojs": {
        "en": "The verdict above is the registry's. With JavaScript on, this page re-checks "
        "it in your browser: the log's signature, the proofs, and that the log did not "
        "change its history since your last visit.",
        "zh": "上面的结论来自登记系统。启用 JavaScript 后，本页会在您的浏览器中复核："
        "日志签名、证明，以及自您上次访问以来日志未改写历史。",
    },
    "browser.running": {"en": "Checking in your browser…", "zh": "正在浏览器中核验…"},
    "browser.ok": {"en": "Verified in your browser", "zh": "已在您的浏览器中核验"},
    "browser.failed": {
        "en": "Browser check FAILED — do not trust this page",
        "zh": "浏览器核验失败——请勿信任本页",
    },
    "browser.unsupported": {
        "en": "Your browser cannot check Ed25519 signatures (Web Crypto); shown is the "
        "registry's verdict only.",
        "zh": "您的浏览器不支持 Ed25519 签名核验（Web Crypto）；以上仅为登记系统的结论。",
    },
    "browser.no_webcrypto": {
        "en": "Web Crypto is not available here (it needs HTTPS); shown is the registry's "
        "verdict only.",
        "zh": "此处无法使用 Web Crypto（需要 HTTPS）；以上仅为登记系统的结论。",
    },
    "check.key": {"en": "Log key well-formed", "zh": "日志公钥格式正确"},
    "check.signature": {
        "en": "Checkpoint signed by the log key",
        "zh": "检查点由日志密钥签名",
    },
    "check.checkpoint": {"en": "Checkpoint of this log", "zh": "检查点属于本日志"},
    "check.inclusion": {
        "en": "Entry {index} is in the log (inclusion proof)",
        "zh": "条目 {index} 在日志中（包含证明）",
    },
    "check.entry": {
        "en": "Entry {index} says what the history says",
        "zh": "条目 {index} 与历史记录一致",
    },
    "check.consistency": {
        "en": "Consistent with the log this browser saw before",
        "zh": "与本浏览器先前所见日志一致",
    },
    "check.first_visit": {
        "en": "First check of this log in this browser: checkpoint remembered",
        "zh": "本浏览器首次核验此日志：已记住检查点",
    },
    "check.witnesses": {
        "en": "Cosigned by at least {min} of the {count} witnesses this browser requires",
        "zh": "至少有本浏览器要求的 {count} 个见证方中的 {min} 个联署了检查点",
    },
    "witness.too_few": {
        "en": "only {valid} of the witnesses this browser requires cosigned this checkpoint, "
        "{min} needed (not cosigned: {missing}); if the certificate was just registered, "
        "its witnesses may not have cosigned yet: try again in a minute",
        "zh": "本浏览器要求的见证方中仅 {valid} 个联署了此检查点，需要 {min} 个"
        "（未联署：{missing}）；若证书刚刚登记，见证方可能尚未联署，请一分钟后再试",
    },
    "browser.witnesses": {
        "en": "Witnesses this browser requires",
        "zh": "本浏览器要求的见证方",
    },
    "witnesses.heading": {"en": "Witnesses", "zh": "见证方"},
    "witnesses.text": {
        "en": "Witnesses are independent parties that cosign the log's checkpoints only "
        "after checking that the log never rewrote its history. Choose here which "
        "witnesses this browser requires, and how many of them: a certificate page then "
        'says "verified in your browser" only for a checkpoint at least that many of '
        "them cosigned. Your choice is kept in this browser only.",
        "zh": "见证方是独立的第三方，只在核实日志从未改写历史之后才联署日志的检查点。"
        "在此选择本浏览器要求哪些见证方以及需要其中多少个：之后，只有当检查点至少由这么多"
        "见证方联署时，证书页面才会显示“已在您的浏览器中核验”。您的选择只保存在本浏览器中。",
    },
    "witnesses.declared": {
        "en": "Witnesses this registry asks to cosign",
        "zh": "本登记系统请求联署的见证方",
    },
    "witnesses.declared_none": {
        "en": "This registry names no witnesses.",
        "zh": "本登记系统未指定见证方。",
    },
    "witnesses.nojs": {
        "en": "Choosing witnesses needs JavaScript: the check they are for runs in your browser.",
        "zh": "选择见证方需要启用 JavaScript：相应的核验在您的浏览器中进行。",
    },
    "witnesses.yours": {"en": "Required by this browser", "zh": "本浏览器的要求"},
    "witnesses.keys": {
        "en": "Witness verifier keys (name+id+key), one per line",
        "zh": "见证方验证公钥（名称+标识+公钥），每行一个",
    },
    "witnesses.min": {"en": "How many of them must cosign", "zh": "需要其中多少个联署"},
    "witnesses.save": {"en": "Save", "zh": "保存"},
    "witnesses.use_declared": {
        "en": "Fill in this registry's witnesses",
        "zh": "填入本登记系统的见证方",
    },
    "witnesses.clear": {"en": "Require none", "zh": "不作要求"},
    "witnesses.saved": {"en": "Saved in this browser.", "zh": "已保存在本浏览器中。"},
    "witnesses.cleared": {
        "en": "This browser requires no witnesses now.",
        "zh": "本浏览器现在不要求任何见证方。",
    },
    "witnesses.none_required": {
        "en": "This browser requires no witnesses for this log.",
        "zh": "本浏览器对此日志不要求见证方。",
    },
    "witnesses.required": {
        "en": "This browser requires {min} of {count} witnesses for this log.",
        "zh": "本浏览器要求此日志的 {count} 个见证方中至少 {min} 个联署。",
    },
    "witnesses.bad_min": {
        "en": "The number must be from 1 to {count}.",
        "zh": "数量必须在 1 到 {count} 之间。",
    },
    "witnesses.no_keys": {
        "en": "Enter at least one witness key.",
        "zh": "请至少输入一个见证方公钥。",
    },
    "verify.heading": {"en": "Check a certificate file", "zh": "核验证书文件"},
    "verify.text": {
        "en": "Choose or drop the certificate file. Its SHA-256 is computed here in your "
        "browser; the file never leaves your computer.",
        "zh": "选择或拖入证书文件。其 SHA-256 在您的浏览器中计算，文件不会离开您的计算机。",
    },
    "verify.choose": {"en": "Choose a file or drop it here", "zh": "选择文件或拖放到此处"},
    "verify.nojs": {
        "en": "This check needs JavaScript, to compute the file's hash on your computer. "
        "Without it, check the file with the command line:",
        "zh": "此核验需要 JavaScript 在您的计算机上计算文件哈希。若不启用，请使用命令行：",
    },
    "verify.hashing": {"en": "Computing SHA-256…", "zh": "正在计算 SHA-256…"},
    "verify.unregistered": {
        "en": "Not registered: no certificate in this registry has this document",
        "zh": "未登记：本登记系统中没有与此文件对应的证书",
    },
    "verify.found": {"en": "Registered as", "zh": "已登记为"},
    "verify.error": {"en": "The lookup failed", "zh": "查询失败"},
    "verify.link": {"en": "Check a certificate file", "zh": "核验证书文件"},
}


def choose(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The page language for this request."""
    for explicit in (query, cookie):
        if explicit in LANGUAGES:
            return explicit
    return from_accept_language(accept_language or "")


def from_accept_language(header: str) -> str:
    """The best of our languages for an ``Accept-Language`` header; ties keep
    the header's order. Malformed parts are skipped, never an error."""
    best, best_q = DEFAULT, 0.0
    for part in header[:1000].split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
            if not 0.0 <= q <= 1.0:
                continue
        primary = tag.strip().lower().split("-", 1)[0]
        if primary in LANGUAGES and q > best_q:
            best, best_q = primary, q
    return best


def translator(lang: str) -> Translate:
    return _TRANSLATORS.get(lang) or _TRANSLATORS[DEFAULT]


class Translate:
    """``t("key", name=value)``: the message in the page's language; an unknown key
    is shown as itself, so a missing word never breaks a page."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def __call__(self, key: str, **values: object) -> str:
        text = MESSAGES.get(key, {}).get(self.lang, key)
        return text.format(**values) if values else text

    def has(self, key: str) -> bool:
        return key in MESSAGES

    def word(self, prefix: str, value: str) -> str:
        """The word for ``prefix + value`` if there is one, else ``value`` itself
        (a status or type the pages have no word for yet)."""
        key = prefix + value
        return self(key) if key in MESSAGES else value


_TRANSLATORS = {lang: Translate(lang) for lang in LANGUAGES}
"""One per language (a translator holds nothing else): made once, not per page."""
