"""What a load run sends: the students file, the run's options, and each process's stream of
pre-serialized requests for the echo, resolve, submit and rush scenarios."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import IntEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp
from writeback.v1 import writeback_pb2 as pb

SCENARIOS = ("echo", "resolve", "submit", "rush")
KEYS = ("sis_id", "student_number", "powerschool_id", "mix")
STUDENT_COLUMNS = ("sis_id", "student_number", "powerschool_id", "school_number")

# The RPCs a run calls, by index (a Call names its method by position: no string per call).
METHODS = (
    "/grpc.health.v1.Health/Check",
    "/writeback.v1.WritebackService/ResolveStudent",
    "/writeback.v1.WritebackService/SubmitAttendance",
)
CHECK, RESOLVE, SUBMIT = range(3)

# Calls to pre-build before the clock starts; a closed loop that outlives them builds the
# rest as it goes (a few microseconds each, next to the call's own cost).
PREBUILT = 20_000
# The morning rush: late check-ins between 08:00 and 09:30 local; early check-outs 12:00-15:00.
_LATE_FROM, _LATE_SPAN = time(8, 0), 90 * 60
_EARLY_FROM, _EARLY_SPAN = time(12, 0), 3 * 60 * 60
# Miss keys are far from any real identifier (and below 2^53: JSON readers keep them exact).
_MISSING_POWERSCHOOL_ID = 9_000_000_000_000


class Kind(IntEnum):
    """What a call is, so its outcome can be judged: a miss expects NOT_FOUND, a replay
    expects ``replayed``."""

    ECHO = 0
    HIT = 1
    MISS = 2
    SUBMIT = 3
    REPLAY = 4


@dataclass(frozen=True, slots=True)
class Call:
    """One request: the method's index in METHODS, its serialized message and its kind."""

    method: int
    payload: bytes
    kind: Kind


@dataclass(frozen=True)
class Student:
    """One row of the students file; an empty cell is "" (or 0 for the numbers)."""

    sis_id: str = ""
    student_number: str = ""
    powerschool_id: int = 0
    school_number: int = 0


