"""Meeting-mode and attendance-mode decisions, as pure functions of plain data (see
``rules.py`` for the daily ones, whose per-row rules these apply per class meeting).

Which meetings an event concerns (times are seconds since midnight in the school's zone):

- a late check-in at T: every meeting that ended by T is *missed* (the school's
  ``missed_code``), the meeting in progress at T (start <= T < end) is *tardy* (the late
  code), later meetings are untouched;
- an early check-out at T: the meeting in progress at T and every later one (end > T) get the
  early-dismissal code.

Both events the same day (the service's live record of the other event is the *sibling*):
each event claims meetings by its own rule. After a late check-in at T1 and an early check-out
at T2 >= T1, the only meeting both claim is the one in progress at both times (no meeting can
end by T1 and still run after T2); it gets the school's ``late_and_early_code``, else the later
event's code, and its comment notes both. A check-out *before* the day's check-in (the student
left and came back) can make both claim more meetings: the later event's code wins each of
them, the combined code again for a meeting in progress at both times.

Per meeting, the existing mark is treated as a daily row is: the service's own mark (this
record's tag) already as wanted is not sent again; a teacher's absence is replaced and its
value kept; any other teacher's mark is left alone and reported on the meeting.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from service.domain.rules import attendance_comment, is_absence, local_time, record_tags
from service.models import (
    AttendanceEvent,
    AttendanceMode,
    AttendanceRecord,
    AttendanceState,
    MeetingMark,
    Replaced,
    School,
)
from service.powerschool import AttendanceCode, ClassMeeting, MeetingAttendance

LATE_CHECK_IN = AttendanceEvent.LATE_CHECK_IN
MeetingKey = tuple[int, int]
"""A meeting by (CC.ID, PERIOD.ID)."""

_MODE_LABEL = {
    AttendanceMode.DAILY: "Daily",
    AttendanceMode.MEETING: "Meeting",
    AttendanceMode.TIME: "Time",
}


def key_of(meeting: ClassMeeting | MeetingAttendance | MeetingMark) -> MeetingKey:
    """The (CC.ID, PERIOD.ID) of a meeting, its mark, or a record's note of it."""
    return (meeting.ccid, meeting.period_id)


def seconds_of_day(occurred_at: datetime, timezone: str) -> int:
    """``occurred_at`` as seconds since midnight in the school's time zone."""
    t = local_time(occurred_at, timezone)
    return t.hour * 3600 + t.minute * 60 + t.second


class Kind(enum.StrEnum):
    """What an event makes of a meeting."""

    MISSED = "missed"
    TARDY = "tardy"
    EARLY = "early"


def claims(
    event: AttendanceEvent, at: int, meetings: Sequence[ClassMeeting]
) -> dict[MeetingKey, Kind]:
    """The meetings an event at ``at`` (seconds since local midnight) concerns, and how."""
    out: dict[MeetingKey, Kind] = {}
    for m in meetings:
        if event is AttendanceEvent.LATE_CHECK_IN:
            if m.end_time <= at:
                out[key_of(m)] = Kind.MISSED
            elif m.start_time <= at:
                out[key_of(m)] = Kind.TARDY
        elif m.end_time > at:
            out[key_of(m)] = Kind.EARLY
    return out


@dataclass(frozen=True)
class Claim:
    """One meeting a record concerns: the code it gets and the records its comment notes."""

    code: str
    notes: tuple[AttendanceRecord, ...]


def _code_for_kind(school: School, record: AttendanceRecord, kind: Kind) -> str:
    if kind is Kind.MISSED:
        return school.missed_code
    return school.code_for(record.event, excused=record.excused)


def _containing(meeting: ClassMeeting, at: int) -> bool:
    return meeting.start_time <= at < meeting.end_time


