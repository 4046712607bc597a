"""The locustfile ``alleycat locust`` gives Locust: the :class:`Rider` user and our listeners.

Locust imports it (with ``-f``, before ``--processes`` forks); see
:mod:`simulator.distributed.hooks`.
"""

from simulator.distributed.hooks import Rider, install

__all__ = ["Rider"]

install()
