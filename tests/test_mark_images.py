"""QR mark images (PNG, SVG) read back by a real decoder (zxing-cpp), their QR
version at error correction M, and where they are served: the HTTP API
(``/api/v1/marks/{svg|png}/{id}``, receipts' ``mark_url``) and ``qiledger mark``.
"""

from __future__ import annotations

import io
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest
import qrcode
import qrcode.constants
import zxingcpp
from fastapi.testclient import TestClient
from PIL import Image

from registry import marks
from registry.api.app import create_app
from registry.api.service import ServiceOptions
from registry.cli.main import main as qiledger
from registry.config import Settings
from registry.errors import ConfigError
from registry.ledger import Ledger
from tests.conftest import make_ledger
from tests.helpers import demo_dcc, key_from
from verifier import entry, mark
from verifier.errors import MalformedError, TooLargeError
from verifier.note import NoteVerifier

LAB = key_from("lab-1")
LOG_KEY = key_from("images log")
LOG = NoteVerifier.for_key("qi-registry.example.co.uk", LOG_KEY.public_key)
HOST_25 = "qi-registry.example.co.uk"
ID_30 = "LAB-1/DCC-2026-000000000000001"
SVG_NS = "{http://www.w3.org/2000/svg}"
PROBLEM_JSON = "application/problem+json"


def mark_url_for(certificate_id: str, index: int = 123_456, issued_at: int = 1_795_600_000) -> str:
    claims = mark.MarkClaims(certificate_id, b"\x42" * 32, index, issued_at)
    return mark.mark_url(f"https://{HOST_25}", mark.sign(claims, LOG_KEY, LOG))


def decode_png(data: bytes) -> list[str]:
    """Every QR code zxing-cpp finds in the image, as text."""
    return decode_image(Image.open(io.BytesIO(data)))


def decode_image(image: Image.Image) -> list[str]:
    """Every QR code zxing-cpp finds in the image, as text. Only QR codes: a
    caption's glyphs have been read as a 1D barcode ('0061') now and then."""
    return [
        r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode
    ]


def rasterize_svg(
    svg: bytes, pixels_per_module: int = 8
) -> tuple[Image.Image, ElementTree.Element]:
    """Draw the SVG's module path (``M x y h w v1 h-w z`` runs) in pixels: a strict
    reader of what render_svg writes, so the decoder sees exactly the drawn shapes."""
    root = ElementTree.fromstring(svg)  # noqa: S314 (our own output)
    width, height = (float(v) for v in root.attrib["viewBox"].split()[2:])
    image = Image.new(
        "L", (round(width * pixels_per_module), round(height * pixels_per_module)), 255
    )
    path = root.find(f"{SVG_NS}path")
    assert path is not None
    d = path.attrib["d"]
    runs = re.findall(r"M(\d+) (\d+)h(\d+)v1h-(\d+)z", d)
    assert "".join(f"M{x} {y}h{w}v1h-{b}z" for x, y, w, b in runs) == d  # nothing else drawn
    for x, y, w, back in runs:
        assert w == back
        left, top = int(x) * pixels_per_module, int(y) * pixels_per_module
        image.paste(0, (left, top, left + int(w) * pixels_per_module, top + pixels_per_module))
    return image, root


# --- the symbol --------------------------------------------------------------------------


def test_a_30_character_id_on_a_25_character_host_fits_version_10_at_ec_m() -> None:
    assert (len(ID_30), len(HOST_25)) == (30, 25)
    # Up to the largest 4-byte index and time (4 billion entries, the year 2106).
    for index, issued_at in ((0, 0), (123_456, 1_795_600_000), (2**32 - 1, 2**32 - 1)):
        url = mark_url_for(ID_30, index, issued_at)
        assert set(url) <= set(string.digits + string.ascii_uppercase + " $%*+-./:")
        sym = marks.symbol(url)
        assert sym.version <= 10, (sym.version, len(url))
        assert sym.modules == 17 + 4 * sym.version + 2 * marks.QUIET_ZONE
        # qrcode's own answer for the same text at EC M (its optimizer picks the mode).
        code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
        code.add_data(url)
        code.make(fit=True)
        assert code.version == sym.version
        assert [d.mode for d in code.data_list] == [qrcode.util.MODE_ALPHA_NUM]


