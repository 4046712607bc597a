"""The fleet wired into Locust through its own extension points; imported only by the locustfile.

- ``init_command_line_parser``: our options (:mod:`simulator.distributed.options`).
- ``test_start`` on a worker (or a single process): a :class:`WorkerRide` for the test.
- :class:`Rider`, the Locust user: its riders join the worker's fleet while it runs.
- ``report_to_master``: each worker's figures travel with Locust's own stats report (every 3 s),
  so the master knows what a worker held if it dies.
- ``test_stop`` on the master: it asks every worker to finish (``alleycat-finish``), waits for
  each one's final figures (``alleycat-summary``), then prints and writes the run's summary.
- A worker that misses its heartbeats is reported with the records it held (lost).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import gevent
from locust import User, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import STATE_MISSING, LocalRunner, MasterRunner, Runner, WorkerRunner

from simulator.distributed.mqtt_worker import MqttWorkerRide
from simulator.distributed.options import RunOptions, add_arguments
from simulator.distributed.riders import RIDE_SECONDS
from simulator.distributed.summary import mqtt_run_summary, run_summary
from simulator.distributed.worker import WorkerRide
from simulator.mqtt.fleet import DRAIN_SECONDS

logger = logging.getLogger("alleycat")

FINISH = "alleycat-finish"
SUMMARY = "alleycat-summary"
FAILED = "alleycat-failed"
#: Seconds the master waits for workers' final figures beyond the record TTL.
FINISH_GRACE = 20.0


class WorkerSide:
    """This process's ride, if it runs users (a worker, or a single process)."""

    def __init__(self) -> None:
        self.ride: WorkerRide | MqttWorkerRide | None = None

    def start(self, environment: Environment) -> None:
        """A test starts: open the stream and start riding."""
        runner = environment.runner
        assert runner is not None
        try:
            options = RunOptions.from_parsed(environment.parsed_options)
        except ValueError as exc:
            logger.error("alleycat: %s", exc)
            environment.process_exit_code = 2
            runner.quit()
            return
        index = max(0, getattr(runner, "worker_index", 0))
        ride: WorkerRide | MqttWorkerRide
        if options.mqtt is not None:
            # The master says how many workers share the connect rate (see SummaryCollector).
            workers = getattr(environment.parsed_options, "alleycat_workers", 1)
            ride = MqttWorkerRide(
                options, index, environment.events.request.fire, workers,
                on_failure=lambda error: _end_test(environment, error),
            )  # fmt: skip
        else:
            ride = WorkerRide(options, index, environment.events.request.fire)
        if ride.error is not None:
            logger.error("alleycat: %s", ride.error)
        ride.start()
        self.ride = ride

    def stopping(self, environment: Environment, **kwargs: Any) -> None:
        """The test is stopping: its users stop with it, not one by one (see
        :meth:`MqttWorkerRide.ending`)."""
        if isinstance(self.ride, MqttWorkerRide):
            self.ride.ending()

    def report(self, client_id: str, data: dict[str, Any]) -> None:
        """Add our figures to the worker's periodic report to the master."""
        if self.ride is not None:
            data["alleycat"] = self.ride.report()

    def finish(self) -> dict[str, Any] | None:
        """Stop riding, deliver what is buffered, and give the final figures."""
        ride = self.ride
        if ride is None:
            return None
        return ride.finish(finish_timeout(ride.options))


