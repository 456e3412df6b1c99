"""The pages' Jinja templates, compiled once per language with their constant
words in place, and each page's layout inlined.

A page holds a few dozen fixed words (``{{ t("history") }}``). Looked up and
escaped on every render, they were most of a scan page's template cost; here
each language has its own environment whose templates have every ``t("key")``
with a literal key and no values, and every ``lang``, resolved when the
template is compiled: the word (or language) becomes a string literal, which
Jinja escapes once and joins with the markup around it (``'zh-CN' if lang ==
'zh' else 'en'`` is folded whole). ``t`` stays in the context for the words a
page only knows when it renders (``t("mark.index", claimed=…)``), and ``lang``
too, with the same value.

A page that extends ``base.html`` is compiled as one template: its blocks put
in place of the base's (:func:`inline_blocks`). Jinja's inheritance would find
the base and pass every piece of output through each template's generator on
every render, about a tenth of a scan page's render. The page's bytes are the
same (``tests/test_page_answers.py`` pins them).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from jinja2.exceptions import TemplateSyntaxError
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream

from registry.api import i18n

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


class ConstantWords(Extension):
    """Resolves ``t("key")`` (a literal key, nothing else) to the word in the
    environment's ``page_lang``, as ``t`` itself would answer it (an unknown key
    is shown as itself), and the variable ``lang`` to ``page_lang``. Neither is
    touched as an attribute (``x.t``, ``x.lang``), nor ``lang`` as a name being
    given as a keyword (``f(lang=…)``); a template that sets ``lang`` is refused."""

    def filter_stream(self, stream: TokenStream) -> Iterable[Token]:
        lang: str = self.environment.page_lang  # type: ignore[attr-defined]
        return _resolved(list(stream), lang, i18n.translator(lang))


_CALL = ("name", "lparen", "string", "rparen")


def _resolved(tokens: list[Token], lang: str, t: i18n.Translate) -> Iterator[Token]:
    i = 0
    while i < len(tokens):
        token = tokens[i]
        after_dot = i > 0 and tokens[i - 1].type == "dot"
        following = tokens[i + 1].type if i + 1 < len(tokens) else None
        call = tokens[i : i + 4]
        if token.test("name:t") and not after_dot and tuple(x.type for x in call) == _CALL:
            yield Token(token.lineno, "string", t(call[2].value))
            i += 4
            continue
        if token.test("name:lang") and i > 0 and tokens[i - 1].test_any("name:set", "name:for"):
            raise TemplateSyntaxError("a page's lang is its environment's", token.lineno)
        if token.test("name:lang") and not after_dot and following != "assign":
            yield Token(token.lineno, "string", lang)
            i += 1
            continue
        yield token
        i += 1


_EXTENDS = re.compile(r'\A\{% extends "([\w.]+)" %\}\n')
_BLOCK = re.compile(r"\{% block (\w+) %\}(.*?)\{% endblock %\}", re.S)


def inline_blocks(base: str, page: str) -> str:
    """``page``'s source (which extends ``base``) as one template: ``base`` with
    each of its blocks replaced by the page's block of that name, if it has one.

    For the plain inheritance these templates use, and refused otherwise: blocks
    not nested, no ``super()``, nothing but blocks after the ``extends``, no
    whitespace control at a block's tags."""
    own: dict[str, str] = dict(_BLOCK.findall(page))
    rest = _BLOCK.sub("", _EXTENDS.sub("", page, count=1))
    unknown = own.keys() - {name for name, _ in _BLOCK.findall(base)}
    for source in (base, page):
        if "super()" in source or "{%-" in source or "-%}" in source:
            raise jinja2.TemplateError("a page's inheritance is not the plain kind inlined")
    if rest.strip() or unknown or any("{% block" in body for body in own.values()):
        raise jinja2.TemplateError("a page's inheritance is not the plain kind inlined")
    return _BLOCK.sub(lambda m: own.get(m.group(1), m.group(2)), base)


class InliningLoader(jinja2.FileSystemLoader):
    """Loads a template that extends another with its base inlined
    (:func:`inline_blocks`); the others as they are."""

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        extends = _EXTENDS.match(source)
        if extends is None:
            return source, filename, uptodate
        base, _, _ = super().get_source(environment, extends.group(1))
        return inline_blocks(base, source), filename, uptodate


try:  # the C escape ``markupsafe.escape`` wraps
    from markupsafe._speedups import _escape_inner
except ImportError:  # pragma: no cover - markupsafe's pure-Python one
    from markupsafe._native import _escape_inner


def _escape(value: object, /) -> str:
    """``markupsafe.escape(value)``'s text: for a ``str`` or an ``int`` (what a
    page's values are) a plain ``str``, escaped by the same C function, with no
    ``Markup`` made; a ``Markup`` is itself. Anything else (``None``, …) goes
    through ``markupsafe.escape`` itself. A page's compiled code only yields
    what this answers (Jinja writes ``escape(…)`` only around an output's
    value), so the page's text is the same."""
    if type(value) is str:
        return _escape_inner(value)
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is markupsafe.Markup:  # safe already: its __html__ is itself
        return value
    return markupsafe.escape(value)


class PageTemplate(jinja2.Template):
    """A template whose compiled code escapes its output with :func:`_escape`."""

    @classmethod
    def _from_namespace(
        cls,
        environment: jinja2.Environment,
        namespace: Any,
        globals: Any,
    ) -> jinja2.Template:
        namespace["escape"] = _escape
        return super()._from_namespace(environment, namespace, globals)


SORTED_JSON = json.JSONEncoder(sort_keys=True)
"""``json.dumps(value, sort_keys=True)`` is ``SORTED_JSON.encode(value)``."""


def environment(lang: str) -> jinja2.Environment:
    """The templates in ``lang`` (package data, never edited under a running
    server: no stat() of a template on every render)."""
    env = jinja2.Environment(
        loader=InliningLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(),
        auto_reload=False,
        extensions=[ConstantWords],
    )
    env.extend(page_lang=lang)
    env.template_class = PageTemplate
    # The pages use none of Jinja's default globals (range, dict, lipsum, …), and
    # every render copies the globals into its context.
    env.globals.clear()
    # tojson as Jinja's default (json.dumps, keys sorted), with one encoder made once.
    env.policies["json.dumps_function"] = SORTED_JSON.encode
    env.policies["json.dumps_kwargs"] = {}
    return env


ENVIRONMENTS = {lang: environment(lang) for lang in i18n.LANGUAGES}


@functools.cache
def template(lang: str, name: str) -> jinja2.Template:
    """Template ``name`` compiled for ``lang`` (one of :data:`i18n.LANGUAGES`)."""
    return ENVIRONMENTS[lang].get_template(name)


def render(template: jinja2.Template, context: dict[str, Any]) -> bytes:
    """``template.render(context).encode("utf-8")`` for a context made for this
    render alone: it is used as it is, not copied (twice) into a new one with the
    (no) globals; each piece is encoded as it comes (most are ASCII, a copy),
    rather than the page as one string (a character at a time once one piece is
    not Latin-1, as an em dash is)."""
    try:
        pieces = template.root_render_func(template.new_context(context, shared=True))
        return b"".join([piece.encode() for piece in pieces])
    except Exception:  # noqa: BLE001 — re-raised, with the template's lines in the traceback
        template.environment.handle_exception()
