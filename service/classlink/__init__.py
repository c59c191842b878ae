"""ClassLink adapter: OneRoster 1.1 students with OAuth 1.0a signed requests."""

from service.classlink._client import ClassLinkClient, ClassLinkPage, student_from_user

__all__ = ["ClassLinkClient", "ClassLinkPage", "student_from_user"]
