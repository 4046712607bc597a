"""The stack broker's access control list: what IoT Core's policies would allow, for mosquitto.

mosquitto names a connection by its certificate's common name; the list gives each name only
what its IoT policy would:

- a bike (a development certificate, or a certificate that enrolment registered as a thing)
  publishes only on ``<rule topic>/<its thing name>`` (and on the rule's topic itself with
  ``shared_topic``) and reads the results topic;
- a claim certificate uses only the fleet provisioning topics of the stack's templates
  (``$aws/certificates/create/json``, ``$aws/certificates/create-from-csr/json``,
  ``$aws/provisioning-templates/<name>/provision/json`` and their ``/accepted`` and
  ``/rejected``), as ``alleycat provision --fleet-template``'s claim policy does;
- the rule reads the rides, the standings backend publishes the results, the fleet of
  ``simulate --via mqtt`` (many riders on one certificate) publishes on the rule's topic, and the
  provisioning service answers on ``$aws/...``.

Every name is listed: no ``pattern`` line, since a pattern would apply to claim certificates too.
A certificate made by enrolment may do nothing until it is registered; the file is written anew
and mosquitto told to read it again (SIGHUP) when a bike registers.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path

#: The services' client ids (and certificate names).
RULE_CLIENT_ID = "alleycat-rule"
STANDINGS_CLIENT_ID = "alleycat-standings"
FLEET_CLIENT_ID = "alleycat-fleet"
PROVISIONING_CLIENT_ID = "alleycat-provisioning"
#: The common name of ``alleycat certs dev --claim``'s claim certificate.
CLAIM_NAME = "alleycat-claim"
#: A topic only the provisioning service uses, to know the broker has read its ACL again.
SYNC_TOPIC = "alleycat-provisioning/sync"


def provisioning_topics(templates: Iterable[str]) -> list[str]:
    """The request topics a claim certificate may publish on (each reply is ``<topic>/+``)."""
    return [
        "$aws/certificates/create/json",
        "$aws/certificates/create-from-csr/json",
        *(f"$aws/provisioning-templates/{name}/provision/json" for name in templates),
    ]


def acl(
    rule_topic: str,
    results_topic: str,
    *,
    devices: Iterable[str] = (),
    things: Mapping[str, str] | None = None,
    claims: Iterable[str] = (),
    templates: Iterable[str] = (),
    shared_topic: bool = False,
) -> str:
    """The ACL file's text.

    Args:
        rule_topic: The rides' topic (``alleycat-publish``).
        results_topic: The standings' topic (``alleycat-subscribe``).
        devices: Certificate names that are their own thing names (``certs/dev/devices``).
        things: Certificate name -> thing name, of the certificates enrolment registered.
        claims: Names of claim certificates.
        templates: The provisioning templates a claim certificate may register with.
        shared_topic: Let every bike publish on the rule's topic itself too (weaker).
    """
    lines = [
        f"user {RULE_CLIENT_ID}",
        f"topic read {rule_topic}",
        f"topic read {rule_topic}/#",
        f"user {STANDINGS_CLIENT_ID}",
        f"topic write {results_topic}",
        f"user {FLEET_CLIENT_ID}",
        f"topic write {rule_topic}",
        f"user {PROVISIONING_CLIENT_ID}",
        "topic read $aws/certificates/#",
        "topic read $aws/provisioning-templates/#",
        "topic write $aws/certificates/#",
        "topic write $aws/provisioning-templates/#",
        f"topic readwrite {SYNC_TOPIC}",
    ]
    requests = provisioning_topics(templates)
    for claim in claims:
        lines.append(f"user {claim}")
        for topic in requests:
            lines += [f"topic write {topic}", f"topic read {topic}/+"]
    bikes = [(name, name) for name in devices] + sorted((things or {}).items())
    for user, thing in bikes:
        lines.append(f"user {user}")
        if shared_topic:
            lines.append(f"topic write {rule_topic}")
        lines += [f"topic write {rule_topic}/{thing}", f"topic read {results_topic}"]
    return "\n".join([*lines, ""])


class AclFile:
    """The ACL file mosquitto reads, written anew (atomically) and read again on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, text: str) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(text)
        partial.chmod(0o644)  # mosquitto may read it as its own user
        partial.replace(self.path)

    @staticmethod
    def reload(pid: int | None) -> None:
        """Have mosquitto (process ``pid``) read its configuration and ACL again."""
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
