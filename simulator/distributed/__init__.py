"""The fleet on Locust's distributed runners, for loads one process cannot make.

``alleycat locust`` runs Locust on :mod:`~simulator.distributed.locustfile`; Locust's runners
(``--processes``, ``--master``/``--worker``) spread the users, each worker process runs the
engine's producer for its riders (:mod:`~simulator.distributed.worker`), and the master sums the
workers' figures into ``simulate --json``'s summary (:mod:`~simulator.distributed.summary`).
:mod:`~simulator.distributed.riders`, :mod:`~simulator.distributed.options` and ``summary`` are
pure; only ``hooks`` and the locustfile import Locust.
"""