class SummaryCollector:
    """On the master (or a single process): every worker's figures, and the run's summary."""

    def __init__(self, environment: Environment, worker: WorkerSide | None) -> None:
        self.environment = environment
        self.local = worker
        self.reports: dict[str, dict[str, Any]] = {}
        self.missing_reported: set[str] = set()
        self.started = time.monotonic()

    def start(self, environment: Environment) -> None:
        """A test starts: forget the last one's figures; tell the workers how many they are
        (with the spawn message's options: they share ``--connect-rate``)."""
        runner = environment.runner
        if isinstance(runner, MasterRunner) and environment.parsed_options is not None:
            environment.parsed_options.alleycat_workers = max(1, runner.worker_count)
        self.reports.clear()
        self.missing_reported.clear()
        self.started = time.monotonic()

    def progress(self, client_id: str, data: dict[str, Any]) -> None:
        """A worker's periodic report; a final one is never replaced by an older one."""
        report = data.get("alleycat")
        if report is not None and not self.reports.get(client_id, {}).get("final"):
            self.reports[client_id] = report

    def final(self, environment: Environment, msg: Any, **kwargs: Any) -> None:
        """A worker's final figures."""
        self.reports[msg.node_id] = msg.data

    def watch_missing(self) -> None:
        """Report each worker that misses its heartbeats, with the records it held."""
        runner = self.environment.runner
        assert isinstance(runner, MasterRunner)
        while True:
            gevent.sleep(1.0)
            for client in list(runner.clients.all):
                if client.state == STATE_MISSING and client.id not in self.missing_reported:
                    self.missing_reported.add(client.id)
                    report = self.reports.get(client.id)
                    held = "an unknown number of" if report is None else f"{report['pending']:,}"
                    logger.warning(
                        "alleycat: worker %s (index %s) is missing: %s records it held are lost "
                        "(as of its last report); the other workers go on",
                        client.id, runner.get_worker_index(client.id), held,
                    )  # fmt: skip

    def stop(self, environment: Environment) -> None:
        """The test stopped: collect every worker's final figures, print and write them."""
        runner = environment.runner
        try:
            options = RunOptions.from_parsed(environment.parsed_options)
        except ValueError:
            return
        if isinstance(runner, MasterRunner):
            self._collect(runner, finish_timeout(options))
        elif self.local is not None:
            report = self.local.finish()
            if report is not None:
                self.reports["local"] = report
        if options.mqtt is not None:
            self._stop_mqtt(environment, options)
            return
        from simulator import build

        summary = run_summary(
            self.reports.values(),
            partition_key=options.groups.strategy.value,
            batching=options.batching.label,
            wall_seconds=time.monotonic() - self.started,
            build=build(),
        )
        self._show(summary, options.summary_json)
        if options.summary_html is not None and not _write_html(options.summary_html, summary):
            environment.process_exit_code = 1
        if summary["error"] or summary["lost"]:
            environment.process_exit_code = 1

    def _stop_mqtt(self, environment: Environment, options: RunOptions) -> None:
        summary = mqtt_run_summary(
            self.reports.values(), wall_seconds=time.monotonic() - self.started
        )
        from rich.console import Console

        from simulator.distributed.summary import workers_line
        from simulator.mqtt.cli import summary_table

        console = Console(stderr=True)
        console.print(summary_table(summary))
        console.print(workers_line(summary, f"acknowledged: {summary['acked']:,}"))
        for reason in summary["connect_failure_reasons"]:
            console.print(f"connection failure: {reason}")
        if summary["error"]:
            console.print(f"error: {summary['error']}", markup=False)
        self._write(summary, options.summary_json)
        if (
            summary["error"]
            or summary["lost"]
            or (summary["generated"] and not summary["connects"])
        ):
            environment.process_exit_code = 1

    def _write(self, summary: dict[str, Any], path: str | None) -> None:
        if path is None:
            return
        text = json.dumps(summary)
        if path == "-":
            print(text, flush=True)
        else:
            with open(path, "w", encoding="utf-8") as file:
                file.write(text + "\n")

    def _collect(self, runner: MasterRunner, timeout: float) -> None:
        runner.send_message(FINISH)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = [
                c.id
                for c in runner.clients.all
                if c.state != STATE_MISSING and not self.reports.get(c.id, {}).get("final")
            ]
            if not waiting:
                return
            gevent.sleep(0.1)
        logger.warning("alleycat: some workers sent no final figures within %.0f s", timeout)

    def _show(self, summary: dict[str, Any], path: str | None) -> None:
        from rich.console import Console

        from simulator.distributed.summary import workers_line
        from simulator.report.summary import summary_table

        console = Console(stderr=True)
        console.print(summary_table(summary))
        console.print(workers_line(summary))
        self._write(summary, path)


def finish_timeout(options: RunOptions) -> float:
    """How long a worker may take to finish: the record TTL (Kinesis) or the fleet's drain."""
    if options.mqtt is not None:
        return DRAIN_SECONDS + FINISH_GRACE
    return options.producer.record_ttl + FINISH_GRACE


