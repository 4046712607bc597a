"""The fleet and the producer: what ``simulate`` runs, whatever it writes to.

Virtual riders (``fleet``) make ride messages, partition-key strategies (``keys``) key them,
batching modes (``aggregation``, ``kpl``) pack them, and the producer (``producer``) sends them
in PutRecords batches with per-shard backlogs, retries and a record TTL, paced by a clock
(``clock``) in a run loop (``runner``). The stream is behind one seam (``sink``): the built-in
shard model (``shards``) or a real stream (:mod:`simulator.sinks`), driven inline or in parallel
(``dispatch``).
"""