def day_claims(
    record: AttendanceRecord,
    sibling: AttendanceRecord | None,
    meetings: Sequence[ClassMeeting],
    *,
    school: School,
    timezone: str,
) -> dict[MeetingKey, Claim]:
    """The meetings ``record`` concerns with the code each gets, given the day's other
    event ``sibling`` (see the module docstring for which wins)."""
    at = seconds_of_day(record.occurred_at, timezone)
    own = claims(record.event, at, meetings)
    if sibling is None or sibling.event is record.event:
        return {k: Claim(_code_for_kind(school, record, v), (record,)) for k, v in own.items()}
    theirs = claims(sibling.event, seconds_of_day(sibling.occurred_at, timezone), meetings)
    late, early = (record, sibling) if record.event is LATE_CHECK_IN else (sibling, record)
    t_in = seconds_of_day(late.occurred_at, timezone)
    t_out = seconds_of_day(early.occurred_at, timezone)
    by_key = {key_of(m): m for m in meetings}
    if t_out < t_in:
        # Left and came back: the check-out's claims end at the return, the check-in's
        # missed meetings start at the departure.
        def kept(key: MeetingKey, kind: Kind) -> bool:
            m = by_key[key]
            if kind is Kind.EARLY:
                return m.start_time <= t_in
            return kind is not Kind.MISSED or m.end_time > t_out

        own = {k: v for k, v in own.items() if kept(k, v)}
        theirs = {k: v for k, v in theirs.items() if kept(k, v)}
    later = late if t_in > t_out else early
    out: dict[MeetingKey, Claim] = {}
    for key, kind in own.items():
        if key not in theirs:
            out[key] = Claim(_code_for_kind(school, record, kind), (record,))
            continue
        m = by_key[key]
        if _containing(m, t_in) and _containing(m, t_out):
            code = school.late_and_early_code or _code_for_kind(
                school, later, Kind.EARLY if later is early else Kind.TARDY
            )
        elif _containing(m, t_out):
            code = _code_for_kind(school, early, Kind.EARLY)
        elif _containing(m, t_in):
            code = _code_for_kind(school, late, Kind.TARDY)
        else:
            code = school.missed_code
        out[key] = Claim(code, (record, sibling))
    return out


@dataclass(frozen=True)
class MeetingPlan:
    """What an attempt does with one meeting. ``send`` False: nothing to send (already as
    wanted, or left alone: ``mark.left_unchanged`` says why)."""

    meeting: ClassMeeting
    mark: MeetingMark
    """The record's note of the meeting: code, replaced value, or why it was left alone."""
    codeid: int | None = None
    comment: str = ""
    send: bool = False
    delete_dcid: int | None = None
    """A cancel: delete the service's mark (it created it) instead of writing."""
    keep_code_for: str = ""
    """A cancel that keeps the sibling's part of a shared meeting: the sibling, whose code
    there is now ``mark.attendance_code``."""
    hand_over_to: str = ""
    """A cancel: the sibling that inherits this meeting's replaced value."""


@dataclass(frozen=True)
class DayPlan:
    """A Meeting-mode attempt's decision: the record's end state and each meeting's plan."""

    state: AttendanceState
    message: str = ""
    code: str = ""
    meetings: tuple[MeetingPlan, ...] = ()

    @property
    def writes(self) -> list[MeetingPlan]:
        """The meetings to send, in one request."""
        return [m for m in self.meetings if m.send and m.delete_dcid is None]

    @property
    def deletes(self) -> list[MeetingPlan]:
        """The service's own marks to delete (a cancel of marks it created)."""
        return [m for m in self.meetings if m.delete_dcid is not None]


def _failed(message: str, code: str = "") -> DayPlan:
    return DayPlan(AttendanceState.FAILED, message, code)


def _period(meeting: ClassMeeting) -> str:
    return meeting.period or f"period id {meeting.period_id}"


def _mark(meeting: ClassMeeting, **fields: object) -> MeetingMark:
    return MeetingMark(
        ccid=meeting.ccid,
        period_id=meeting.period_id,
        period=meeting.period,
        start_time=meeting.start_time,
        end_time=meeting.end_time,
        **fields,  # type: ignore[arg-type]
    )


