"""The current trace as log lines and submits read it: the span our code made current, and
nothing (without asking OpenTelemetry) outside one."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from service import tracing

_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_server_span_names_the_callers_trace_and_nothing_is_named_after_it() -> None:
    assert tracing.current_trace_id() is None
    assert tracing.current_traceparent() is None
    with tracing.server_span(
        "writeback.v1.WritebackService/SubmitAttendance", {"traceparent": _PARENT}
    ):
        assert tracing.current_trace_id() == "0af7651916cd43dd8448eb211c80319c"
        traceparent = tracing.current_traceparent()
        assert traceparent is not None
        assert traceparent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert tracing.current_trace_id() is None
    assert tracing.current_traceparent() is None


def test_a_continued_span_carries_the_kept_traceparent() -> None:
    with tracing.continued("deliver", _PARENT, {"record_id": "r1"}):
        assert tracing.current_trace_id() == "0af7651916cd43dd8448eb211c80319c"
    assert tracing.current_trace_id() is None


def test_outside_a_span_opentelemetry_is_not_asked_even_after_spans_were_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A PowerSchool call anywhere in the process starts a client span; the check-ins that
    # follow without a traceparent must not pay for a walk through OpenTelemetry's context.
    tracing.end_client_span(tracing.start_client_span("PowerSchool GET", "GET", "/x"), 200)

    def asked(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("OpenTelemetry was asked for the current trace")

    monkeypatch.setattr(trace, "get_current_span", asked)
    monkeypatch.setattr(tracing._PROPAGATOR, "inject", asked)
    assert tracing.current_trace_id() is None
    assert tracing.current_traceparent() is None
