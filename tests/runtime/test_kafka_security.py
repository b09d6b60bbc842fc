"""The FLOWMON_KAFKA_* settings -> the options of every Kafka client (aiokafka and Faust), and their checks.

No broker here: tests/integration/test_security.py runs the same settings against a SASL_SSL Kafka.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.runtime import kafka
from pipeline.runtime.app import create_app, faust_credentials

SASL = dict(broker="b1:9093,b2:9093", kafka_sasl_username="flowmon", kafka_sasl_password="pw-123")
CASES = [
    pytest.param(dict(broker="b1:9092"), id="PLAINTEXT"),
    pytest.param(dict(broker="b1:9093", kafka_security_protocol="SSL"), id="SSL"),
    *[pytest.param(dict(SASL, kafka_security_protocol=proto, kafka_sasl_mechanism=mech), id=f"{proto}-{mech}")
      for proto in ("SASL_PLAINTEXT", "SASL_SSL") for mech in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")],
]


@pytest.mark.parametrize("fields", CASES)
def test_faust_gets_the_same_options_as_every_other_client(fields):
    """Faust maps broker_credentials to aiokafka options with its own function; they must equal ours."""
    def given(opts):  # Faust passes ssl_context=None for SASL_PLAINTEXT: aiokafka's default, the same
        return {k: v for k, v in opts.items() if v is not None}
    conn = kafka.connection(Settings(**fields))
    assert given(credentials_to_aiokafka_auth(faust_credentials(conn))) == dict(conn.security)
    app = create_app(Settings(**fields), conn).app
    assert given(credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)) == dict(conn.security)


@pytest.mark.parametrize("fields", CASES)
def test_consumer_producer_admin_options_carry_the_security(fields):
    conn = kafka.connection(Settings(**fields))
    opts = kafka.consumer_options(conn, group="g")
    assert opts["bootstrap_servers"] == fields["broker"]
    assert {k: opts[k] for k in conn.security} == dict(conn.security)
    proto = fields.get("kafka_security_protocol", "PLAINTEXT")
    assert opts["security_protocol"] == proto
    assert ("ssl_context" in opts) == (proto in ("SSL", "SASL_SSL"))
    if proto.startswith("SASL_"):
        assert opts["sasl_mechanism"] == fields["kafka_sasl_mechanism"]
        assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("flowmon", "pw-123")


def test_built_clients_use_the_security():
    """The factories hand the options to aiokafka (its clients keep them on their AIOKafkaClient)."""
    conn = kafka.connection(Settings(**SASL, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512"))

    async def build():  # aiokafka clients are made inside a running loop
        return [kafka.consumer(conn, "t"), kafka.reader(conn), kafka.producer(conn), kafka.admin(conn)]
    for c in asyncio.run(build()):
        inner = c.client if hasattr(c, "client") else c._client
        assert (inner._security_protocol, inner._sasl_mechanism, inner._sasl_plain_username) == \
            ("SASL_SSL", "SCRAM-SHA-512", "flowmon"), type(c).__name__
        assert inner._ssl_context is conn.security["ssl_context"]


def test_tls_context_checks_the_broker():
    ctx = kafka.ssl_context(Settings(broker="b:9093", kafka_security_protocol="SSL"))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_tls_context_loads_the_files(tmp_path):
    from tests.support.kafka import make_certs
    certs = make_certs(tmp_path)
    ctx = kafka.ssl_context(Settings(broker="b:9093", kafka_security_protocol="SSL", kafka_ssl_cafile=certs.ca,
                                     kafka_ssl_certfile=certs.client_cert, kafka_ssl_keyfile=certs.client_key))
    assert any(c["subject"] == ((("commonName", "flowmon test CA"),),) for c in ctx.get_ca_certs())
    with pytest.raises(OSError):  # a wrong path is an error at startup, not at the first connection
        kafka.connection(Settings(broker="b:9093", kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "nope.pem"))


def test_the_password_is_never_shown():
    s = Settings(**SASL, kafka_security_protocol="SASL_SSL")
    conn = kafka.connection(s)
    assert "pw-123" not in repr(conn) and "pw-123" not in str(conn) and "pw-123" not in repr(s)
    assert repr(conn) == "<Connection b1:9093,b2:9093 SASL_SSL SCRAM-SHA-512 user='flowmon'>"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMON_")} | {
        "FLOWMON_BROKER": "b:9093", "FLOWMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FLOWMON_KAFKA_SASL_USERNAME": "u", "FLOWMON_KAFKA_SASL_PASSWORD": "pw-123"}
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "dump"], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    assert "pw-123" not in out.stdout and '"kafka_sasl_username": "u"' in out.stdout


@pytest.mark.parametrize("fields,message", [
    (dict(broker="b:9093", kafka_security_protocol="SASL_SSL"), "needs kafka_sasl_username and kafka_sasl_password"),
    (dict(broker="b:9093", kafka_security_protocol="SASL_SSL", kafka_sasl_username="u"), "kafka_sasl_password"),
    (dict(broker="b:9092", kafka_sasl_username="u", kafka_sasl_password="p"), "kafka_security_protocol is PLAINTEXT"),
    (dict(broker="b:9092", kafka_ssl_cafile="/ca.pem"), "kafka_ssl_cafile set but kafka_security_protocol is PLAINTEXT"),
    (dict(broker="b:9092", kafka_security_protocol="SSL", kafka_ssl_keyfile="/k.pem"), "need kafka_ssl_certfile"),
    (dict(kafka_security_protocol="SSL"), "embedded broker speaks PLAINTEXT only"),
    (dict(broker="b:9093", kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="GSSAPI",
          kafka_sasl_username="u", kafka_sasl_password="p"), "kafka_sasl_mechanism"),
])
def test_inconsistent_security_settings_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)
