"""The writeback service: resolves roster students to PowerSchool STUDENTS.ID and writes
late check-ins and early check-outs to PowerSchool as attendance records.

Run it with ``python -m service``; embed it with :func:`serve` / :class:`Server`.
"""

from service.app import Server, serve
from service.config import Settings

__all__ = ["Server", "Settings", "serve"]
