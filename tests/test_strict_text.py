"""The fast character checks of signed notes and the strict base64 decoder equal
their plain definitions: every code point for the checks, hypothesis for base64."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier import note
from verifier.encoding import b64decode
from verifier.errors import MalformedError


def test_key_name_check_equals_its_definition_for_every_code_point() -> None:
    wrong = [
        hex(cp)
        for cp in range(0x110000)
        if bool(note._BAD_NAME_CHARACTER.search(chr(cp)))
        != (chr(cp) == "+" or chr(cp).isspace() or cp < 0x20 or 0xD800 <= cp <= 0xDFFF)
    ]
    assert wrong == []


def test_note_text_check_equals_its_definition_for_every_code_point() -> None:
    wrong = [
        hex(cp)
        for cp in range(0x110000)
        if bool(note._CONTROL.search(chr(cp))) != ((cp < 0x20 and cp != 0x0A) or cp == 0x7F)
    ]
    assert wrong == []


def reference_b64decode(text: str) -> bytes | None:
    """The plain definition: standard padded base64 that re-encodes to itself."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def check_against_reference(text: str) -> None:
    expected = reference_b64decode(text)
    if expected is None:
        with pytest.raises(MalformedError):
            b64decode(text, "value")
    else:
        assert b64decode(text, "value") == expected


@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n\té")
)
def test_b64decode_equals_the_reference_on_near_base64_text(text: str) -> None:
    check_against_reference(text)


@given(st.binary(max_size=80))
def test_b64decode_round_trips_and_refuses_every_respelling(data: bytes) -> None:
    text = base64.b64encode(data).decode("ascii")
    assert b64decode(text, "value") == data
    for position in range(len(text)):
        for replacement in "A/+=\n ":
            check_against_reference(text[:position] + replacement + text[position + 1 :])


def test_the_checks_refuse() -> None:
    with pytest.raises(MalformedError):
        note._check_key_name("a+b")
    with pytest.raises(MalformedError):
        b64decode("AB==", "value")  # decodes, but is not the canonical spelling
