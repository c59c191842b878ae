"""A simulated ClassLink Roster Server (OneRoster 1.1, direct OAuth1 mode) for tests and demos.

Speaks OneRoster 1.1 REST as ClassLink serves it: two-legged OAuth 1.0a (HMAC-SHA256)
signatures, ``{"users": [...]}`` collections with ``limit``/``offset``/``sort``/``orderBy``/
``filter``/``fields``, ``X-Total-Count`` and ``Link`` headers, imsx error bodies and switchable
faults. Run it alone with ``python -m simulators.classlink``.
"""

from ._app import API_PREFIX, Call, ClassLinkSimulator, Faults

__all__ = ["API_PREFIX", "Call", "ClassLinkSimulator", "Faults"]
