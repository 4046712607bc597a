"""KPL aggregated records, through the ``aws-kinesis-agg`` package.

The Kinesis Producer Library packs many user records into one Kinesis record: the magic bytes
``f3 89 9a c2``, an ``AggregatedRecord`` protobuf body, and the MD5 digest of the body. Lambda
and the KCL unpack it transparently; the simulator writes it (``--batching kpl``) and
``alleycat verify`` reads it back.

``aws_kinesis_agg`` is imported only when a record is packed or unpacked: on import it loads
protobuf and puts its own folder on ``sys.path`` (its generated modules import each other as
top-level modules), so a plain run never pays for it.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aws_kinesis_agg.aggregator import AggRecord

#: The first bytes of a KPL-aggregated record.
KPL_MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST_SIZE = 16


class AggregateError(ValueError):
    """A record that starts like a KPL aggregate but is not a valid one."""


def new_aggregate() -> AggRecord:
    """An empty aggregated record to add user records to."""
    from aws_kinesis_agg.aggregator import AggRecord

    return AggRecord()


def deaggregate(data: bytes) -> list[tuple[str, bytes]] | None:
    """The ``(partition_key, data)`` of each user record in a KPL aggregate.

    Returns:
        None when ``data`` is not an aggregate (a plain record).

    Raises:
        AggregateError: The magic is there but the digest or the protobuf body is wrong.
    """
    if not data.startswith(KPL_MAGIC) or len(data) <= len(KPL_MAGIC) + _DIGEST_SIZE:
        return None  # the package's own rule: too short to hold a digest
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    record = {"Data": data, "PartitionKey": "", "SequenceNumber": "0",
              "ApproximateArrivalTimestamp": 0}  # fmt: skip
    users: list[tuple[str, bytes]] = []
    for user in iter_deaggregate_records([record], data_format="Boto3"):
        kinesis = user["kinesis"]
        if kinesis["data"] == data:
            # The package hands back a record it cannot unpack unchanged.
            raise AggregateError("KPL aggregate with a wrong MD5 digest or a bad body")
        # Unpacked user records come back base64-encoded, as Lambda delivers them.
        users.append((kinesis["partitionKey"], base64.b64decode(kinesis["data"])))
    return users
