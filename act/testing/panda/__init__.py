"""The PanDA server TEST DOUBLE (:class:`PandaTestServer`): NOT PanDA, a fake of its API for the
tests, the benchmarks and the demo. ``python -m act.testing.panda --port N --jobs N`` runs one.

Its modules: :mod:`~act.testing.panda.server` (the server: TLS, start/stop, fault injection,
what it received), :mod:`~act.testing.panda.store` (the jobs and the job logic),
:mod:`~act.testing.panda.new_api` and :mod:`~act.testing.panda.legacy_api` (the two wire
formats), :mod:`~act.testing.panda.httpd` (HTTP and TLS plumbing), :mod:`~act.testing.panda.ca`
(the throw-away CA and client proxies), :mod:`~act.testing.panda.jobspec` (realistic job specs)
and :mod:`~act.testing.panda.cli` (the command line)."""

from act.testing.panda.ca import TestCA
from act.testing.panda.jobspec import make_job_spec
from act.testing.panda.new_api import EVENT_BUG_TEXT
from act.testing.panda.server import PandaTestServer, Received
from act.testing.panda.store import FINAL, TestJob

__all__ = [
    "EVENT_BUG_TEXT",
    "FINAL",
    "PandaTestServer",
    "Received",
    "TestCA",
    "TestJob",
    "make_job_spec",
]
