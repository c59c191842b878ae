"""A simulated Clever API (one district's Secure Sync connection) for tests and demos.

Speaks Clever's wire format for what the roster sync uses: ``GET /oauth/tokens`` (Basic auth),
``/v3.0`` and ``/v3.1`` ``users`` and ``events`` with range paging (``starting_after`` /
``ending_before``), per-token rate limits with ``X-Ratelimit-*`` headers, and switchable
faults. Run it alone with ``python -m simulators.clever``.
"""

from ._app import API_VERSIONS, Call, CleverSimulator, Faults

__all__ = ["API_VERSIONS", "Call", "CleverSimulator", "Faults"]
