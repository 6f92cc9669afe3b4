"""The PanDA server TEST DOUBLE (:class:`PandaTestServer`): NOT PanDA, a fake of its API for the
tests, the benchmarks and the demo. ``python -m act.testing.panda --port N --jobs N`` runs one."""

from act.testing.panda.server import (
    EVENT_BUG_TEXT,
    FINAL,
    PandaTestServer,
    Received,
    TestCA,
    TestJob,
    main,
    make_job_spec,
)

__all__ = [
    "EVENT_BUG_TEXT",
    "FINAL",
    "PandaTestServer",
    "Received",
    "TestCA",
    "TestJob",
    "main",
    "make_job_spec",
]