def plan_meeting_write(
    record: AttendanceRecord,
    *,
    school: School,
    timezone: str,
    yearid: int,
    codes: Mapping[str, AttendanceCode],
    meetings: Sequence[ClassMeeting],
    existing: Mapping[MeetingKey, MeetingAttendance],
    sibling: AttendanceRecord | None,
) -> DayPlan:
    """What writing ``record`` does to each of the student's meetings that day."""
    event_code = school.code_for(record.event, excused=record.excused)
    label = record.event.value.replace("_", " ")
    if not event_code:
        return _failed(
            f"school {record.school_number} has no attendance code configured for {label}"
        )
    day = record.att_date.isoformat()
    if not meetings:
        return _failed(
            f"PowerSchool has no class meetings for this student on {day} at school "
            f"{record.school_number}; check the student's schedule, or whether the school "
            "takes Meeting attendance",
            event_code,
        )
    wanted = day_claims(record, sibling, meetings, school=school, timezone=timezone)
    if not wanted:
        at = f"{local_time(record.occurred_at, timezone):%H:%M}"
        when = "had started by" if record.event is AttendanceEvent.LATE_CHECK_IN else "runs after"
        return DayPlan(
            AttendanceState.SKIPPED,
            f"no class meeting of this student on {day} {when} {at}; nothing to mark",
            event_code,
        )
    if any(not c.code for c in wanted.values()):
        return _failed(
            f"school {record.school_number} has no missed_code configured for the class "
            "meetings a late arrival misses",
            event_code,
        )
    by_id = {c.id: c for c in codes.values()}
    plans: list[MeetingPlan] = []
    for meeting in meetings:
        claim = wanted.get(key_of(meeting))
        if claim is None:
            continue
        code = codes.get(claim.code)
        if code is None:
            return _failed(
                f"attendance code {claim.code!r} does not exist in PowerSchool for school "
                f"{record.school_number}, yearid {yearid}; create it or fix the school's code "
                "setting",
                event_code,
            )
        comment = attendance_comment(claim.notes, timezone)
        row = existing.get(key_of(meeting))
        tags = record_tags(row.comment) if row else []
        replaced: Replaced | None = None
        if row is not None and record.record_id in tags:
            if row.attendance_codeid == code.id and row.comment == comment:
                plans.append(MeetingPlan(meeting, _mark(meeting, attendance_code=claim.code)))
                continue
        elif row is not None:
            held = by_id.get(row.attendance_codeid or -1)
            shown = held.att_code if held else ""
            ours = sibling is not None and sibling.record_id in tags
            if not ours and not is_absence(held, school):
                what = repr(shown) if held else f"code id {row.attendance_codeid}"
                why = f"PowerSchool already has {what} here, entered outside the service"
                plans.append(MeetingPlan(meeting, _mark(meeting, left_unchanged=why)))
                continue
            replaced = Replaced(row.attendance_codeid, shown, row.comment)
        plans.append(
            MeetingPlan(
                meeting,
                _mark(meeting, attendance_code=claim.code, replaced=replaced),
                codeid=code.id,
                comment=comment,
                send=True,
            )
        )
    plans += _released(record, sibling, meetings, existing, school=school, timezone=timezone)
    if all(p.mark.left_unchanged and not p.send for p in plans):
        periods = ", ".join(_period(p.meeting) for p in plans)
        return DayPlan(
            AttendanceState.SKIPPED,
            f"every class meeting this {label} concerns ({periods}) already has a mark "
            "entered outside the service; left unchanged",
            event_code,
            tuple(plans),
        )
    return DayPlan(AttendanceState.WRITTEN, "", event_code, tuple(plans))


def _released(
    record: AttendanceRecord,
    sibling: AttendanceRecord | None,
    meetings: Sequence[ClassMeeting],
    existing: Mapping[MeetingKey, MeetingAttendance],
    *,
    school: School,
    timezone: str,
) -> list[MeetingPlan]:
    """Meetings the other event marked that neither event claims any more (a student who
    came back: the check-out's marks after the return): put back what they held."""
    if sibling is None or sibling.event is record.event:
        return []
    mine = day_claims(record, sibling, meetings, school=school, timezone=timezone)
    theirs = day_claims(sibling, record, meetings, school=school, timezone=timezone)
    notes = {key_of(m): m for m in sibling.meetings}
    out = []
    for meeting in meetings:
        key = key_of(meeting)
        row = existing.get(key)
        if key in mine or key in theirs or row is None:
            continue
        if record_tags(row.comment) != [sibling.record_id]:
            continue
        note = notes.get(key)
        replaced = note.replaced if note else None
        if replaced is not None and replaced.attendance_codeid is not None:
            out.append(
                MeetingPlan(
                    meeting,
                    _mark(meeting, left_unchanged="the student was back: put back"),
                    codeid=replaced.attendance_codeid,
                    comment=replaced.comment,
                    send=True,
                )
            )
        else:
            out.append(
                MeetingPlan(
                    meeting,
                    _mark(meeting, left_unchanged="the student was back: mark removed"),
                    send=True,
                    delete_dcid=row.dcid,
                )
            )
    return out


