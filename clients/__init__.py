"""Python client library for the writeback service: a typed asyncio wrapper around the
generated stubs, and a small CLI (``python -m clients --help``)."""

from clients._client import BearerToken, WritebackClient, student_key, tls_credentials
from clients._errors import WritebackError

__all__ = ["BearerToken", "WritebackClient", "WritebackError", "student_key", "tls_credentials"]
