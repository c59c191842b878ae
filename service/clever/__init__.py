"""Clever adapter: district token, students and user events."""

from service.clever._client import CleverClient, CleverEvent, student_from_user

__all__ = ["CleverClient", "CleverEvent", "student_from_user"]