def plan_meeting_cancel(
    record: AttendanceRecord,
    *,
    school: School | None,
    timezone: str,
    codes: Mapping[str, AttendanceCode],
    meetings: Sequence[ClassMeeting],
    existing: Mapping[MeetingKey, MeetingAttendance],
    sibling: AttendanceRecord | None,
) -> DayPlan:
    """What cancelling ``record`` does to each meeting it wrote: keep the other event's
    part of a shared meeting, restore the value it replaced, or delete the mark it created;
    a meeting that no longer carries its tag is left alone."""
    schedule = {key_of(m): m for m in meetings}
    plans: list[MeetingPlan] = []
    for note in record.meetings:
        row = existing.get(key_of(note))
        if (
            not note.attendance_code
            or row is None
            or record.record_id not in record_tags(row.comment)
        ):
            continue
        meeting = schedule.get(key_of(note)) or ClassMeeting(
            note.ccid, note.period_id, note.start_time, note.end_time, note.period
        )
        if sibling is not None and sibling.record_id in record_tags(row.comment):
            theirs = (
                day_claims(sibling, None, [meeting], school=school, timezone=timezone)
                if school
                else {}
            )
            claim = theirs.get(key_of(meeting))
            kept = codes.get(claim.code) if claim else None
            if claim is None or kept is None:
                return _failed(
                    f"the other event's code for {_period(meeting)} no longer exists in "
                    f"PowerSchool for school {record.school_number}"
                )
            theirs_note = next((m for m in sibling.meetings if key_of(m) == key_of(meeting)), None)
            hand_over = (
                theirs_note is not None
                and theirs_note.replaced is not None
                and f"[writeback:{record.record_id}]" in theirs_note.replaced.comment
            )
            plans.append(
                MeetingPlan(
                    meeting,
                    _mark(meeting, attendance_code=claim.code),
                    codeid=kept.id,
                    comment=attendance_comment([sibling], timezone),
                    send=True,
                    keep_code_for=sibling.record_id,
                    hand_over_to=sibling.record_id if hand_over else "",
                )
            )
        elif note.replaced is not None and note.replaced.attendance_codeid is not None:
            plans.append(
                MeetingPlan(
                    meeting,
                    _mark(meeting, attendance_code=note.replaced.att_code),
                    codeid=note.replaced.attendance_codeid,
                    comment=note.replaced.comment,
                    send=True,
                )
            )
        else:
            plans.append(MeetingPlan(meeting, _mark(meeting), send=True, delete_dcid=row.dcid))
    if not plans:
        return DayPlan(AttendanceState.CANCELLED, "nothing of this record was in PowerSchool")
    restored = sum(1 for p in plans if p.delete_dcid is None)
    removed = len(plans) - restored
    return DayPlan(
        AttendanceState.CANCELLED,
        f"put back {restored} and removed {removed} class meeting marks in PowerSchool",
        meetings=tuple(plans),
    )


def observed_mode(counts: Mapping[AttendanceMode, int]) -> AttendanceMode | None:
    """The mode a school's ATTENDANCE rows of the year show (the most rows), or None when
    it has none yet (no evidence either way)."""
    mode, most = max(counts.items(), key=lambda kv: kv[1], default=(None, 0))
    return mode if most > 0 else None


def mode_problem(
    school: School, observed: AttendanceMode | None, counts: Mapping[AttendanceMode, int]
) -> str:
    """Why the service must not write for ``school`` in its configured mode ("" if it may):
    Time mode, or PowerSchool's rows showing another mode than configured."""
    number = school.school_number
    if school.attendance_mode is AttendanceMode.TIME:
        return (
            f"school {number} is set to Time attendance, which the service does not write "
            "(how many minutes PowerSchool's Time rules expect is not known); set the school to "
            "the mode it takes in PowerSchool, or turn its writeback off"
        )
    if observed is None or observed is school.attendance_mode:
        return ""
    seen = ", ".join(f"{counts.get(m, 0)} {_MODE_LABEL[m]}" for m in _MODE_LABEL)
    return (
        f"school {number} takes {_MODE_LABEL[observed]} attendance in PowerSchool ({seen} "
        f"records this year) but is set to {_MODE_LABEL[school.attendance_mode]} in the "
        "service; set its attendance_mode to match, nothing was written"
    )
