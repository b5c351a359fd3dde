"""Fuzzing the HTTP API from its own OpenAPI schema (schemathesis): no request, valid or not, gets a 5xx,
and every 4xx answer says what was wrong (a 422 names each bad field)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from _serving_shop import BLEND_TOML, fresh_copy
from fusionrec.serving.app import create_app
from fusionrec.serving.settings import ServingSettings

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    store, model = fresh_copy(root)
    toml = root / "blend.toml"
    toml.write_text(BLEND_TOML)
    app = create_app(model, store, ServingSettings(api_key=KEY, reload_poll_seconds=None, pipeline=toml))
    yield app
    app.state.server.close()


#: a retrain per example would only measure LightGBM; its one boolean input is covered in test_serving_*
SKIP = {("POST", "/admin/retrain")}
MAX_EXAMPLES = 25


def _names_the_fields(body: dict) -> bool:
    detail = body.get("detail")
    if not isinstance(detail, list) or not detail:
        return False
    for err in detail[:5]:  # the one-line summary names the first five
        loc = [str(p) for p in err.get("loc", [])]
        if not loc or not err.get("msg") or loc[-1] not in body.get("error", ""):
            return False
    return True


def _check(case) -> None:
    response = case.call(headers=AUTH)
    where = (case.method, case.formatted_path, case.query, str(case.body)[:200])
    assert response.status_code < 500, (where, response.status_code, response.text[:500])
    if 400 <= response.status_code < 500:
        body = response.json()
        assert body.get("detail"), (where, response.text[:300])
        if response.status_code == 422:
            assert _names_the_fields(body), (where, response.text[:500])


# schemathesis' own pytest plugin does not run under pytest 9 (it needs Function._nodeid), so each operation's
# hypothesis strategy is driven directly
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_4xx_say_why(fuzz_app, mode):
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    failures, tried = [], []
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) in SKIP:
            continue
        tried.append(f"{op.method.upper()} {op.path}")

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            _check(case)

        try:
            run()
        except Exception as exc:  # gather every operation's first failure, then report them all
            if "Unsatisfiable" in type(exc).__name__:
                continue  # an operation with nothing invalid to generate in negative mode
            failures.append(f"{op.method.upper()} {op.path}: {type(exc).__name__}: {str(exc)[:800]}")
    assert len(tried) >= 8, tried
    assert not failures, "\n".join(failures)