def read_students_file(path: Path) -> list[Student]:
    """The students of a CSV whose header names some of ``sis_id, student_number,
    powerschool_id, school_number``; raises ValueError naming the file and line."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            unknown = sorted(set(header) - set(STUDENT_COLUMNS))
            if unknown or not header or len(set(header)) != len(header):
                raise ValueError(
                    f"{path}: line 1 must name distinct columns from "
                    f"{', '.join(STUDENT_COLUMNS)}"
                    + (f" (unknown: {', '.join(unknown)})" if unknown else "")
                )
            students = [_student(path, reader.line_num, header, row) for row in reader if row]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read ({type(err).__name__})") from None
    except csv.Error as err:
        raise ValueError(f"{path}: not a valid CSV: {err}") from None
    if not students:
        raise ValueError(f"{path}: no students after the header line")
    return students


def _student(path: Path, line: int, header: list[str], row: list[str]) -> Student:
    if len(row) != len(header):
        raise ValueError(f"{path}: line {line}: {len(row)} fields, the header {len(header)}")
    fields: dict[str, Any] = {k: v.strip() for k, v in zip(header, row, strict=True)}
    for number in ("powerschool_id", "school_number"):
        text = fields.get(number, "")
        if text and not text.isdigit():
            raise ValueError(f"{path}: line {line}: {number} must be a whole number")
        fields[number] = int(text or 0)
    return Student(**fields)


@dataclass(frozen=True)
class Tls:
    """PEM bytes for a TLS channel: CA certificates (None: the system's), client cert and key."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None


@dataclass(frozen=True)
class Options:
    """One load run (the flags of ``writeback load``); :func:`check` says what is wrong."""

    target: str
    scenario: str = "echo"
    rate: float | None = None
    concurrency: int | None = None
    duration: float = 10.0
    warmup: float = 2.0
    processes: int = 1
    channels: int = 1
    token: str | None = field(default=None, repr=False)
    tls: Tls | None = field(default=None, repr=False)
    district: str = ""
    students: tuple[Student, ...] = field(default=(), repr=False)
    key: str = "sis_id"
    miss_share: float = 0.0
    replay_share: float = 0.0
    day: date | None = None  # submit and rush: the school day (default: yesterday)
    timeout: float = 10.0  # each call's deadline, seconds
    seed: int = 0

    @property
    def mode(self) -> str:
        """``open`` (a target rate) or ``closed`` (a number of calls in flight)."""
        return "open" if self.rate is not None else "closed"

    @property
    def in_flight(self) -> int:
        """The closed loop's calls in flight in total (1 unless given)."""
        return self.concurrency if self.concurrency is not None else 1


def check(options: Options) -> None:
    """Raise ValueError with a message for the user if the options do not make a run."""
    o = options
    if o.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {o.scenario!r} (choose from {', '.join(SCENARIOS)})")
    _check_loop(o)
    if o.key not in KEYS:
        raise ValueError(f"--key must be one of {', '.join(KEYS)}")
    for name, share in (("--miss-share", o.miss_share), ("--replay-share", o.replay_share)):
        if not 0 <= share <= 1:
            raise ValueError(f"{name} must be between 0 and 1")
    if o.miss_share and o.scenario != "resolve":
        raise ValueError("--miss-share is for --scenario resolve")
    if o.replay_share and o.scenario not in ("submit", "rush"):
        raise ValueError("--replay-share is for --scenario submit or rush")
    if o.scenario != "echo":
        _check_scenario(o)


def _check_loop(o: Options) -> None:
    if o.rate is not None and o.concurrency is not None:
        raise ValueError("give --rate (open loop) or --concurrency (closed loop), not both")
    if o.rate is not None and o.rate <= 0:
        raise ValueError("--rate must be above 0 requests/s")
    if o.concurrency is not None and o.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    if o.processes < 1 or o.channels < 1:
        raise ValueError("--processes and --channels must be at least 1")
    if o.rate is None and o.in_flight < o.processes:
        raise ValueError("--concurrency must be at least --processes (one call each)")
    if o.duration <= 0 or o.warmup < 0:
        raise ValueError("--duration must be above 0 and --warmup 0 or more")


def _check_scenario(o: Options) -> None:
    if not o.district:
        raise ValueError(f"--scenario {o.scenario} needs --district")
    if not o.students:
        raise ValueError(f"--scenario {o.scenario} needs --students-file (the students it uses)")
    if not o.token:
        raise ValueError(
            f"--scenario {o.scenario} needs a bearer token: --token, WRITEBACK_TOKEN or "
            "--token-file"
        )
    if o.scenario == "resolve":
        for key in _keys(o.key):
            if not any(_key_of(s, key) is not None for s in o.students):
                raise ValueError(f"--key {o.key}: no student in the file has a {key}")
    elif not any(_key_of(s, k) is not None for s in o.students for k in STUDENT_COLUMNS[:3]):
        raise ValueError("the students file has no student with a key")
    if o.day is not None and o.day >= date.today():
        raise ValueError("--day must be a past date (the service refuses times in the future)")


def _keys(key: str) -> tuple[str, ...]:
    return ("sis_id", "student_number", "powerschool_id") if key == "mix" else (key,)


def _key_of(student: Student, key: str) -> pb.StudentKey | None:
    if key == "powerschool_id":
        ps_id = student.powerschool_id
        return pb.StudentKey(powerschool_id=ps_id) if ps_id else None
    value: str = getattr(student, key)
    return _text_key(key, value) if value else None


def _text_key(key: str, value: str) -> pb.StudentKey:
    if key == "sis_id":
        return pb.StudentKey(sis_id=value)
    return pb.StudentKey(student_number=value)


def _any_key(student: Student) -> pb.StudentKey | None:
    for key in STUDENT_COLUMNS[:3]:
        if (found := _key_of(student, key)) is not None:
            return found
    return None


def _by_school(students: tuple[Student, ...]) -> list[Student]:
    """The students taken round-robin across schools, so consecutive check-ins go to
    different schools, as in a district's morning."""
    schools: dict[int, list[Student]] = {}
    for s in students:
        schools.setdefault(s.school_number, []).append(s)
    queues = list(schools.values())
    out: list[Student] = []
    for i in range(max(len(q) for q in queues)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


class Stream:
    """One process's calls: ``call(i)`` is its i-th. Process ``index`` of ``processes`` takes
    every ``processes``-th unit of work, so processes never send the same new submission."""

    def __init__(
        self, options: Options, index: int, *, timezone: str = "UTC", run_id: str = ""
    ) -> None:
        self._o = options
        self._index = index
        self._run_id = run_id
        self._zone = ZoneInfo(timezone)
        self._day = options.day or date.today() - timedelta(days=1)
        # Reproducible draws (which calls miss or replay), not secrets.
        self._rng = random.Random(f"{options.seed}/{index}")  # noqa: S311
        self._echo = Call(CHECK, b"", Kind.ECHO)
        with_key = [s for s in options.students if _any_key(s) is not None]
        self._ordered = _by_school(tuple(with_key)) if with_key else []
        if options.scenario == "resolve":
            keys = _keys(options.key)
            # (key, student) pairs that exist in the file, cycled through in order.
            self._hits = [
                _key_of(s, k) for s in options.students for k in keys if _key_of(s, k) is not None
            ]
            self._miss_keys = keys
        self._built = [self._build(i) for i in range(self._prebuilt())]

    def _prebuilt(self) -> int:
        o = self._o
        if o.rate is None:
            return PREBUILT
        # The open loop's calls are known: all of them are built before the clock starts.
        return int(o.rate / o.processes * (o.warmup + o.duration)) + 2

    def call(self, i: int) -> Call:
        """The i-th call of this process."""
        return self._built[i] if i < len(self._built) else self._build(i)

    def _unit(self, i: int) -> int:
        """This process's i-th unit of work as an index over all processes' work."""
        return i * self._o.processes + self._index

    def _build(self, i: int) -> Call:
        scenario = self._o.scenario
        if scenario == "echo":
            return self._echo
        if scenario == "resolve":
            return self._resolve(self._unit(i))
        if scenario == "submit":
            return self._submit(self._unit(i))
        # rush: a front desk looks the student up, then checks them in (call i + 1 goes once
        # call i has answered: see the runner); a run longer than a pass over the students
        # goes on a week earlier (new records, as for submit).
        g = self._unit(i // 2)
        n = len(self._ordered)
        student = self._ordered[g % n]
        if i % 2 == 0:
            key = _any_key(student)
            request = pb.ResolveStudentRequest(district_id=self._o.district, key=key)
            return Call(RESOLVE, request.SerializeToString(), Kind.HIT)
        day = self._day - timedelta(weeks=g // n)
        return self._late_or_early(g, student, pb.ATTENDANCE_EVENT_LATE_CHECK_IN, n, day)

    def _resolve(self, g: int) -> Call:
        if self._o.miss_share and self._rng.random() < self._o.miss_share:
            kind = self._miss_keys[g % len(self._miss_keys)]
            if kind == "powerschool_id":
                key = pb.StudentKey(powerschool_id=_MISSING_POWERSCHOOL_ID + g)
            else:
                key = _text_key(kind, f"loadgen-missing-{self._run_id}-{g}")
            request = pb.ResolveStudentRequest(district_id=self._o.district, key=key)
            return Call(RESOLVE, request.SerializeToString(), Kind.MISS)
        request = pb.ResolveStudentRequest(
            district_id=self._o.district, key=self._hits[g % len(self._hits)]
        )
        return Call(RESOLVE, request.SerializeToString(), Kind.HIT)

    def _submit(self, g: int) -> Call:
        """Late check-ins of every student, then early check-outs of every student, each at
        its own time; past that, the same again a week earlier, and so on back. Every call is
        a new record: a second check-in of a student on one day is a correction, which costs
        the service more and is not what a morning brings."""
        n = len(self._ordered)
        lap, rest = divmod(g, 2 * n)
        late = rest < n
        event = pb.ATTENDANCE_EVENT_LATE_CHECK_IN if late else pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT
        day = self._day - timedelta(weeks=lap)
        return self._late_or_early(g, self._ordered[g % n], event, n, day)

    def _late_or_early(
        self, g: int, student: Student, event: pb.AttendanceEvent.ValueType, n: int, day: date
    ) -> Call:
        late = event == pb.ATTENDANCE_EVENT_LATE_CHECK_IN
        start, span = (_LATE_FROM, _LATE_SPAN) if late else (_EARLY_FROM, _EARLY_SPAN)
        # Distinct times: spread over the window, and a microsecond more for each lap.
        offset = timedelta(seconds=(g % n) * span / n, microseconds=g // n)
        at = datetime.combine(day, start, tzinfo=self._zone) + offset
        occurred = Timestamp()
        occurred.FromDatetime(at)
        request = pb.SubmitAttendanceRequest(
            district_id=self._o.district,
            idempotency_key=f"loadgen-{self._run_id}-{g}",
            student=_any_key(student),
            event=event,
            occurred_at=occurred,
            reason="load test",
        )
        return Call(SUBMIT, request.SerializeToString(), Kind.SUBMIT)

    def replay(self, accepted: list[bytes]) -> Call | None:
        """A replay of an accepted submission, chosen at random, for this call's share of
        replays; None when this call is not one (or nothing was accepted yet)."""
        if accepted and self._rng.random() < self._o.replay_share:
            return Call(SUBMIT, accepted[self._rng.randrange(len(accepted))], Kind.REPLAY)
        return None
