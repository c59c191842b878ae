"""The writeback service: resolves roster students to PowerSchool STUDENTS.ID and writes
late check-ins and early check-outs to PowerSchool as attendance records.

Run it with ``python -m service``; embed it with :func:`serve` / :class:`Server`.
"""

import os

# Our processes fork only to run another program (embedded Postgres, subprocesses). gRPC's
# fork handlers are for fork without exec; left on, they print "skipping fork() handlers"
# to stderr whenever gRPC is busy at a fork. Read by grpc at import: set before importing it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from service.app import Server, serve
from service.config import Settings

__all__ = ["Server", "Settings", "serve"]
