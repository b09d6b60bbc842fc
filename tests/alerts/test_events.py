"""pipeline.alerts.events: messages checked against the schema."""

from __future__ import annotations

import orjson
import pytest

from pipeline.alerts.events import MalformedEvent, decode_event
from tests.support.events import valid_event as ev


# --- decoding -----------------------------------------------------------------------------------
def test_decode_checks_the_schema():
    good = ev()
    assert decode_event(orjson.dumps(good)) == good
    for bad in (b"", b"not json", b"[1, 2]", b'"text"', orjson.dumps(dict(good, version=2)),
                orjson.dumps(dict(good, alert_id="XYZ")), orjson.dumps({k: v for k, v in good.items() if k != "seq"}),
                orjson.dumps(dict(good, extra=1)), None):
        with pytest.raises(MalformedEvent):
            decode_event(bad)
