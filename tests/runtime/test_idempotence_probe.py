"""Asking a broker whether it grants producer ids: a broker that cannot be asked is not a "no"."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError

from pipeline.runtime import kafka
from pipeline.runtime.brokers import free_port


def test_a_broker_that_cannot_be_asked_raises_and_one_shot_producers_take_it_as_no():
    """``flowmon agent`` asks again later (an outage at its start must not turn idempotence off for good);
    ``flowmon produce`` runs without idempotence (``acks=all`` and retries)."""
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(KafkaConnectionError):
        asyncio.run(kafka.grants_producer_ids(nobody, timeout_s=1.0))
    assert asyncio.run(kafka.supports_idempotence(nobody, timeout_s=1.0)) is False