def test_only_64_bit_index_and_time_need_version_11() -> None:
    """The documented limit of the target: 8-byte CBOR integers add 8 bytes."""
    assert marks.symbol(mark_url_for(ID_30, 2**32, 2**32 - 1)).version == 11
    assert marks.symbol(mark_url_for(ID_30, 2**64 - 1, 2**64 - 1)).version == 11


def test_the_symbol_carries_the_quiet_zone() -> None:
    sym = marks.symbol(mark_url_for(ID_30))
    q = marks.QUIET_ZONE
    for row in sym.matrix[:q] + sym.matrix[-q:]:
        assert not any(row)
    for row in sym.matrix:
        assert not any(row[:q] + row[-q:])


# --- PNG ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("size_mm", "dpi"), [(20, 300), (25, 300), (20, 600), (40, 150)])
def test_zxing_reads_the_png_back_to_the_exact_url(size_mm: float, dpi: int) -> None:
    url = mark_url_for(ID_30)
    png = marks.render(url, "png", size_mm=size_mm, dpi=dpi)
    assert decode_png(png) == [url]
    image = Image.open(io.BytesIO(png))
    side = round(size_mm / 25.4 * dpi)
    assert image.size == (side, side)  # exactly size_mm at dpi
    assert [round(v) for v in image.info["dpi"]] == [dpi, dpi]  # and it prints at that size


def test_png_modules_are_whole_pixels_with_at_least_the_quiet_zone() -> None:
    url = mark_url_for(ID_30)
    sym = marks.symbol(url)
    image = Image.open(io.BytesIO(marks.render(url, "png", size_mm=20, dpi=300))).convert("L")
    side = image.size[0]
    module = side // sym.modules
    offset = (side - module * sym.modules) // 2
    for y, row in enumerate(sym.matrix):
        for x, dark in enumerate(row):
            # Every pixel of a module has the module's colour.
            left, top = offset + x * module, offset + y * module
            cell = image.crop((left, top, left + module, top + module))
            assert cell.getextrema() == ((0, 0) if dark else (255, 255)), (x, y)
    dark_rows = [y for y in range(side) if image.crop((0, y, side, y + 1)).getextrema()[0] == 0]
    assert dark_rows[0] >= marks.QUIET_ZONE * module
    assert side - 1 - dark_rows[-1] >= marks.QUIET_ZONE * module


def test_a_png_with_caption_still_reads_and_is_taller() -> None:
    url = mark_url_for(ID_30)
    plain = Image.open(io.BytesIO(marks.render(url, "png")))
    captioned_png = marks.render(url, "png", caption=ID_30)
    captioned = Image.open(io.BytesIO(captioned_png))
    assert decode_png(captioned_png) == [url]
    assert captioned.size[0] == plain.size[0]
    assert captioned.size[1] > plain.size[1]
    band = captioned.convert("L").crop((0, plain.size[1], *captioned.size))
    assert band.getextrema()[0] == 0  # the caption is drawn


