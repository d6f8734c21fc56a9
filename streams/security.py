"""Kafka connection security (TLS, SASL PLAIN/SCRAM) from the settings, for every client.

One mapping, used everywhere the engine talks to Kafka: :func:`kafka_client_options` gives
the keyword arguments of aiokafka's ``AIOKafkaProducer``/``AIOKafkaConsumer``/
``AIOKafkaAdminClient``; :func:`faust_credentials` gives Faust's ``broker_credentials``
(which Faust turns into the same aiokafka arguments for its own producer, consumer and
topic creation).

>>> from config.settings import Settings
>>> kafka_client_options(Settings())
{'security_protocol': 'PLAINTEXT'}
>>> opts = kafka_client_options(Settings(kafka_security_protocol="SASL_PLAINTEXT",
...     kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="lp",
...     kafka_sasl_password="s3cret"))
>>> opts["sasl_mechanism"], opts["sasl_plain_username"]
('SCRAM-SHA-512', 'lp')
"""

from __future__ import annotations

import ssl
from typing import Any

from config.settings import Settings

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def kafka_uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def kafka_uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of Kafka connections (None unless SSL/SASL_SSL).

    Verifies the broker's certificate and host name against ``LIVEPULSE_KAFKA_SSL_CAFILE``
    (default: the system's CAs); a client certificate is sent when ``..._SSL_CERTFILE`` is set
    (mutual TLS).
    """
    if not kafka_uses_tls(settings):
        return None
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(
        cafile=settings.kafka_ssl_cafile or None,
        certfile=settings.kafka_ssl_certfile or None,
        keyfile=settings.kafka_ssl_keyfile or None,
    )


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client so it connects as the settings say."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if kafka_uses_sasl(settings):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password)
    return options


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the settings (None: plaintext)."""
    import faust

    context = kafka_ssl_context(settings)
    if kafka_uses_sasl(settings):
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password,
                                     mechanism=settings.kafka_sasl_mechanism,
                                     ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None
