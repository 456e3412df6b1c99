"""Property-based run of the whole HTTP API from its own OpenAPI document
(schemathesis): whatever requests the schema allows — and the mutations
schemathesis derives from it — no route answers 5xx, with or without a token.

The app is built when this module is imported (schemathesis reads the schema
at collection time; its fixture-based loader does not work with our pytest).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from registry.api.app import create_app
from registry.api.service import ServiceOptions
from registry.config import Settings
from registry.storage.tokens import TokenStore
from tests.conftest import make_ledger
from tests.helpers import demo_dcc, key_from

DEMO_DCC = demo_dcc()


def _app_with_a_certificate() -> tuple[object, str]:
    data_dir = Path(tempfile.mkdtemp(prefix="qiledger-fuzz-"))
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    ledger = make_ledger(Settings(data_dir=data_dir / "data"), key_from("lab-1"))
    ledger.issue_certificate(DEMO_DCC, "LAB-1", key_from("lab-1"))
    token, _ = TokenStore(ledger.db).create("issuer", "LAB-1")
    app = create_app(ledger, ServiceOptions(rate_per_second=0))
    atexit.register(app.state.service.close)
    return app, token


APP, ISSUER_TOKEN = _app_with_a_certificate()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)

FUZZ_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@schema.parametrize()
@FUZZ_SETTINGS
def test_no_route_answers_5xx_anonymous(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])


@schema.parametrize()
@FUZZ_SETTINGS
def test_no_route_answers_5xx_with_issuer_token(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ISSUER_TOKEN}"}, checks=[not_a_server_error]
    )


CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@FUZZ_SETTINGS
def test_answers_conform_to_the_schema_anonymous(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CONFORMANCE)


@schema.parametrize()
@FUZZ_SETTINGS
def test_answers_conform_to_the_schema_with_issuer_token(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {ISSUER_TOKEN}"}, checks=CONFORMANCE)
