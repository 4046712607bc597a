"""The IoT rule's substitution templates, as the Kinesis action's ``partitionKey`` takes them.

A template is text with ``${...}`` substitutions, evaluated once per message when the rule
handles it::

    ${timestamp()}     milliseconds since the epoch, now (the original rule's partition key)
    ${newuuid()}       a random UUID v4
    ${topic()}         the topic the message was published on; ${topic(2)}: its second level
    ${clientid()}      the publisher's client id
    ${racerId}         a field of the message (a JSON object); ${a.b} a nested one

Text around substitutions is kept (``bike-${racerId}``). A field the message does not have
evaluates to an empty string, as IoT Core's does; a key that ends up empty is replaced by the
message's timestamp, since Kinesis refuses an empty partition key.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: The original ``alleycatIngest`` rule's partition key.
DEFAULT_KEY_TEMPLATE = "${timestamp()}"
#: Kinesis's limit on a partition key, in Unicode characters.
MAX_PARTITION_KEY_CHARS = 256

_SUBSTITUTION = re.compile(r"\$\{([^}]*)\}")
_TOPIC_LEVEL = re.compile(r"topic\((\d+)\)")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class TemplateError(ValueError):
    """A template this rule cannot evaluate."""


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What a substitution can read: the message and how it arrived."""

    topic: str
    client_id: str
    now_ms: int
    fields: Mapping[str, Any]
    """The decoded message; empty when it is not a JSON object."""


Part = Callable[[MessageContext], str]


def _field(path: str) -> Part:
    names = path.split(".")

    def value(context: MessageContext) -> str:
        found: Any = context.fields
        for name in names:
            if not isinstance(found, Mapping) or name not in found:
                return ""
            found = found[name]
        if isinstance(found, bool):
            return "true" if found else "false"
        return found if isinstance(found, str) else str(found)

    return value


def _topic_level(level: int) -> Part:
    def value(context: MessageContext) -> str:
        levels = context.topic.split("/")
        return levels[level - 1] if level <= len(levels) else ""

    return value


def _substitution(expression: str) -> Part:
    expression = expression.strip()
    if expression == "timestamp()":
        return lambda context: str(context.now_ms)
    if expression == "newuuid()":
        return lambda _context: str(uuid.uuid4())
    if expression == "topic()":
        return lambda context: context.topic
    if expression == "clientid()":
        return lambda context: context.client_id
    if level := _TOPIC_LEVEL.fullmatch(expression):
        if int(level.group(1)) < 1:
            raise TemplateError("topic levels count from 1: ${topic(1)} is the first")
        return _topic_level(int(level.group(1)))
    if _FIELD.fullmatch(expression):
        return _field(expression)
    raise TemplateError(
        f"cannot evaluate ${{{expression}}}: use timestamp(), newuuid(), topic(), topic(N), "
        "clientid() or a field of the message such as ${racerId}"
    )


@dataclass(frozen=True, slots=True)
class KeyTemplate:
    """A compiled partition-key template."""

    text: str
    parts: tuple[Part, ...]

    @classmethod
    def parse(cls, text: str) -> KeyTemplate:
        """Compile ``text``; raise :class:`TemplateError` if a substitution is unknown."""
        if not text:
            raise TemplateError("the partition key template is empty")
        parts: list[Part] = []
        position = 0
        for match in _SUBSTITUTION.finditer(text):
            if match.start() > position:
                parts.append(_literal(text[position : match.start()]))
            parts.append(_substitution(match.group(1)))
            position = match.end()
        rest = text[position:]
        if "${" in rest:
            raise TemplateError(f"unclosed substitution in {text!r}: write ${{...}}")
        if rest:
            parts.append(_literal(rest))
        return cls(text, tuple(parts))

    def key(self, context: MessageContext) -> str:
        """The partition key for one message: never empty, at most 256 characters."""
        key = "".join(part(context) for part in self.parts)
        return key[:MAX_PARTITION_KEY_CHARS] if key else str(context.now_ms)


def _literal(text: str) -> Part:
    return lambda _context: text
