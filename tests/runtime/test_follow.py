"""pipeline.runtime.follow without a broker: bad filters fail before any connection."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.runtime.brokers import free_port
from pipeline.runtime.follow import run_alerts


@pytest.mark.parametrize("kwargs, message", [
    ({"severity": "info"}, "unknown severity info"),
    ({"scope": "host"}, "unknown scope host"),
    ({"scope": "instance", "metric": "jitter"}, "unknown metric jitter"),
    ({"pairs": ["subnet-a", "a->b->c"]}, "bad pair"),
])
def test_bad_filters_fail_before_connecting(kwargs, message):
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens: a connection attempt would fail otherwise
    with pytest.raises(ValueError, match=message):
        asyncio.run(run_alerts(nobody, "t", print, from_beginning=True, follow=False, **kwargs))