def _write_html(path: str, summary: dict[str, Any]) -> bool:
    """Write the summary's HTML page to ``path``; say where, or one line on why not."""
    from simulator.report.html import INSTALL_HINT, locust_page

    try:
        data = locust_page(summary).encode("utf-8")
        with open(path, "wb") as file:
            file.write(data)
    except ImportError:
        logger.error("alleycat: --summary-html needs plotly: %s", INSTALL_HINT)
        return False
    except OSError as exc:
        logger.error("alleycat: cannot write %s: %s", path, exc.strerror)
        return False
    logger.info("alleycat: wrote the HTML report to %s (%.1f MB)", path, len(data) / 1e6)
    return True


_worker = WorkerSide()


class Rider(User):
    """A Locust user: ``--riders-per-user`` riders (one by default) on this worker's fleet.

    Its riders join when the user starts and leave when it stops; their messages are made by
    the worker's one run loop at each rider's own phase of the second, not by this greenlet,
    which only waits (so a worker carries tens of thousands of riders).
    """

    wait_time = constant(RIDE_SECONDS)

    def on_start(self) -> None:
        """Join the worker's fleet."""
        ride = _worker.ride
        if ride is None:
            raise StopUser()
        try:
            self._riders = ride.join()
        except ValueError as exc:
            logger.error("alleycat: %s", exc)
            raise StopUser() from None

    def on_stop(self) -> None:
        """Leave the worker's fleet."""
        ride = _worker.ride
        group = getattr(self, "_riders", None)
        if ride is not None and group is not None:
            ride.leave(group)

    @task
    def ride(self) -> None:
        """Nothing to do here: the riders ride while the user lives."""


def install() -> None:
    """Register the listeners on Locust's events."""
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(_on_init)


def _on_init(environment: Environment, runner: Runner, **kwargs: Any) -> None:
    runs_users = isinstance(runner, (WorkerRunner, LocalRunner))
    if runs_users:
        environment.events.test_start.add_listener(_worker.start)
        environment.events.test_stopping.add_listener(_worker.stopping)
        environment.events.report_to_master.add_listener(_worker.report)
    if isinstance(runner, WorkerRunner):
        runner.register_message(FINISH, _send_final, concurrent=True)
        options = environment.parsed_options
        if options is not None and getattr(options, "json_file", None):
            # A worker's statistics go to the master; under --processes the workers share the
            # master's options, and their (empty) --json-file, written as they quit, could
            # replace the master's.
            options.json_file = None

        def finish_on_stop(environment: Environment, **kw: Any) -> None:
            _worker.finish()

        environment.events.test_stop.add_listener(finish_on_stop)
    if isinstance(runner, (MasterRunner, LocalRunner)):
        collector = SummaryCollector(environment, _worker if runs_users else None)
        environment.events.test_start.add_listener(collector.start)
        environment.events.test_stop.add_listener(collector.stop)
        if isinstance(runner, MasterRunner):
            environment.events.worker_report.add_listener(collector.progress)
            runner.register_message(SUMMARY, collector.final)
            runner.register_message(FAILED, _worker_failed)
            gevent.spawn(collector.watch_missing)


def _end_test(environment: Environment, error: str) -> None:
    """A worker's riders cannot ride on (its fleet stopped on a defect): end the test, so that
    every worker's final figures are collected and summed (the summary says the error)."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(FAILED, {"error": error})
    elif runner is not None:
        _stop(environment)


def _stop(environment: Environment) -> None:
    """End the test as its time limit does (headless), or stop it (the web UI stays up)."""
    runner = environment.runner
    assert runner is not None
    headless = getattr(environment.parsed_options, "headless", False)
    gevent.spawn(runner.quit if headless else runner.stop)


def _worker_failed(environment: Environment, msg: Any, **kwargs: Any) -> None:
    logger.error("alleycat: worker %s: %s; ending the test", msg.node_id, msg.data["error"])
    _stop(environment)


def _send_final(environment: Environment, msg: Any, **kwargs: Any) -> None:
    report = _worker.finish()
    runner = environment.runner
    if report is not None and isinstance(runner, WorkerRunner):
        # The request rows fired while finishing (the last PUBACKs, drops), ahead of the final
        # figures on the same connection: the master has both before it writes its statistics.
        # Left to Locust's own last report, sent after the master's quit message, they could
        # come after the master (which waits only half a second for it) wrote them.
        runner._send_stats()
        runner.send_message(SUMMARY, report)
