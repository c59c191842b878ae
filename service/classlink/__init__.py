"""ClassLink adapter: OneRoster 1.1 students with OAuth 1.0a signed requests (a
:class:`service.roster.ModifiedSinceSource`)."""

from service.classlink._client import ClassLinkClient, roster_server_base, student_from_user

__all__ = ["ClassLinkClient", "roster_server_base", "student_from_user"]
