"""A race start as a Locust load shape: ``-u`` bikes join within 10 s, ride one race, leave.

``alleycat locust -f race-start --headless -u 1000 --stream rides`` loads it beside the
package's locustfile; Locust then takes the user count from this shape, not from ``-r``/``-t``.
"""

from __future__ import annotations

from locust import LoadTestShape

#: Seconds in which every bike joins.
JOIN_SECONDS = 10


class RaceStart(LoadTestShape):
    """``-u`` riders join in :data:`JOIN_SECONDS`, ride ``--race-seconds``, and the test ends."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        """Locust asks every second: how many users now, and how fast to get there."""
        options = self.runner.environment.parsed_options if self.runner else None
        users = int(getattr(options, "num_users", None) or 1)
        race = int(getattr(options, "race_seconds", 300))
        if self.get_run_time() > JOIN_SECONDS + race:
            return None
        return users, users / JOIN_SECONDS
