"""How the pages' templates are compiled (registry/api/templating.py): the
constant words and the language resolved in each language's environment, and a
page's base inlined. What the pages then say, byte for byte, is
tests/test_page_answers.py's; here, what is (and is not) resolved or inlined.
"""

from __future__ import annotations

import jinja2
import pytest

from registry.api import i18n, templating


def compiled(lang: str, source: str, **context: object) -> str:
    env = templating.environment(lang)
    return env.from_string(source).render(t=i18n.translator(lang), lang=lang, **context)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_constant_words_and_lang_are_what_t_and_lang_say(lang: str) -> None:
    t = i18n.translator(lang)
    source = (
        '{{ t("history") }}|{{ t("no.such.key") }}|{{ lang }}'
        '|{{ "zh-CN" if lang == "zh" else "en" }}'
    )
    expected = f"{t('history')}|no.such.key|{lang}|{'zh-CN' if lang == 'zh' else 'en'}"
    assert compiled(lang, source) == expected
    env = templating.environment(lang)
    code = env.compile(source, raw=True)
    assert "context.call" not in code  # the words are literals now
    assert "resolve('lang')" not in code


def test_words_known_only_when_rendered_stay_calls() -> None:
    source = (
        '{{ t("mark.index", claimed=1, actual=2) }}|{{ t("verdict." + key) }}|{{ x.t("a") }}'
        "|{{ d(lang=1) }}"
    )

    class X:
        def t(self, key: str) -> str:
            return f"x:{key}"

    out = compiled("en", source, key="active", x=X(), d=lambda **kw: sorted(kw))
    t = i18n.translator("en")
    assert (
        out == f"{t('mark.index', claimed=1, actual=2)}|{t('verdict.active')}|x:a|[&#39;lang&#39;]"
    )


def test_a_word_is_escaped_once() -> None:
    i18n_messages = {"x.amp": {"en": "a <b> & 'c'", "zh": "a <b> & 'c'"}}
    original = i18n.MESSAGES
    i18n.MESSAGES = {**original, **i18n_messages}
    try:
        assert compiled("en", '{{ t("x.amp") }}') == "a &lt;b&gt; &amp; &#39;c&#39;"
    finally:
        i18n.MESSAGES = original


@pytest.mark.parametrize(
    "source", ["{% set lang = 'x' %}{{ lang }}", "{% for lang in 'ab' %}{% endfor %}"]
)
def test_a_template_setting_lang_is_refused(source: str) -> None:
    with pytest.raises(jinja2.TemplateSyntaxError):
        templating.environment("en").from_string(source)


def test_a_page_is_its_base_with_its_blocks() -> None:
    base = "<t>{% block title %}T{% endblock %}</t><m>{% block main %}M{% endblock %}</m>\n"
    page = '{% extends "base.html" %}\n{% block main %}{{ x }}{% endblock %}\n'
    inlined = templating.inline_blocks(base, page)
    assert inlined == "<t>T</t><m>{{ x }}</m>\n"
    loader = jinja2.DictLoader({"base.html": base, "page.html": page})
    env = jinja2.Environment(loader=loader, autoescape=True)
    assert env.get_template("page.html").render(x="y") == env.from_string(inlined).render(x="y")


@pytest.mark.parametrize(
    "page",
    [
        '{% extends "base.html" %}\n{% block main %}{{ super() }}{% endblock %}',
        '{% extends "base.html" %}\n{% block main %}{% block inner %}{% endblock %}{% endblock %}',
        '{% extends "base.html" %}\n{% block other %}x{% endblock %}',
        '{% extends "base.html" %}\noutside{% block main %}x{% endblock %}',
        '{% extends "base.html" %}\n{% block main -%} x {%- endblock %}',
        '{% extends "base.html" %}\n{% block main %}x{% endblock main %}',
    ],
)
def test_other_inheritance_is_refused(page: str) -> None:
    base = "<m>{% block main %}M{% endblock %}</m>"
    with pytest.raises(jinja2.TemplateError):
        templating.inline_blocks(base, page)


@pytest.mark.parametrize("name", ["certificate.html", "verify.html", "witnesses.html"])
def test_every_page_is_compiled_inlined(name: str) -> None:
    env = templating.environment("en")
    source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
    assert "{% extends" not in source
    assert "{% block" not in source
    assert source.startswith("<!doctype html>")


HOSTILE = ("", "a", "<script>'&\"</script>", "\u2028\u00e9\u4e2d\\\n", "LAB-1/DCC 1?x=<y>")


@pytest.mark.parametrize(
    "value", [*HOSTILE, 0, -3, 12345, True, None, jinja2.utils.markupsafe.Markup("<b>")]
)
def test_escape_is_markupsafe_s(value: object) -> None:
    assert templating._escape(value) == str(jinja2.utils.markupsafe.escape(value))


def test_the_page_json_is_tojson_s() -> None:
    from jinja2.utils import htmlsafe_json_dumps

    from registry.api.routes import pages

    for text in HOSTILE:
        entries = [
            {"index": 7, "type": text, "leaf_data": "QUJD+/==", "proof": []},
            {"index": 0, "type": "certificate.issue", "leaf_data": "", "proof": ["AA==", "b+/9"]},
        ]
        browser = {
            "certificate_id": text,
            "document_sha256": "ab" * 32,
            "origin": text + "origin",
            "verifier_key": "key+" + text,
            "checkpoint": f"origin\n3\n{text}\n\n— sig\n",
            "entries": entries,
            "consistency_url": "/api/v1/log/proof/consistency",
            "n": 3,
            "none": None,
        }
        written = [
            pages._entry_json(e["index"], e["type"], e["leaf_data"], e["proof"]) for e in entries
        ]
        expected = htmlsafe_json_dumps(browser, dumps=templating.SORTED_JSON.encode)
        assert pages._browser_json(browser, {"entries": written}) == expected
