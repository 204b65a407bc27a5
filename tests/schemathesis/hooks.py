"""Schemathesis hooks for scripts/schema-tests.sh (loaded by schemathesis.toml).

Schemathesis's own `format: uri` strings are `https://` plus a bare domain, which would leave
the URL patterns' ports, paths, queries, fragments and percent-escapes untried. Here `uri`
strings come from the document's own RedirectUrl pattern (the wider of its two URL patterns),
so each URL field's pattern (and `maxLength`) still decides what is valid for it.

Two rules of the API that a schema cannot state are kept here, so that a request the document
accepts is one the API accepts:
- an `Idempotency-Key` names one request: Schemathesis draws the same few keys for different
  requests, which the API rightly answers `422 idempotency_conflict`. A valid key is replaced by
  a fresh one per call (an invalid one is kept: it must still be refused with `400`);
- `GET /api/numbers` takes `cursor` or an `offset` above 0, not both (`400`, documented on
  `cursor`; the coverage phase only sends `offset=0` beside a cursor, which is accepted).
"""

import re
import uuid

from pathlib import Path

import schemathesis
import yaml
from hypothesis import strategies as st

_DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
_SCHEMAS = yaml.safe_load(_DOC.read_text(encoding="utf-8"))["components"]["schemas"]
_URL = _SCHEMAS["RedirectUrl"]["pattern"]

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name in list(headers):
        value = headers[name]
        if name.lower() == "idempotency-key" and isinstance(value, str) and _IDEMPOTENCY_KEY.match(value):
            headers[name] = f"st-{uuid.uuid4()}"


def _cursor_with_offset(query):
    return bool(query) and "cursor" in query and str(query.get("offset", "0")) != "0"


@schemathesis.hook
def filter_query(ctx, query):
    if ctx.operation is None or ctx.operation.path != "/api/numbers":
        return True
    return not _cursor_with_offset(query)


# The coverage phase draws its boundary values without `filter_query`: its cursor-with-offset
# cases are answered `400` as documented, which is not a failure.
@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    return not (
        case.operation.path == "/api/numbers"
        and _cursor_with_offset(case.query)
        and response.status_code == 400
    )


schemathesis.openapi.format(
    "uri",
    st.from_regex(_URL, fullmatch=True).filter(lambda url: len(url) <= 2048),
)
