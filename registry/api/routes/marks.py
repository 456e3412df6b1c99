"""QR accreditation mark images: ``GET /api/v1/marks/{svg|png}/{certificate_id}``.

Public, like the certificate's status. The format comes before the id because an
id is the whole rest of the path (see :mod:`registry.api.routes.certificates`).
The mark is re-signed from the log's state (:mod:`registry.marks`), so a
certificate's image is the same bytes every time for one public URL.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from registry import marks
from registry.api import problems
from registry.api.auth import Service
from registry.api.routes.certificates import CertificateId

router = APIRouter(prefix="/api/v1", tags=["marks"])

# The image of a certificate never changes (its status lives behind the URL, not in
# the code), but the host it points to may be the request's: cache, keyed by host.
CACHE_CONTROL = "public, max-age=86400"
# An SVG opened directly is a document: it may style itself, nothing else.
SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


@router.get(
    "/marks/{image_format}/{certificate_id:path}",
    summary="A certificate's QR accreditation mark as an SVG or PNG image",
    description=(
        "The QR code of the certificate's mark URL (`HTTPS://HOST/M/TOKEN`, upper case, "
        "error correction M). `size_mm`: the side of the code with its 4-module quiet "
        "zone; `dpi`: PNG resolution (a PNG's modules are whole pixels, the spare ones "
        "widen the quiet zone); `caption`: the certificate id in a band below the code."
    ),
    response_class=Response,
    responses={
        200: {
            "description": "the mark image",
            "content": {
                "image/svg+xml": {"schema": {"type": "string"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **problems.responses(400, 404, 413),
    },
)
def get_mark_image(
    request: Request,
    service: Service,
    image_format: Literal["svg", "png"],
    certificate_id: CertificateId,
    size_mm: Annotated[
        float, Query(ge=marks.MIN_SIZE_MM, le=marks.MAX_SIZE_MM, description="side in mm")
    ] = marks.DEFAULT_SIZE_MM,
    dpi: Annotated[
        int, Query(ge=marks.MIN_DPI, le=marks.MAX_DPI, description="PNG dots per inch")
    ] = marks.DEFAULT_DPI,
    caption: Annotated[bool, Query(description="print the certificate id below")] = False,
) -> Response:
    token = service.certificate_mark(certificate_id)
    url = service.mark_url(token, f"{request.url.scheme}://{request.url.netloc}")
    image = marks.render(
        url,
        image_format,
        size_mm=size_mm,
        dpi=dpi,
        caption=certificate_id if caption else None,
    )
    headers = {"Cache-Control": CACHE_CONTROL, "Vary": "Host"}
    if image_format == "svg":
        headers["Content-Security-Policy"] = SVG_POLICY
    return Response(image, media_type=marks.MEDIA_TYPES[image_format], headers=headers)