@pytest.mark.parametrize(
    ("size_mm", "dpi", "error"),
    [
        (5, 72, MalformedError),  # 14 pixels for 65 modules
        (4, 300, MalformedError),  # under the smallest size
        (501, 300, MalformedError),  # over the largest size
        (float("nan"), 300, MalformedError),
        (float("inf"), 300, MalformedError),
        (20, 71, MalformedError),
        (20, 2401, MalformedError),
        (400, 2400, TooLargeError),  # 37795 pixels wide
    ],
)
def test_impossible_png_sizes_are_refused(size_mm: float, dpi: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        marks.render(mark_url_for(ID_30), "png", size_mm=size_mm, dpi=dpi)


@pytest.mark.parametrize("fmt", ["png", "svg"])
@pytest.mark.parametrize("caption", ["a\x00b", "line\nbreak", "\ud800"])
def test_undrawable_captions_are_refused(fmt: marks.ImageFormat, caption: str) -> None:
    with pytest.raises(MalformedError):
        marks.render(mark_url_for(ID_30), fmt, caption=caption)


def test_unknown_format_and_oversized_url_are_refused() -> None:
    with pytest.raises(MalformedError):
        marks.render(mark_url_for(ID_30), "gif", size_mm=20)  # type: ignore[arg-type]
    with pytest.raises(TooLargeError):
        marks.symbol("HTTPS://X/M/" + "A" * 5000)


# --- SVG ---------------------------------------------------------------------------------


def test_the_svg_draws_the_symbol_at_its_size_in_mm() -> None:
    url = mark_url_for(ID_30)
    svg = marks.render(url, "svg", size_mm=20)
    image, root = rasterize_svg(svg)
    assert decode_image(image) == [url]
    n = marks.symbol(url).modules
    assert (root.attrib["width"], root.attrib["height"]) == ("20mm", "20mm")
    assert root.attrib["viewBox"] == f"0 0 {n} {n}"
    assert root.find(f"{SVG_NS}text") is None
    assert root.findtext(f"{SVG_NS}title") == url


def test_the_svg_caption_is_text_and_escaped() -> None:
    url = mark_url_for(ID_30)
    hostile = 'LAB-1/<script>alert("x")</script> & é'
    svg = marks.render(url, "svg", size_mm=30, caption=hostile)
    image, root = rasterize_svg(svg)
    assert decode_image(image) == [url]
    assert b"<script>" not in svg
    assert root.findtext(f"{SVG_NS}text") == hostile
    assert root.attrib["width"] == "30mm"
    assert root.attrib["height"] == f"{30 + marks.CAPTION_BAND_MM:g}mm"
    assert [element.tag for element in root] == [
        f"{SVG_NS}title",
        f"{SVG_NS}rect",
        f"{SVG_NS}path",
        f"{SVG_NS}text",
    ]


# --- over HTTP ---------------------------------------------------------------------------


@dataclass
class Registry:
    client: TestClient
    ledger: Ledger
    certificate_id: str
    receipt: dict[str, object]


def _register(client: TestClient, ledger: Ledger) -> tuple[str, dict[str, object]]:
    """Register the demo DCC over HTTP as LAB-1; its id and the receipt."""
    from verifier import dsse, jcs, statement

    document = demo_dcc()
    token, _ = ledger.tokens.create("issuer", "LAB-1", "test")
    fields = ledger.documents.statement(document, "LAB-1", ledger.clock()).fields
    fields = {"signed_at": entry.format_time(ledger.clock()), **fields}
    envelope = jcs.canonical_bytes(dsse.sign(statement.encode(fields), LAB).to_json())
    response = client.post(
        "/api/v1/certificates",
        files={"document": ("dcc.xml", document), "envelope": ("e.json", envelope)},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    receipt = response.json()
    return str(receipt["certificate_id"]), receipt


@pytest.fixture
def registry(sqlite_settings: Settings) -> Iterator[Registry]:
    ledger = make_ledger(sqlite_settings, LAB)
    with TestClient(create_app(ledger, ServiceOptions())) as client:
        certificate_id, receipt = _register(client, ledger)
        yield Registry(client, ledger, certificate_id, receipt)
    ledger.close()


def test_the_png_served_reads_back_to_the_receipts_mark_url(registry: Registry) -> None:
    response = registry.client.get(f"/api/v1/marks/png/{registry.certificate_id}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    # No public URL configured: the URL names the host the request went to.
    url = registry.receipt["mark_url"]
    assert url == f"HTTP://TESTSERVER/M/{registry.receipt['mark']}"
    assert decode_png(response.content) == [url]
    claims = mark.verify(mark.token_from_url(str(url)), registry.ledger.identity.verifier)
    assert claims.certificate_id == registry.certificate_id
    assert claims.index == registry.receipt["index"]
    logged_at = entry.parse_time(registry.receipt["logged_at"])
    assert claims.issued_at == int(logged_at.timestamp())


def test_the_served_mark_is_deterministic(registry: Registry) -> None:
    path = f"/api/v1/marks/png/{registry.certificate_id}?size_mm=20&dpi=300"
    first, second = registry.client.get(path), registry.client.get(path)
    assert first.content == second.content
    svg = registry.client.get(f"/api/v1/marks/svg/{registry.certificate_id}")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert "default-src 'none'" in svg.headers["content-security-policy"]
    image, _ = rasterize_svg(svg.content)
    assert decode_image(image) == [registry.receipt["mark_url"]]


def test_the_served_png_takes_size_dpi_and_caption(registry: Registry) -> None:
    response = registry.client.get(
        f"/api/v1/marks/png/{registry.certificate_id}",
        params={"size_mm": "30", "dpi": "600", "caption": "true"},
    )
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    assert image.size[0] == round(30 / 25.4 * 600)
    assert image.size[1] > image.size[0]
    assert decode_png(response.content) == [registry.receipt["mark_url"]]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/marks/png/LAB-1/NO-SUCH-CERTIFICATE", 404, "not_found"),
        ("/api/v1/marks/svg/LAB-9/DCC-1", 404, "not_found"),
        ("/api/v1/marks/gif/LAB-1/DCC-2026-0001", 422, None),
        ("/api/v1/marks/png/no-slash", 422, None),
        ("/api/v1/marks/png/LAB-1/DCC-2026-0001?size_mm=1", 422, None),
        ("/api/v1/marks/png/LAB-1/DCC-2026-0001?size_mm=nan", 422, None),
        ("/api/v1/marks/png/LAB-1/DCC-2026-0001?dpi=100000", 422, None),
        ("/api/v1/marks/png/LAB-1/DCC-2026-0001?size_mm=5&dpi=72", 400, "malformed"),
        ("/api/v1/marks/png/LAB-1/DCC-2026-0001?size_mm=400&dpi=2400", 413, "too_large"),
    ],
)
def test_bad_mark_requests_are_problems(
    registry: Registry, path: str, status: int, code: str | None
) -> None:
    response = registry.client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    if code is not None:
        assert response.json()["code"] == code


def test_a_configured_public_url_is_used(sqlite_settings: Settings) -> None:
    ledger = make_ledger(sqlite_settings, LAB)
    options = ServiceOptions(public_url="https://registry.example.org:8443")
    with TestClient(create_app(ledger, options)) as client:
        certificate_id, receipt = _register(client, ledger)
        assert receipt["mark_url"] == f"HTTPS://REGISTRY.EXAMPLE.ORG:8443/M/{receipt['mark']}"
        png = client.get(f"/api/v1/marks/png/{certificate_id}").content
        assert decode_png(png) == [receipt["mark_url"]]
    ledger.close()


@pytest.mark.parametrize(
    "public_url", ["https://registry.example.org/verifier", "https://u@registry.example.org"]
)
def test_a_public_url_marks_cannot_live_under_is_refused_at_start(
    sqlite_settings: Settings, public_url: str
) -> None:
    ledger = make_ledger(sqlite_settings, LAB)
    try:
        with pytest.raises(ConfigError):
            create_app(ledger, ServiceOptions(public_url=public_url))
    finally:
        ledger.close()


def test_the_request_host_and_port_are_used_when_unset(registry: Registry) -> None:
    response = registry.client.get(
        f"/api/v1/marks/png/{registry.certificate_id}", headers={"Host": "qi.example:8080"}
    )
    (url,) = decode_png(response.content)
    assert url == f"HTTP://QI.EXAMPLE:8080/M/{registry.receipt['mark']}"


# --- qiledger mark, qiledger issue ---------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = qiledger(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ledger directory where LAB-1 (key file lab.key) is accredited."""
    monkeypatch.delenv("QILEDGER_PUBLIC_URL", raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    make_ledger(settings, LAB).close()
    from registry.keys import keyfile

    keyfile.write_private_key(tmp_path / "lab.key", LAB, None)
    (tmp_path / "dcc.xml").write_bytes(demo_dcc())
    return settings.data_dir


def test_issue_prints_the_mark_url_and_mark_writes_it(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ["--data-dir", str(data_dir)]
    lab = ["--key", str(tmp_path / "lab.key"), "--issuer", "LAB-1"]
    base = ["--public-url", "https://registry.example.org"]
    code, out, err = run(capsys, *d, "issue", str(tmp_path / "dcc.xml"), *lab, *base)
    assert code == 0, err
    (printed,) = re.findall(r"mark URL: (\S+)", out)
    assert printed.startswith("HTTPS://REGISTRY.EXAMPLE.ORG/M/")
    # Again: the same certificate has the same mark.
    code, out, err = run(capsys, *d, "issue", str(tmp_path / "dcc.xml"), *lab, *base)
    assert code == 0, err
    assert re.findall(r"mark URL: (\S+)", out) == [printed]

    png = tmp_path / "mark.png"
    argv = [*d, "mark", "LAB-1/DCC-2026-0001", "--out", str(png), *base]
    code, out, err = run(capsys, *argv, "--size-mm", "20", "--dpi", "300")
    assert code == 0, err
    assert printed in out
    assert decode_png(png.read_bytes()) == [printed]
    assert Image.open(png).size == (236, 236)

    svg = tmp_path / "mark.svg"
    code, out, err = run(
        capsys, *d, "mark", "LAB-1/DCC-2026-0001", "--out", str(svg), *base, "--caption"
    )
    assert code == 0, err
    image, root = rasterize_svg(svg.read_bytes())
    assert decode_image(image) == [printed]
    assert root.findtext(f"{SVG_NS}text") == "LAB-1/DCC-2026-0001"


def test_issue_without_a_public_url_says_how_to_get_the_mark_url(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "--data-dir",
        str(data_dir),
        "issue",
        str(tmp_path / "dcc.xml"),
        "--key",
        str(tmp_path / "lab.key"),
        "--issuer",
        "LAB-1",
    )
    assert code == 0, err
    assert "mark URL: set --public-url or QILEDGER_PUBLIC_URL" in out


def test_mark_reads_the_public_url_from_the_environment(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d = ["--data-dir", str(data_dir)]
    lab = ["--key", str(tmp_path / "lab.key"), "--issuer", "LAB-1"]
    assert run(capsys, *d, "issue", str(tmp_path / "dcc.xml"), *lab)[0] == 0
    monkeypatch.setenv("QILEDGER_PUBLIC_URL", "https://qi.example")
    png = tmp_path / "m.png"
    code, out, err = run(capsys, *d, "--json", "mark", "LAB-1/DCC-2026-0001", "--out", str(png))
    assert code == 0, err
    (url,) = decode_png(png.read_bytes())
    assert url.startswith("HTTPS://QI.EXAMPLE/M/")
    assert f'"mark_url": "{url}"' in out


@pytest.mark.parametrize(
    ("extra", "setup", "message"),
    [
        (["--out", "{tmp}/m.gif"], None, "ends in .png or .svg"),
        (["--out", "{tmp}/m.png"], "exists", "refusing to overwrite"),
        (["--out", "{tmp}/m.png", "--size-mm", "5", "--dpi", "72"], None, "pixels"),
        (["--out", "{tmp}/m.png", "--size-mm", "nan"], None, "mm"),
        (["--out", "{tmp}/m.png", "--public-url", "https://x.example/sub"], None, "host"),
        (["--out", "{tmp}/m.png", "--public-url", "none"], None, "QILEDGER_PUBLIC_URL"),
        (["--out", "{tmp}/m.png", "--public-url", ""], None, "--public-url"),
        (["--out", "{tmp}/nowhere/m.png"], None, "cannot create"),
    ],
)
def test_mark_refuses_with_one_line(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    setup: str | None,
    message: str,
) -> None:
    d = ["--data-dir", str(data_dir)]
    lab = ["--key", str(tmp_path / "lab.key"), "--issuer", "LAB-1"]
    assert run(capsys, *d, "issue", str(tmp_path / "dcc.xml"), *lab)[0] == 0
    if setup == "exists":
        (tmp_path / "m.png").write_bytes(b"keep me")
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    if "--public-url" not in args:
        args += ["--public-url", "https://registry.example.org"]
    code, out, err = run(capsys, *d, "mark", "LAB-1/DCC-2026-0001", *args)
    assert code == 1, (out, err)
    assert err.startswith("qiledger: ")
    assert err.count("\n") == 1
    assert message in err
    if setup == "exists":
        assert (tmp_path / "m.png").read_bytes() == b"keep me"


def test_mark_of_an_unknown_certificate_is_not_found(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data-dir", str(data_dir), "mark", "LAB-1/NOPE", "--out", str(tmp_path / "m.png")]
    code, _, err = run(capsys, *argv, "--public-url", "https://registry.example.org")
    assert code == 4, err
    assert "no certificate" in err
    assert not (tmp_path / "m.png").exists()


def test_serve_refuses_a_public_url_marks_cannot_live_under(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data-dir", str(data_dir), "serve", "--public-url", "https://x.example/verify"]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "")
    assert "http(s)://host[:port] only" in err
