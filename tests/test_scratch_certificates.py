"""fsck's scratch certificate store (registry.storage.scratch_certificates) behaves
exactly as the replay's in-memory store, also when most certificates have left
its hot set, and round-trips every field of a certificate."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from registry.storage.scratch_certificates import ScratchCertificates, decode, encode
from verifier import trust
from verifier.keys import KeyId

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
LABORATORY = st.none() | st.tuples(TEXT, TEXT)


@given(
    TEXT,
    TEXT,
    st.none() | st.dates(min_value=date(1, 1, 1)),
    st.lists(st.tuples(st.integers(0, 2**62), TEXT, TEXT, TEXT), min_size=1, max_size=4),
    st.none() | TEXT,
    LABORATORY,
)
def test_a_certificate_round_trips_every_field(
    cert_id: str,
    reason: str,
    until: date | None,
    events: list[tuple[int, str, str, str]],
    successor: str | None,
    laboratory: tuple[str, str] | None,
) -> None:
    cert = trust.Certificate(
        cert_id,
        "LAB-1",
        "dcc",
        "ab" * 32,
        until,
        [trust.CertificateEvent(i, t, at, KeyId(k), reason) for i, t, at, k in events],
        successor,
        laboratory,
    )
    assert decode(encode(cert)) == cert


# An operation: ("add", digest number) | ("event", which) | ("late event", which: an
# event recorded after every other certificate was read in between) | ("supersede",
# which, by) | ("get", which) | ("digest", digest number). "which" picks among those
# added so far.
OPERATION = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 5)),
    st.tuples(st.just("event"), st.integers(0, 10**6)),
    st.tuples(st.just("supersede"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("get"), st.integers(0, 10**6)),
    st.tuples(st.just("late event"), st.integers(0, 10**6)),
    st.tuples(st.just("digest"), st.integers(0, 5)),
)


@given(st.lists(OPERATION, min_size=10, max_size=120))
def test_the_scratch_store_behaves_as_the_memory_store(operations: list[tuple[int, ...]]) -> None:
    memory = trust.MemoryCertificates()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = ScratchCertificates(Path(tmp) / "c.db", hot=0)  # the smallest hot set
        try:
            ids: list[str] = []
            index = 0
            for op in operations:
                index += 1
                if op[0] == "add":
                    cert_id = f"LAB-1/{index}"
                    digest = f"{op[1]:064x}"
                    first = trust.CertificateEvent(index, "certificate.issue", "t", KeyId("k"))
                    for store in (memory, scratch):
                        store.add(trust.Certificate(cert_id, "LAB-1", "dcc", digest, None, [first]))
                    ids.append(cert_id)
                elif op[0] == "digest":
                    digest = f"{op[1]:064x}"
                    assert scratch.with_document(digest) == memory.with_document(digest)
                elif not ids:
                    continue
                elif op[0] == "get":
                    cert_id = ids[op[1] % len(ids)]
                    assert scratch.get(cert_id) == memory.get(cert_id)
                elif op[0] in ("event", "late event"):
                    cert_id = ids[op[1] % len(ids)]
                    event = trust.CertificateEvent(index, "certificate.suspend", "t", KeyId("k"))
                    for store in (memory, scratch):
                        got = store.get(cert_id)
                        assert got is not None
                        if op[0] == "late event":  # the others push it out of the hot set
                            for other in ids:
                                store.get(other)
                        store.add_event(got, event)
                else:
                    cert_id, by = ids[op[1] % len(ids)], ids[op[2] % len(ids)]
                    for store in (memory, scratch):
                        got = store.get(cert_id)
                        assert got is not None
                        store.supersede(got, by)
            assert scratch.get("LAB-1/none") is None
            assert list(scratch.in_log_order()) == list(memory.values())
            assert list(scratch.later_events()) == sorted(
                (e.index, c.certificate_id) for c in memory.values() for e in c.events[1:]
            )
        finally:
            scratch.close()
