"""Schemathesis hooks for scripts/schema-tests.sh (loaded by schemathesis.toml).

Schemathesis's own `format: uri` strings are `https://` plus a bare domain, which would leave
the URL patterns' ports, paths, queries, fragments and percent-escapes untried. Here `uri`
strings come from the document's own RedirectUrl pattern (the wider of its two URL patterns),
so each URL field's pattern (and `maxLength`) still decides what is valid for it.
"""

from pathlib import Path

import schemathesis
import yaml
from hypothesis import strategies as st

_DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
_SCHEMAS = yaml.safe_load(_DOC.read_text(encoding="utf-8"))["components"]["schemas"]
_URL = _SCHEMAS["RedirectUrl"]["pattern"]

schemathesis.openapi.format(
    "uri",
    st.from_regex(_URL, fullmatch=True).filter(lambda url: len(url) <= 2048),
)
