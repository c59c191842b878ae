"""The load tool (``writeback load``): open or closed loop against the service or a bare
echo server, from one or several client processes, with HdrHistogram latencies merged.

``run(Options(...))`` runs it from client processes; ``await measure(Options(...))`` from the
caller's event loop. Both return a :class:`Result` (``to_json()``, :func:`table`,
:func:`write_plot`)."""

from clients.loadgen._report import Counts, Result, table, write_json, write_plot
from clients.loadgen._runner import Unreachable, measure, run
from clients.loadgen._scenarios import SCENARIOS, Options, Student, Tls, check, read_students_file

__all__ = [
    "SCENARIOS",
    "Counts",
    "Options",
    "Result",
    "Student",
    "Tls",
    "Unreachable",
    "check",
    "measure",
    "read_students_file",
    "run",
    "table",
    "write_json",
    "write_plot",
]
