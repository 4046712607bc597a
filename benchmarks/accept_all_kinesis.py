"""A Kinesis endpoint that accepts every record at once, for throughput benchmarks.

One asyncio HTTP/1.1 server (keep-alive) on 127.0.0.1 answering the three calls a writer
makes: DescribeStreamSummary (ACTIVE), ListShards (``--shards`` shards splitting the hash
space) and PutRecords, whose entries it counts in the body without decoding it and answers with
a prepared all-success response. It stores nothing. Run it as its own process so it does not
share a core's time with what it measures:

    .venv/bin/python -m benchmarks.accept_all_kinesis --port 4568 --shards 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
from functools import lru_cache

from simulator.engine.shards import split_hash_space

TARGET = b"x-amz-target:"


def shard_list(shards: int) -> bytes:
    """The ListShards answer."""
    return json.dumps(
        {
            "Shards": [
                {
                    "ShardId": shard.shard_id,
                    "HashKeyRange": {
                        "StartingHashKey": str(shard.starting_hash_key),
                        "EndingHashKey": str(shard.ending_hash_key),
                    },
                    "SequenceNumberRange": {"StartingSequenceNumber": "1"},
                }
                for shard in split_hash_space(shards)
            ]
        }
    ).encode()


@lru_cache(maxsize=512)
def put_records_answer(entries: int) -> bytes:
    """An all-success PutRecords answer for ``entries`` entries."""
    one = b'{"SequenceNumber":"4959033827149025660855969253836157109592157598913658","ShardId":"s"}'
    return b'{"FailedRecordCount":0,"Records":[' + b",".join([one] * entries) + b"]}"


def answer(target: bytes, body: bytes, shards: bytes) -> bytes:
    """The body answering one call (``target`` lower-cased)."""
    if target.endswith(b"putrecords"):
        return put_records_answer(body.count(b'"PartitionKey"'))
    if target.endswith(b"listshards"):
        return shards
    if target.endswith(b"describestreamsummary"):
        return b'{"StreamDescriptionSummary":{"StreamStatus":"ACTIVE","OpenShardCount":1}}'
    return b"{}"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, shards: bytes) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length, target = 0, b""
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line[15:])
                elif line.startswith(TARGET):
                    target = line[len(TARGET) :].strip()
            body = await reader.readexactly(length) if length else b""
            reply = answer(target, body, shards)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n"
                b"Content-Length: " + str(len(reply)).encode() + b"\r\n\r\n" + reply
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int, shards: int) -> None:
    listing = shard_list(shards)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, listing), "127.0.0.1", port, limit=16 * 1024 * 1024
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, args.shards))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
