"""Mark benchmark: QR size of v2 marks per certificate-id length, and mark
signing / verification per second on one core.

1. For certificate ids of 20, 30, 40 and 64 characters on a 25-character host
   (``HTTPS://QI-REGISTRY.EXAMPLE.CO.UK/M/<TOKEN>``): the URL length, the QR
   version at error correction M and the side in modules (quiet zone included),
   for a realistic index and time (4-byte CBOR integers: up to 4 billion entries
   and the year 2106) and for the largest ones (8-byte integers).
2. ``verifier.mark.sign`` and ``verifier.mark.verify`` per second (one thread),
   beside raw PyNaCl Ed25519 signs and verifies of the same Sig_structure size
   (the floor: the rest is CBOR and base32).
3. QR symbols per second (qrcode, the mask search included), and PNG (20 mm,
   300 dpi) and SVG renders per second of a cached symbol (what a repeated
   ``GET /api/v1/marks/...`` costs).

Not a test: it prints figures and asserts nothing about speed.

    .venv/bin/python bench/marks.py
    .venv/bin/python bench/marks.py --seconds 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from collections.abc import Callable

from registry import marks
from verifier import mark
from verifier.keys import SigningKey
from verifier.note import NoteVerifier

HOST = "qi-registry.example.co.uk"  # 25 characters
ID_LENGTHS = (20, 30, 40, 64)
KEY = SigningKey.from_seed(hashlib.sha256(b"bench marks").digest())
LOG = NoteVerifier.for_key(HOST + "/log", KEY.public_key)


def certificate_id(length: int) -> str:
    prefix = "LAB-0001/DCC-"
    return prefix + "7" * (length - len(prefix))


def rate(work: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``work`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(5):
        work()
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            work()
        count += 10
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per rate (default 2)")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, "
        f"{len(os.sched_getaffinity(0))} usable cores, Python {platform.python_version()}"
    )
    print(f"\nQR size at error correction M, host {HOST} ({len(HOST)} characters)")
    print(f"{'id chars':>8}  {'integers':>8}  {'URL chars':>9}  {'version':>7}  {'modules':>7}")
    for length in ID_LENGTHS:
        cid = certificate_id(length)
        for label, index, issued_at in (
            ("4-byte", 123_456_789, 1_795_600_000),
            ("8-byte", 2**64 - 1, 2**64 - 1),
        ):
            claims = mark.MarkClaims(cid, hashlib.sha256(cid.encode()).digest(), index, issued_at)
            url = mark.mark_url(f"https://{HOST}", mark.sign(claims, KEY, LOG))
            sym = marks.symbol(url)
            print(f"{length:>8}  {label:>8}  {len(url):>9}  {sym.version:>7}  {sym.modules:>7}")

    cid = certificate_id(30)
    claims = mark.MarkClaims(cid, hashlib.sha256(b"doc").digest(), 123_456_789, 1_795_600_000)
    token = mark.sign(claims, KEY, LOG)
    message = b"\x00" * 120  # about the Sig_structure of a 30-character id
    signature = KEY.sign(message)
    public = KEY.public_key
    url = mark.mark_url(f"https://{HOST}", token)
    print(f"\none core, {args.seconds:g} s each (30-character id)")
    figures = [
        ("mark.sign", rate(lambda: mark.sign(claims, KEY, LOG), args.seconds)),
        ("raw Ed25519 sign", rate(lambda: KEY.sign(message), args.seconds)),
        ("mark.verify", rate(lambda: mark.verify(token, LOG), args.seconds)),
        ("raw Ed25519 verify", rate(lambda: public.verify(signature, message), args.seconds)),
        ("QR symbol (uncached)", rate(lambda: marks.symbol.__wrapped__(url), args.seconds)),
        ("PNG 20 mm 300 dpi", rate(lambda: marks.render(url, "png"), args.seconds)),
        ("SVG 20 mm", rate(lambda: marks.render(url, "svg"), args.seconds)),
    ]
    for name, per_second in figures:
        print(f"{name:>20}: {per_second:>10,.0f} /s")
    sign, raw_sign, verify, raw_verify = (f for _, f in figures[:4])
    print(
        f"\nmark.sign / raw sign: {sign / raw_sign:.2f}; mark.verify / raw verify: "
        f"{verify / raw_verify:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
