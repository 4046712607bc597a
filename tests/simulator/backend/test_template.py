"""The rule's partition-key templates, evaluated as IoT Core's substitution templates are."""

from __future__ import annotations

import uuid

import pytest

from simulator.backend.template import KeyTemplate, MessageContext, TemplateError

CONTEXT = MessageContext(
    topic="alleycat-publish/bike-7",
    client_id="bike-7",
    now_ms=1_764_186_600_123,
    fields={"racerId": 107, "classId": 3, "rider": {"name": "Ada"}, "ok": True},
)


@pytest.mark.parametrize(
    ("template", "key"),
    [
        ("${timestamp()}", "1764186600123"),
        ("${topic()}", "alleycat-publish/bike-7"),
        ("${topic(2)}", "bike-7"),
        ("${clientid()}", "bike-7"),
        ("${racerId}", "107"),
        ("class-${classId}/${racerId}", "class-3/107"),
        ("${rider.name}", "Ada"),
        ("${ok}", "true"),
        ("fixed", "fixed"),
    ],
)
def test_substitutions_give_iot_cores_values(template: str, key: str) -> None:
    assert KeyTemplate.parse(template).key(CONTEXT) == key


def test_newuuid_is_a_fresh_uuid_per_message() -> None:
    template = KeyTemplate.parse("${newuuid()}")
    first, second = template.key(CONTEXT), template.key(CONTEXT)
    assert first != second
    assert uuid.UUID(first).version == 4


def test_a_missing_field_leaves_the_timestamp_so_the_key_is_never_empty() -> None:
    assert KeyTemplate.parse("${nothere}").key(CONTEXT) == "1764186600123"


def test_a_long_key_is_cut_to_kinesis_limit() -> None:
    context = MessageContext("t", "c", 1, {"name": "x" * 400})
    assert len(KeyTemplate.parse("${name}").key(context)) == 256


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${now()}", "cannot evaluate ${now()}"),
        ("${topic(0)}", "topic levels count from 1"),
        ("key-${racerId", "unclosed substitution"),
        ("", "empty"),
    ],
)
def test_an_unknown_template_is_refused_with_what_to_write(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as raised:
        KeyTemplate.parse(template)
    assert message in str(raised.value)
