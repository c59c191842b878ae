"""Clever adapter: district token, students and user events (a
:class:`service.roster.EventFeedSource`)."""

from service.clever._client import CleverClient, student_from_user

__all__ = ["CleverClient", "student_from_user"]
