"""`make bench`: the writeback service measured as it is deployed, against a baseline
measured in the same run on the same machine (compare ratios, not absolute numbers).

Every part runs in its own process: PostgreSQL (embedded, or DATABASE_URL), the service as
`make run` starts it (`python -m service`, configured through its environment), a bare
grpc.aio echo server (`scripts/echo_server.py`), the PowerSchool / Clever / ClassLink
simulators and the drivers: h2load (nghttp2) for unary RPCs, `python -m clients load` for
open loop, submits and the load tool's own ceiling, py-spy for flame graphs.

Sections (`--only`, default all): resolve, submit, layouts (`--role api` + `worker`,
`GRPC_PROCESSES` 1..cores), delivery (1,000 late check-ins at 100 ms PowerSchool latency,
default district limits; then a morning rush of lookups and check-ins of students
PowerSchool was not yet asked about, at the same latency), sync (100,000 students from Clever
and ClassLink). Prints one table (measure | echo | service | ratio | target | met?) and
writes figures.json, the load tool's JSON and plots, h2load logs, flame graphs and every
process's log into `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

# Before grpc is imported, which reads it: the bench starts processes while gRPC is busy,
# and gRPC's fork handlers (for fork without exec) would print a warning each time. The
# children get the environment the bench was given.
_FORK_SUPPORT = os.environ.get("GRPC_ENABLE_FORK_SUPPORT")
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

import aiohttp
import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from clients import BearerToken
from service.config import variables
from service.store import EmbeddedPostgres
from service.store.sealing import new_key_text
from simulators.powerschool import Dataset, demo_dataset, recent_school_day
from simulators.roster import school_roster_id

ROOT = Path(__file__).resolve().parent.parent
TZ = "America/Chicago"
SERVICE_NAME = "writeback.v1.WritebackService"
RESOLVE_PATH = f"/{SERVICE_NAME}/ResolveStudent"
ECHO_PATH = "/grpc.health.v1.Health/Check"
CORES = os.cpu_count() or 1
# The Python load tool's ceiling and the "Python client" figures: 32 calls in flight.
CEILING_IN_FLIGHT = 32
# A service figure this close to its driver's own ceiling against echo says nothing about
# the service: the driver, not the server, set it.
CLIENT_BOUND = 0.9
SUBMIT_RUN_WEEKS = 8
# Echo/service pairs per target figure, run alternately; the pair with the median ratio is the
# figure. On a shared 2-core VM one pair's ratio moves by 0.1 within minutes (the same code
# measured resolve at 0.77x, 0.84x and 0.86x of echo in three runs), so one pair is luck.
PAIRS = 3
PER_SCHOOL = 1000  # two schools: 2,000 students in the load district
DELIVERY_RECORDS = 1000
MEETING_RECORDS = 100
DELIVERY_LATENCY = 0.1
# Front desks checking students in at once, each waiting on a PowerSchool lookup.
RUSH_IN_FLIGHT = 32
CLEVER_DISTRICT = "5f0c1e7e5e0d157100000001"


# One caller (the bench) sends all the load: the per-caller rate limit would measure itself.
_ONE_CALLER = {"CALLER_RATE_LIMIT": "0"}


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The bench's environment for a child: this checkout's code and generated proto first."""
    env = dict(os.environ)
    env.pop("GRPC_ENABLE_FORK_SUPPORT")
    if _FORK_SUPPORT is not None:
        env["GRPC_ENABLE_FORK_SUPPORT"] = _FORK_SUPPORT
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "proto"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("DATABASE_URL", None)
    env.update(extra or {})
    return env


# --- pure helpers (tests/test_bench_helpers.py) --------------------------------------------


def grpc_frame(message: Message) -> bytes:
    """``message`` as the body of a unary gRPC request: a 5-byte length prefix (flag 0: not
    compressed, then the length as 4 bytes big-endian) and the serialized message."""
    data = message.SerializeToString()
    return b"\x00" + len(data).to_bytes(4, "big") + data


def unframe(body: bytes) -> bytes:
    """The message bytes of a single uncompressed gRPC frame; ValueError if it is not one."""
    if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        raise ValueError("not one uncompressed gRPC frame")
    return body[5:]


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ascending ``sorted_values``."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(p / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def parse_h2load(stdout: str, log: str) -> dict[str, Any]:
    """QPS from h2load's summary and latency percentiles (ms) from its ``--log-file``
    (start µs, HTTP status, µs to the end of the response, one request a line)."""
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", stdout)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", stdout)
    if finished is None or counts is None:
        raise ValueError("h2load printed no summary")
    latencies = sorted(
        int(cols[2]) / 1000
        for cols in (line.split("\t") for line in log.splitlines())
        if len(cols) == 3 and cols[1] == "200"
    )
    return {
        "duration_s": float(finished[1]),
        "qps": float(finished[2]),
        "completed": int(counts[2]),
        "ok_http": int(counts[3]),
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": latencies[-1] if latencies else float("nan"),
            "mean": statistics.fmean(latencies) if latencies else float("nan"),
        },
    }


def students_csv(dataset: Dataset, path: Path) -> list[dict[str, str]]:
    """Write the load tool's students file (``sis_id`` is DCID, as the roster imports it)."""
    rows = [
        {
            "sis_id": str(s.dcid),
            "student_number": s.student_number,
            "powerschool_id": str(s.id),
            "school_number": str(s.schoolid),
        }
        for s in dataset.students
    ]
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


# --- processes --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its living descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields_ = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields_[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its living descendants (/proc/<pid>/stat)."""
    ticks = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields_ = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields_[11]) + int(fields_[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Proc:
    """A child process of the bench, its port and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 5) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Bench:
    """One run: its output directory, the processes it started and the figures so far."""

    def __init__(self, out: Path, seconds: float) -> None:
        self.out = out
        self.seconds = seconds
        self.warmup = min(2.0, seconds / 2)
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_urlsafe(32)
        self.secret_key = os.environ.get("WRITEBACK_SECRET_KEY") or new_key_text()
        self.database_url = ""
        self.figures: dict[str, Any] = {}
        self.rows: list[Row] = []
        self.procs: list[Proc] = []
        self.h2load = _find_h2load()
        self.loadgen_ok = _loadgen_available()
        self.load_district = ""
        # One load district per pair (the first is load_district): each keeps its own
        # submit days, so the pairs' runs stay within the 400 days a check-in may go back.
        self.submit_districts: list[str] = []
        self.pairs = PAIRS
        self.students_file = out / "students.csv"
        self.service: Proc | None = None
        self.echo: Proc | None = None
        self.ps_url = ""
        self.day = ""  # the simulator's most recent school day, for submits
        self._submit_runs: dict[str, int] = {}

    # processes

    def spawn(self, name: str, argv: list[str], port: int, env: dict[str, str]) -> Proc:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        proc = Proc(name, popen, port, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc | None) -> None:
        if proc is not None:
            proc.stop()
            if proc in self.procs:
                self.procs.remove(proc)

    def simulator(self, name: str, module: str, per_school: int, *args: str) -> Proc:
        port = _free_port()
        proc = self.spawn(
            name,
            [
                *(sys.executable, "-m", module, "--port", str(port)),
                *("--students-per-school", str(per_school), *args),
            ],
            port,
            _child_env(),
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise SystemExit(f"{module} exited:\n{proc.tail()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return proc
            time.sleep(0.2)
        raise SystemExit(f"{module} did not start within 300 s")

    def start_echo(self) -> Proc:
        """The baseline: a bare grpc.aio server (asyncio's own loop) answering health checks."""
        return self._start_script("echo", "echo_server.py")

    def start_front(self) -> Proc:
        """The service's interceptors around a ResolveStudent that answers at once, set as
        the service is."""
        # One argument: a token may start with "-" (token_urlsafe's alphabet has it), which
        # argparse would take for an option of its own.
        return self._start_script(
            "front", "front_server.py", f"--token={self.token}", env=_ONE_CALLER
        )

    def _start_script(
        self, name: str, script: str, *args: str, env: dict[str, str] | None = None
    ) -> Proc:
        """A server of ``scripts/`` that prints its port once it listens."""
        log = self.logs / f"{name}.log"
        with log.open("ab") as err:
            popen = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / script), "--port", "0", *args],
                stdout=subprocess.PIPE,
                stderr=err,
                env=_child_env(env),
                cwd=ROOT,
            )
        assert popen.stdout is not None
        with popen.stdout:  # the port is all it prints
            digits = re.findall(r"\d+", popen.stdout.readline().decode())
        if not digits:
            popen.kill()
            raise SystemExit(f"{script} printed no port (see {log})")
        proc = Proc(name, popen, int(digits[-1]), log)
        self.procs.append(proc)
        return proc

    async def start_service(
        self,
        name: str,
        *,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        health: str = SERVICE_NAME,
    ) -> Proc | None:
        """``python -m service`` as `make run` starts it, configured through its environment,
        once its ``health`` service is SERVING (a worker serves only the overall ""); None
        (with its last log lines printed) when it exits before, e.g. because it refuses a
        setting it does not know."""
        port = _free_port()
        proc = self.spawn(
            name,
            [sys.executable, "-m", "service", *args],
            port,
            _child_env(
                {
                    "DATABASE_URL": self.database_url,
                    "GRPC_HOST": "127.0.0.1",
                    "GRPC_PORT": str(port),
                    "METRICS_PORT": str(_free_port()),
                    "WRITEBACK_DATA_DIR": tempfile.mkdtemp(prefix="bench-data-"),
                    "WRITEBACK_BOOTSTRAP_ADMIN_TOKEN": self.token,
                    "WRITEBACK_SECRET_KEY": self.secret_key,
                    # The simulators serve plain http on loopback.
                    "ALLOW_INSECURE_UPSTREAMS": "true",
                    **_ONE_CALLER,
                    **(env or {}),
                }
            ),
        )
        deadline = time.monotonic() + 180
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if proc.popen.poll() is not None:
                    print(f"  {name} exited with status {proc.popen.returncode}:\n{proc.tail(3)}")
                    self.procs.remove(proc)
                    return None
                with contextlib.suppress(grpc.aio.AioRpcError):
                    answer = await stub.Check(
                        health_pb2.HealthCheckRequest(service=health), timeout=1
                    )
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return proc
                await asyncio.sleep(0.3)
        self.stop(proc)
        raise SystemExit(f"{name} did not serve within 180 s (see {proc.log})")

    def channel(self, proc: Proc) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            f"127.0.0.1:{proc.port}", interceptors=[BearerToken(self.token)]
        )

    # drivers

    async def h2load_run(
        self, name: str, server: Proc, path: str, body: bytes, *, clients: int, streams: int
    ) -> dict[str, Any] | None:
        """h2load for ``seconds`` (no warm-up: every request counts, so CPU per RPC is exact),
        ``clients`` connections with ``streams`` requests in flight on each."""
        if self.h2load is None:
            return None
        body_file = self.out / f"{name}.body"
        body_file.write_bytes(body)
        log = self.out / f"{name}.h2load.tsv"
        headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        if server is not self.echo:
            headers += ["-H", f"authorization: Bearer {self.token}"]
        argv = [
            self.h2load,
            *("-D", f"{self.seconds:g}", "-c", str(clients), "-m", str(streams)),
            *("-d", str(body_file), "--log-file", str(log), *headers),
            f"http://127.0.0.1:{server.port}{path}",
        ]
        before = cpu_seconds(server.pid)
        done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
        cpu = cpu_seconds(server.pid) - before
        if done.returncode != 0:
            print(f"  h2load {name} failed: {done.stderr.strip()[-300:]}")
            return None
        result = parse_h2load(done.stdout, log.read_text())
        result.update(
            driver="h2load",
            in_flight=clients * streams,
            server_cpu_s=cpu,
            server_cpu_ms_per_rpc=1000 * cpu / max(1, result["completed"]),
        )
        (self.out / f"{name}.h2load.txt").write_text(done.stdout)
        self.figures[name] = result
        return result

    def loadgen_argv(
        self,
        name: str,
        server: Proc,
        scenario: str,
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        processes: int = 1,
        seconds: float | None = None,
        district: str = "",
    ) -> list[str]:
        argv = [sys.executable, "-m", "clients", "load", "--target", f"127.0.0.1:{server.port}"]
        argv += ["--scenario", scenario, "--processes", str(processes)]
        argv += ["--duration", f"{seconds or self.seconds:g}", "--warmup", f"{self.warmup:g}"]
        argv += ["--json", str(self.out / f"{name}.json"), "--plot", str(self.out / f"{name}.png")]
        if rate is not None:
            argv += ["--rate", f"{rate:.0f}"]
        else:
            argv += ["--concurrency", str(concurrency or 1)]
        district = district or self.load_district
        if scenario != "echo":
            argv += ["--district", district, "--students-file", str(self.students_file)]
        if scenario in ("submit", "rush"):
            argv += ["--day", self._submit_day(district)]
        return argv

    def _submit_day(self, district: str) -> str:
        """Each submit run in a district starts 8 weeks before its last one (the load tool
        steps back a week per 2 x students calls), so a run's check-ins are new records, not
        corrections of another run's; 400 days allow several runs per district."""
        runs = self._submit_runs.get(district, 0)
        self._submit_runs[district] = runs + 1
        return (date.fromisoformat(self.day) - timedelta(weeks=SUBMIT_RUN_WEEKS * runs)).isoformat()

    async def loadgen(
        self,
        name: str,
        server: Proc,
        scenario: str,
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        processes: int = 1,
        district: str = "",
    ) -> dict[str, Any] | None:
        """One `python -m clients load` run (in ``district``, the load district by default);
        its JSON plus the server's CPU per RPC (the CPU of warm-up and measured part over the
        RPCs of both, at the measured rate)."""
        if not self.loadgen_ok:
            return None
        argv = self.loadgen_argv(
            name,
            server,
            scenario,
            concurrency=concurrency,
            rate=rate,
            processes=processes,
            district=district,
        )
        env = _child_env({"WRITEBACK_TOKEN": self.token})
        before = cpu_seconds(server.pid)
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, env=env, cwd=ROOT
        )
        cpu = cpu_seconds(server.pid) - before
        (self.logs / f"{name}.loadgen.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            print(f"  load tool {name} exited {done.returncode}: {done.stderr.strip()[-300:]}")
            return None
        result: dict[str, Any] = json.loads((self.out / f"{name}.json").read_text())
        rpcs = result["qps"] * (result["duration_s"] + self.warmup)
        result.update(
            driver="loadgen",
            server_cpu_s=cpu,
            server_cpu_ms_per_rpc=1000 * cpu / max(1.0, rpcs),
        )
        if result.get("errors"):
            print(f"  {name}: errors {result['errors']}")
        self.figures[name] = result
        return result

    async def flame(self, name: str, server: Proc, scenario: str) -> None:
        """py-spy flame graphs of ``server`` while the load tool runs ``scenario``: one with
        native frames (grpc's C core included), for which py-spy pauses the service at each
        sample, so it runs far below its rate; and one of Python frames alone, sampled without
        pausing it, at the load's own rate. The rate each ran at is printed and kept."""
        spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        if spy is None or not self.loadgen_ok:
            print(f"  flame graph {name}: skipped (py-spy or the load tool is missing)")
            return
        duration = max(1, round(self.seconds))
        for kind, options in (("", ("--native",)), ("-python", ("--nonblocking",))):
            label = f"flame-{name}{kind}"
            svg = self.out / f"{label}.svg"
            argv = self.loadgen_argv(
                label,
                server,
                scenario,
                concurrency=16,
                # One client process: more would take the CPU the profile is meant to show.
                processes=1,
                seconds=duration + 2,
            )
            load = _spawn_quiet(argv, _child_env({"WRITEBACK_TOKEN": self.token}))
            # The load starts first; py-spy samples once the load tool is up and warmed up.
            await asyncio.sleep(self.warmup + 1.5)
            log = self.logs / f"py-spy-{name}{kind}.log"
            spy_proc = _py_spy(spy, server.pid, duration, svg, log, options=options)
            await asyncio.to_thread(spy_proc.wait)
            await asyncio.to_thread(load.wait)
            if spy_proc.returncode != 0 or not svg.exists():
                tail = log.read_text(errors="replace").strip()
                print(f"  flame graph {label}: py-spy failed ({tail[-200:]}); going on")
                continue
            key = f"flame_{name}{kind.replace('-', '_')}"
            self.figures[key] = str(svg)
            with contextlib.suppress(OSError, ValueError, KeyError):
                qps = json.loads((self.out / f"{label}.json").read_text())["qps"]
                self.figures[f"{key}_qps"] = qps
                print(f"  {svg.name}: the service ran at {qps:,.0f} calls/s while sampled")

    # table

    def row(
        self,
        measure: str,
        echo: str,
        service: str,
        ratio: float | None,
        *,
        target: str = "",
        met: bool | None = None,
        ratio_text: str | None = None,
    ) -> None:
        if ratio_text is None:
            ratio_text = "" if ratio is None else f"{ratio:.2f}x"
        self.rows.append(Row(measure, echo, service, ratio_text, target, met))


@dataclass
class Row:
    """One line of the printed table."""

    measure: str
    echo: str
    service: str
    ratio: str
    target: str = ""
    met: bool | None = None
    notes: list[str] = field(default_factory=list)


def _spawn_quiet(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT
    )


def _py_spy(
    spy: str, pid: int, seconds: int, svg: Path, log: Path, *, options: Sequence[str]
) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(
            [
                *(spy, "record", "--pid", str(pid), "--duration", str(seconds), *options),
                *("--rate", "250", "--format", "flamegraph", "-o", str(svg)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _find_h2load() -> str | None:
    found = shutil.which("h2load")
    apt = shutil.which("apt-get")
    if found is None and os.geteuid() == 0 and apt:
        print("h2load missing: apt-get install -y nghttp2-client")
        subprocess.run(
            [apt, "install", "-y", "-q", "nghttp2-client"],
            capture_output=True,
            check=False,
        )
        found = shutil.which("h2load")
    if found is None:
        print("note: h2load (Debian nghttp2-client) is missing: unary figures use the load tool")
    return found


def _loadgen_available() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "clients", "load", "--help"],
        capture_output=True,
        env=_child_env(),
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        print("note: `python -m clients load` is not available: its figures are skipped")
    return done.returncode == 0


def _qps(r: dict[str, Any] | None) -> str:
    return "n/a" if r is None else f"{r['qps']:,.0f}/s"


def _lat(r: dict[str, Any] | None) -> str:
    if r is None:
        return "n/a"
    lat = r["latency_ms"]
    return f"p50 {lat['p50']:.2f} / p99 {lat['p99']:.2f} ms"


Pair = tuple[dict[str, Any] | None, dict[str, Any] | None]


def median_pair(pairs: Sequence[Pair], key: str) -> int | None:
    """The index of the (echo, service) pair whose service/echo ratio of ``key`` ("qps" or a
    latency percentile such as "p99") is the median; of an even count, the lower middle one.
    None when no pair has both figures."""
    rated = sorted(
        (r, i)
        for i, (echo, service) in enumerate(pairs)
        if (r := _ratio(service, echo, key)) is not None
    )
    return rated[(len(rated) - 1) // 2][1] if rated else None


def pairs_note(pairs: Sequence[Pair], key: str) -> str:
    """Every pair's ratio of ``key``, in run order ("n/a" for a pair missing a figure)."""
    ratios = [_ratio(service, echo, key) for echo, service in pairs]
    text = ", ".join("n/a" if r is None else f"{r:.2f}x" for r in ratios)
    return f"median of {len(pairs)} alternating echo/service pairs: {text}"


def _ratio(service: dict[str, Any] | None, echo: dict[str, Any] | None, key: str) -> float | None:
    if service is None or echo is None:
        return None
    if key == "qps":
        return float(service["qps"]) / max(1e-9, float(echo["qps"]))
    return float(service["latency_ms"][key]) / max(1e-9, float(echo["latency_ms"][key]))


# --- setup ------------------------------------------------------------------------------


def _district(
    district_id: str, ps_url: str, numbers: tuple[int, ...] = (100, 200), **school: Any
) -> pb.District:
    """A Daily (unless ``school`` says otherwise) district on the simulator at ``ps_url``,
    with the default per-district PowerSchool limits."""
    return pb.District(
        district_id=district_id,
        roster_source=pb.ROSTER_SOURCE_CLEVER,
        writeback_enabled=True,
        timezone=TZ,
        powerschool=pb.PowerSchoolConnection(
            base_url=ps_url, client_id="sim-client", client_secret="sim-secret"
        ),
        schools=[
            pb.School(
                school_number=n,
                roster_school_id=school_roster_id("clever", n),
                writeback_enabled=True,
                late_check_in_code="T",
                early_check_out_code="ED",
                **school,
            )
            for n in numbers
        ],
    )


async def district_with_students(
    stub: writeback_pb2_grpc.WritebackServiceAsyncStub, district: pb.District, students: list[Any]
) -> None:
    """Create the district, import ``students`` and resolve each once (what the post-sync
    prefetch does), so resolves and deliveries find STUDENTS.ID cached."""
    await district_with_roster(stub, district, students)
    did = district.district_id
    sem = asyncio.Semaphore(32)

    async def resolve(dcid: int) -> None:
        async with sem:
            await stub.ResolveStudent(
                pb.ResolveStudentRequest(district_id=did, key=pb.StudentKey(sis_id=str(dcid)))
            )

    await asyncio.gather(*(resolve(s.dcid) for s in students))


async def district_with_roster(
    stub: writeback_pb2_grpc.WritebackServiceAsyncStub, district: pb.District, students: list[Any]
) -> None:
    """Create the district and import ``students``, none of them resolved yet."""
    await stub.UpsertDistrict(pb.UpsertDistrictRequest(district=district))
    did = district.district_id
    await stub.ImportStudents(
        pb.ImportStudentsRequest(
            district_id=did,
            students=[
                pb.RosterStudent(
                    roster_id=f"u{s.dcid}",
                    sis_id=str(s.dcid),
                    student_number=s.student_number,
                    roster_school_id=school_roster_id("clever", s.schoolid),
                    active=True,
                )
                for s in students
            ],
        )
    )


async def _sim_control(url: str, path: str, body: object = None) -> Any:
    async with aiohttp.ClientSession() as http:
        method = http.post if body is not None else http.get
        async with method(f"{url}/_sim/{path}", json=body) as resp:
            return await resp.json()


async def _verify(bench: Bench, server: Proc, path: str, body: bytes) -> None:
    """The request bytes h2load sends get an OK answer (h2load counts HTTP 200 whatever the
    grpc-status)."""
    metadata = () if server is bench.echo else (("authorization", f"Bearer {bench.token}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        # No serializers: the message bytes go on the wire as they are.
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
        await call(unframe(body), metadata=metadata, timeout=10)


# --- sections ---------------------------------------------------------------------------


def _client_bound(bench: Bench, service: dict[str, Any] | None, ceiling: float | None) -> str:
    if service is None or not ceiling or service["qps"] < CLIENT_BOUND * ceiling:
        return ""
    return " (client-bound)"


async def _paired(
    bench: Bench, measure: str, run: Callable[[int], Awaitable[Pair]], key: str = "qps"
) -> tuple[Pair, str]:
    """``run(i)`` for i in 0..pairs-1, one after the other (each an echo run, then the
    service's); the pair with the median ratio of ``key`` and a note of every pair's ratio,
    also kept in figures.json under ``pairs: <measure>``."""
    pairs = [await run(i) for i in range(bench.pairs)]
    chosen = median_pair(pairs, key)
    bench.figures[f"pairs: {measure}"] = {
        "key": key,
        "ratios": [_ratio(service, echo, key) for echo, service in pairs],
        "median_pair": chosen,
    }
    note = pairs_note(pairs, key) if len(pairs) > 1 else ""
    return pairs[0 if chosen is None else chosen], note


def _repeat(name: str, i: int) -> str:
    """The files of a pair's i-th repeat: the first keeps the plain name."""
    return name if i == 0 else f"{name}-{i + 1}"


async def _resolve_pairs(
    bench: Bench, echo_body: bytes, resolve_body: bytes
) -> tuple[dict[int, Pair], dict[int, str]]:
    """Echo and resolve at 1 and 16 in flight (h2load, or the load tool without it), each
    the median of ``bench.pairs`` alternating pairs; the pairs and their notes by in-flight."""
    runs: dict[int, Pair] = {}
    notes: dict[int, str] = {}
    for streams in (1, 16):

        async def pair(i: int, streams: int = streams) -> Pair:
            assert bench.echo is not None
            assert bench.service is not None
            if bench.h2load is not None:
                echo = await bench.h2load_run(
                    _repeat(f"h2load-echo-{streams}", i),
                    bench.echo,
                    ECHO_PATH,
                    echo_body,
                    clients=1,
                    streams=streams,
                )
                service = await bench.h2load_run(
                    _repeat(f"h2load-resolve-{streams}", i),
                    bench.service,
                    RESOLVE_PATH,
                    resolve_body,
                    clients=1,
                    streams=streams,
                )
                return echo, service
            procs = 1 if streams == 1 else CORES
            echo = await bench.loadgen(
                _repeat(f"loadgen-echo-{streams}", i),
                bench.echo,
                "echo",
                concurrency=streams,
                processes=procs,
            )
            service = await bench.loadgen(
                _repeat(f"loadgen-resolve-{streams}", i),
                bench.service,
                "resolve",
                concurrency=streams,
                processes=procs,
            )
            return echo, service

        runs[streams], notes[streams] = await _paired(bench, f"resolve {streams} in flight", pair)
    return runs, notes


async def resolve_section(bench: Bench) -> None:
    assert bench.echo is not None
    assert bench.service is not None
    student = next(csv.DictReader(bench.students_file.open()))
    request = pb.ResolveStudentRequest(
        district_id=bench.load_district, key=pb.StudentKey(sis_id=student["sis_id"])
    )
    resolve_body, echo_body = grpc_frame(request), grpc_frame(health_pb2.HealthCheckRequest())
    if bench.h2load is not None:
        await _verify(bench, bench.echo, ECHO_PATH, echo_body)
        await _verify(bench, bench.service, RESOLVE_PATH, resolve_body)

    # The load tool's ceiling: closed loop against echo with every core.
    ceiling = await bench.loadgen(
        "ceiling-loadgen-echo", bench.echo, "echo", concurrency=CEILING_IN_FLIGHT, processes=CORES
    )
    driver = "h2load" if bench.h2load else "load tool"
    runs, notes = await _resolve_pairs(bench, echo_body, resolve_body)
    h2_ceiling = max((e["qps"] for e, _ in runs.values() if e), default=None)
    if bench.h2load is None:
        h2_ceiling = ceiling["qps"] if ceiling else None
    bench.row(
        f"load tool ceiling: echo, {CEILING_IN_FLIGHT} in flight, {CORES} processes",
        _qps(ceiling),
        "",
        None,
    )
    if bench.h2load:
        bench.row(
            "h2load ceiling: echo, best of 1 / 16 in flight", f"{h2_ceiling or 0:,.0f}/s", "", None
        )
    for streams, (echo, service) in runs.items():
        _qps_rows(
            bench,
            f"resolve {{what}}, {streams} in flight ({driver})",
            echo,
            service,
            least=0.8,
            note=_client_bound(bench, service, h2_ceiling),
            notes=[notes[streams]],
        )

    # The "Python client, 32 in flight" figure, next to the tool's ceiling.
    py_resolve = await bench.loadgen(
        "loadgen-resolve-32",
        bench.service,
        "resolve",
        concurrency=CEILING_IN_FLIGHT,
        processes=CORES,
    )
    bench.row(
        f"resolve QPS, {CEILING_IN_FLIGHT} in flight (load tool)",
        _qps(ceiling),
        _qps(py_resolve) + _client_bound(bench, py_resolve, ceiling["qps"] if ceiling else None),
        _ratio(py_resolve, ceiling, "qps"),
    )

    # Open loop at half of echo's maximum rate (as the load tool can drive it), from ONE
    # client process: on a 2-core machine a second one starves the server and itself, and
    # every call queues behind the other (seen: echo's p50 above a second at 2,000/s).
    if ceiling is not None:
        rate = ceiling["qps"] / 2

        async def open_pair(i: int) -> Pair:
            assert bench.echo is not None
            assert bench.service is not None
            echo = await bench.loadgen(
                _repeat("open-echo", i), bench.echo, "echo", rate=rate, processes=1
            )
            service = await bench.loadgen(
                _repeat("open-resolve", i), bench.service, "resolve", rate=rate, processes=1
            )
            return echo, service

        (echo_open, resolve_open), open_note = await _paired(
            bench, "resolve open loop", open_pair, "p99"
        )
        r = _ratio(resolve_open, echo_open, "p99")
        behind = [
            f"{n} sent {x['achieved_rate_ratio']:.0%} of the rate"
            for n, x in (("echo", echo_open), ("resolve", resolve_open))
            if x is not None and x.get("achieved_rate_ratio", 1) < 0.95
        ]
        bench.row(
            f"resolve p99, open loop at {rate:,.0f}/s (half echo max)",
            _lat(echo_open),
            _lat(resolve_open),
            r,
            target="<= 2x p99",
            met=None if r is None else r <= 2.0,
        )
        if open_note:
            bench.rows[-1].notes.append(open_note)
        if behind:
            bench.rows[-1].notes.append("; ".join(behind))
    else:
        bench.row("resolve p99, open loop at half echo max", "n/a", "n/a", None, target="<= 2x p99")

    echo16, service16 = runs[16]
    _cpu_row(bench, f"server CPU per RPC, resolve 16 in flight ({driver})", echo16, service16)
    if bench.h2load is not None:
        await _front_rows(bench, resolve_body, dict(runs))
        await _asyncio_loop_rows(bench, resolve_body, dict(runs))
    await bench.flame("resolve", bench.service, "resolve")


async def _front_rows(
    bench: Bench,
    body: bytes,
    runs: dict[int, tuple[dict[str, Any] | None, dict[str, Any] | None]],
) -> None:
    """Where a resolve's time goes: the service's front (its interceptors, around a handler
    that answers at once: ``scripts/front_server.py``) against echo, at 1 and 16 in flight.
    What the front leaves of echo's rate is as far as any handler behind it could reach."""
    front = bench.start_front()
    try:
        for streams in (1, 16):
            result = await bench.h2load_run(
                f"h2load-front-{streams}", front, RESOLVE_PATH, body, clients=1, streams=streams
            )
            echo, service = runs[streams]
            bench.row(
                f"front alone (interceptors, no handler), {streams} in flight: QPS",
                _qps(echo),
                _qps(result),
                _ratio(result, echo, "qps"),
            )
            if streams == 16:
                _cpu_row(bench, "server CPU per RPC, front alone, 16 in flight", echo, result)
                bench.row(
                    "server CPU per RPC, resolve's handler (service less front)",
                    "",
                    _cpu_less(service, result),
                    None,
                )
    finally:
        bench.stop(front)


async def _asyncio_loop_rows(
    bench: Bench,
    body: bytes,
    runs: dict[int, tuple[dict[str, Any] | None, dict[str, Any] | None]],
) -> None:
    """Resolve on asyncio's own loop (a second service, ``UVLOOP=false``, API only) against
    the same echo runs: which loop answers a lone caller sooner, and which carries more."""
    proc = await bench.start_service(
        "service-asyncio-loop", args=["--role", "api"], env={"UVLOOP": "false"}
    )
    if proc is None:
        bench.row("resolve QPS, UVLOOP=false", "", "not available", None)
        return
    try:
        for streams in (1, 16):
            result = await bench.h2load_run(
                f"h2load-resolve-asyncio-{streams}",
                proc,
                RESOLVE_PATH,
                body,
                clients=1,
                streams=streams,
            )
            echo, _ = runs[streams]
            _qps_rows(
                bench,
                f"resolve {{what}}, {streams} in flight, UVLOOP=false",
                echo,
                result,
                least=0.8,
            )
    finally:
        bench.stop(proc)


def _cpu_row(
    bench: Bench, label: str, echo: dict[str, Any] | None, service: dict[str, Any] | None
) -> None:
    """A row of server CPU per RPC, the service's (or the front's) against echo's."""
    bench.row(label, _cpu(echo), _cpu(service), _ratio_key(service, echo, "server_cpu_ms_per_rpc"))


def _cpu_less(service: dict[str, Any] | None, front: dict[str, Any] | None) -> str:
    if service is None or front is None:
        return "n/a"
    spent = service["server_cpu_ms_per_rpc"] - front["server_cpu_ms_per_rpc"]
    return f"{1000 * spent:.0f} us"


def _qps_rows(
    bench: Bench,
    label: str,
    echo: dict[str, Any] | None,
    service: dict[str, Any] | None,
    *,
    least: float,
    note: str = "",
    notes: Sequence[str] = (),
) -> None:
    """Two rows, ``label`` with ``{what}`` as QPS (against echo's, target ratio ``least``,
    with ``notes`` under it) and as latency (p50/p99)."""
    r = _ratio(service, echo, "qps")
    bench.row(
        label.replace("{what}", "QPS"),
        _qps(echo),
        _qps(service) + note,
        r,
        target=f">= {least}x",
        met=None if r is None else r >= least,
    )
    bench.rows[-1].notes.extend(n for n in notes if n)
    bench.row(
        label.replace("{what}", "latency"),
        _lat(echo),
        _lat(service),
        None,
        ratio_text=_p_ratios(service, echo),
    )


def _p_ratios(service: dict[str, Any] | None, echo: dict[str, Any] | None) -> str:
    p50, p99 = _ratio(service, echo, "p50"), _ratio(service, echo, "p99")
    if p50 is None or p99 is None:
        return ""
    return f"p50 {p50:.2f}x, p99 {p99:.2f}x"


def _cpu(r: dict[str, Any] | None) -> str:
    return "n/a" if r is None else f"{1000 * r['server_cpu_ms_per_rpc']:.0f} us"


def _ratio_key(
    service: dict[str, Any] | None, echo: dict[str, Any] | None, key: str
) -> float | None:
    if service is None or echo is None or not echo[key]:
        return None
    return float(service[key]) / float(echo[key])


async def _submit_pair(
    bench: Bench,
    server: Proc,
    label: str,
    in_flight: int,
    *,
    delivering: bool = True,
    repeat: int = 0,
) -> Pair:
    """Echo, then the service's submits, back to back, each pair with its own echo run. An
    echo figure from other minutes, taken while an earlier run's backlog was being delivered
    beside it, flattered the ratio: 3,660/s, where echo beside an idle service measures
    3,800-4,900/s. When a worker is ``delivering`` the backlog, it is switched off before the
    echo run, and writeback switched on again for the submits; without one it stays pending
    and costs nothing. The ``repeat``-th pair submits in its own load district."""
    procs = 1 if in_flight == 1 else CORES
    assert bench.echo is not None
    districts = bench.submit_districts or [bench.load_district]
    district = districts[repeat % len(districts)]
    if delivering:
        await _drain_load_district(bench, server)
    name = _repeat(f"loadgen-echo-{label}-{in_flight}", repeat)
    echo = await bench.loadgen(name, bench.echo, "echo", concurrency=in_flight, processes=procs)
    await _writeback_on(bench, server, district)
    submit = await bench.loadgen(
        _repeat(f"loadgen-submit-{label}-{in_flight}", repeat),
        server,
        "submit",
        concurrency=in_flight,
        processes=procs,
        district=district,
    )
    return echo, submit


async def _submit_pairs(
    bench: Bench, server: Proc, label: str, in_flight: int, *, delivering: bool = True
) -> tuple[Pair, str]:
    """:func:`_submit_pair` run ``bench.pairs`` times: the median pair and the note."""

    async def pair(i: int) -> Pair:
        return await _submit_pair(bench, server, label, in_flight, delivering=delivering, repeat=i)

    return await _paired(bench, f"submit {label} {in_flight} in flight", pair)


async def submit_section(bench: Bench) -> None:
    assert bench.service is not None
    ceiling = bench.figures.get("ceiling-loadgen-echo", {}).get("qps")
    for in_flight in (1, 16):
        (echo, submit), note = await _submit_pairs(bench, bench.service, "all", in_flight)
        _qps_rows(
            bench,
            f"submit accept {{what}}, {in_flight} in flight (load tool, role all)",
            echo,
            submit,
            least=0.5,
            note=_client_bound(bench, submit, ceiling),
            notes=[note],
        )
        if in_flight == 16:
            bench.figures["submit all 16 in flight"] = submit
        if in_flight == 16:
            _cpu_row(bench, "server CPU per RPC, submit 16 in flight (load tool)", echo, submit)
    await bench.flame("submit", bench.service, "submit")
    await _drain_load_district(bench, bench.service)


async def _drain_load_district(bench: Bench, server: Proc) -> None:
    """Switch writeback off for every load district, so their backlogs of submits are
    skipped rather than delivered during the figures that follow."""
    districts = bench.submit_districts or [bench.load_district]
    async with bench.channel(server) as channel:
        stub = writeback_pb2_grpc.WritebackServiceStub(channel)
        for district in districts:
            await _set_writeback(bench, stub, district, enabled=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pending = 0
            for district in districts:
                stats = await stub.GetDeliveryStats(
                    pb.GetDeliveryStatsRequest(district_id=district)
                )
                pending += stats.stats.pending
            if pending == 0:
                return
            await asyncio.sleep(0.5)
    print("  note: the load districts' backlog was still pending after 120 s")


async def _writeback_on(bench: Bench, server: Proc, district: str) -> None:
    """``district`` takes submits for delivery again (after a drain)."""
    async with bench.channel(server) as channel:
        stub = writeback_pb2_grpc.WritebackServiceStub(channel)
        await _set_writeback(bench, stub, district, enabled=True)


async def _set_writeback(
    bench: Bench, stub: writeback_pb2_grpc.WritebackServiceStub, district_id: str, *, enabled: bool
) -> None:
    district = _district(district_id, bench.ps_url)
    district.writeback_enabled = enabled
    await stub.UpsertDistrict(pb.UpsertDistrictRequest(district=district))


async def layouts_section(bench: Bench) -> None:
    """Submit with `--role api` and a separate `--role worker`; resolve with
    GRPC_PROCESSES=1..cores. Each layout replaces the main service while it runs."""
    assert bench.echo is not None
    bench.stop(bench.service)
    bench.service = None
    try:
        await _role_layout(bench)
        await _process_scaling(bench)
    finally:
        bench.service = await bench.start_service("service")


async def _role_layout(bench: Bench) -> None:
    """`--role api` alone (the layout the README recommends: workers on other hosts; here the
    worker is started after, so the accepts have the machine), then with a `--role worker`
    beside it on the same cores."""
    all_figure = bench.figures.get("submit all 16 in flight")
    api = await bench.start_service("service-api", args=["--role", "api"])
    worker = None
    try:
        if api is None:
            bench.row("submit accept QPS, role api", "", "not available", None)
            return
        for in_flight in (1, 16):
            (echo, submit), note = await _submit_pairs(
                bench, api, "api-alone", in_flight, delivering=False
            )
            _qps_rows(
                bench,
                f"submit accept {{what}}, {in_flight} in flight, role api (no worker running)",
                echo,
                submit,
                least=0.5,
                notes=[note],
            )
        worker = await bench.start_service("service-worker", args=["--role", "worker"], health="")
        if worker is None:
            bench.row("submit accept QPS, role api + worker", "", "not available", None)
            return
        (echo, submit), note = await _submit_pairs(bench, api, "api", 16)
        _qps_rows(
            bench,
            "submit accept {what}, 16 in flight, role api + worker on the same cores",
            echo,
            submit,
            least=0.5,
            note=f" (all: {_qps(all_figure)})" if all_figure else "",
            notes=[note],
        )
        await _drain_load_district(bench, api)
    finally:
        bench.stop(api)
        bench.stop(worker)


async def _process_scaling(bench: Bench) -> None:
    assert bench.echo is not None
    known = {v.name for v in variables()}
    if "GRPC_PROCESSES" not in known:
        bench.row("resolve QPS scaling, GRPC_PROCESSES=1..N", "", "not available", None)
        return
    echo_body = grpc_frame(health_pb2.HealthCheckRequest())
    student = next(csv.DictReader(bench.students_file.open()))
    body = grpc_frame(
        pb.ResolveStudentRequest(
            district_id=bench.load_district, key=pb.StudentKey(sis_id=student["sis_id"])
        )
    )
    # Several connections, so SO_REUSEPORT can spread them over the processes.
    clients, streams = 8, 4
    echo = await bench.h2load_run(
        "scaling-echo", bench.echo, ECHO_PATH, echo_body, clients=clients, streams=streams
    )
    for n in range(1, CORES + 1):
        proc = await bench.start_service(f"service-procs-{n}", env={"GRPC_PROCESSES": str(n)})
        if proc is None:
            bench.row(f"resolve QPS, GRPC_PROCESSES={n}", "", "not available", None)
            continue
        try:
            result = await bench.h2load_run(
                f"scaling-resolve-{n}", proc, RESOLVE_PATH, body, clients=clients, streams=streams
            )
            if result is not None:
                result["process_tree"] = len(_tree(proc.pid))
            bench.row(
                f"resolve QPS, GRPC_PROCESSES={n}, {clients}x{streams} in flight (h2load)",
                _qps(echo),
                _qps(result),
                _ratio(result, echo, "qps"),
            )
        finally:
            bench.stop(proc)


def _school_day(dataset: Dataset) -> datetime:
    return datetime.combine(recent_school_day(dataset), dtime(8, 0), tzinfo=ZoneInfo(TZ))


def _submit(
    did: str, student: Any, day: datetime, i: int, *, wait: bool = False
) -> pb.SubmitAttendanceRequest:
    when = Timestamp()
    when.FromDatetime((day + timedelta(seconds=i)).astimezone(UTC))
    return pb.SubmitAttendanceRequest(
        district_id=did,
        idempotency_key=f"bench-{did}-{i}",
        student=pb.StudentKey(sis_id=str(student.dcid)),
        event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
        occurred_at=when,
        reason="Bus late",
        wait_for_writeback=wait,
    )


async def _delivery(
    stub: writeback_pb2_grpc.WritebackServiceAsyncStub,
    did: str,
    sim_url: str,
    students: list[Any],
    start: datetime,
) -> dict[str, float]:
    """Late check-ins of ``students`` (one second apart from ``start``) delivered to a
    simulator answering in 100 ms. The first record is delivered alone beforehand, warming
    the token, term, code and mode caches."""
    await stub.SubmitAttendance(_submit(did, students[0], start, 0, wait=True), timeout=60)
    await _sim_control(sim_url, "faults", {"latency": DELIVERY_LATENCY})
    await _sim_control(sim_url, "reset-calls", {})
    records = len(students) - 1
    started = time.monotonic()
    sem = asyncio.Semaphore(32)

    async def submit(i: int) -> None:
        async with sem:
            await stub.SubmitAttendance(_submit(did, students[i], start, i), timeout=60)

    await asyncio.gather(*(submit(i) for i in range(1, records + 1)))
    accepted = time.monotonic() - started
    deadline = started + 300
    while time.monotonic() < deadline:
        stats = (await stub.GetDeliveryStats(pb.GetDeliveryStatsRequest(district_id=did))).stats
        if stats.pending == 0:
            break
        await asyncio.sleep(0.2)
    delivered = time.monotonic() - started
    calls = await _sim_control(sim_url, "calls")
    return {
        "records": records,
        "accept_s": accepted,
        "seconds": delivered,
        "records_per_s": records / delivered,
        "calls_per_record": len(calls) / records,
        "failed": stats.failed,
        "pending": stats.pending,
    }


async def delivery_section(bench: Bench, dataset: Dataset) -> None:
    assert bench.service is not None
    daily_sim = bench.simulator("ps-delivery", "simulators.powerschool", PER_SCHOOL)
    meeting_sim = bench.simulator(
        "ps-meeting", "simulators.powerschool", PER_SCHOOL, "--meeting-schools", "100"
    )
    url = f"http://127.0.0.1:{daily_sim.port}"
    murl = f"http://127.0.0.1:{meeting_sim.port}"
    try:
        async with bench.channel(bench.service) as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            students = list(dataset.students)[: DELIVERY_RECORDS + 1]
            did = f"bench-delivery-{uuid.uuid4().hex[:6]}"
            await district_with_students(stub, _district(did, url), students)
            daily = await _delivery(stub, did, url, students, _school_day(dataset))
            # A Meeting school: each check-in at 10:15 or a little later misses two class
            # meetings and is tardy in the third, all three in one write.
            lincoln = [s for s in dataset.students if s.schoolid == 100][: MEETING_RECORDS + 1]
            mdid = f"bench-meeting-{uuid.uuid4().hex[:6]}"
            district = _district(
                mdid, murl, (100,), attendance_mode=pb.ATTENDANCE_MODE_MEETING, missed_code="A"
            )
            await district_with_students(stub, district, lincoln)
            start = _school_day(dataset).replace(hour=10, minute=15)
            meeting = await _delivery(stub, mdid, murl, lincoln, start)
            # A morning whose students PowerSchool has not yet been asked about (a district
            # just onboarded, the prefetch not run): each check-in's lookup calls it.
            rdid = f"bench-rush-{uuid.uuid4().hex[:6]}"
            await district_with_roster(stub, _district(rdid, url), list(dataset.students))
        await _sim_control(url, "faults", {"latency": DELIVERY_LATENCY})
        rush = await bench.loadgen(
            "loadgen-rush", bench.service, "rush", concurrency=RUSH_IN_FLIGHT, district=rdid
        )
    finally:
        bench.stop(daily_sim)
        bench.stop(meeting_sim)
    bench.figures["delivery_daily"] = daily
    bench.figures["delivery_meeting"] = meeting
    ms = f"{DELIVERY_LATENCY * 1000:.0f} ms PS, default limits"
    note = f", {daily['failed']:.0f} failed" + (
        f", {daily['pending']:.0f} still pending" if daily["pending"] else ""
    )
    bench.row(
        f"delivery: {daily['records']:.0f} daily records, {ms}",
        "",
        f"{daily['seconds']:.1f} s = {daily['records_per_s']:.1f} records/s{note}",
        None,
        target="< 30 s",
        met=daily["seconds"] < 30 and not daily["pending"],
    )
    bench.row(
        "PowerSchool calls per daily record",
        "",
        f"{daily['calls_per_record']:.2f}",
        None,
        target="<= 2.1",
        met=daily["calls_per_record"] <= 2.1,
    )
    bench.row(
        f"delivery: {meeting['records']:.0f} meeting records, {ms}",
        "",
        f"{meeting['seconds']:.1f} s = {meeting['records_per_s']:.1f} records/s,"
        f" {meeting['calls_per_record']:.2f} calls/record, {meeting['failed']:.0f} failed",
        None,
        target="<= 3 calls",
        met=meeting["calls_per_record"] <= 3,
    )
    if rush is not None:
        bench.figures["rush"] = rush
        lat = rush["latency_ms"]
        bench.row(
            f"morning rush, students not yet looked up, {DELIVERY_LATENCY * 1000:.0f} ms PS,"
            f" {RUSH_IN_FLIGHT} in flight",
            "",
            f"{rush['qps']:,.0f} calls/s, p50 {lat['p50']:.1f} / p99 {lat['p99']:.1f} ms,"
            f" {1000 * rush['server_cpu_ms_per_rpc']:,.0f} us CPU/call",
            None,
        )


async def sync_section(bench: Bench, students: int) -> None:
    """A full sync of ``students`` from each roster simulator, each in a fresh service
    process (its peak memory is that process's)."""
    per_school = students // 2
    ps = bench.simulator("ps-sync", "simulators.powerschool", per_school)
    ps_url = f"http://127.0.0.1:{ps.port}"
    try:
        for source in ("clever", "classlink"):
            sim = bench.simulator(f"{source}-sync", f"simulators.{source}", per_school)
            roster_url = f"http://127.0.0.1:{sim.port}"
            service = await bench.start_service(
                f"service-sync-{source}", env={"SYNC_SCHEDULER": "false"}
            )
            if service is None:
                raise SystemExit("the service did not start for the sync figure")
            try:
                figure = await _sync_once(bench, service, source, ps_url, roster_url)
            finally:
                bench.stop(service)
                bench.stop(sim)
            bench.figures[f"sync_{source}"] = figure
            bench.row(
                f"roster sync {source}, {figure['students']:,} students",
                "",
                f"{figure['seconds']:.1f} s = {figure['students_per_s']:,.0f}/s,"
                f" peak RSS {figure['peak_rss_mb']:.0f} MB",
                None,
                target="< 30 s",
                met=figure["seconds"] < 30,
            )
    finally:
        bench.stop(ps)


async def _sync_once(
    bench: Bench, service: Proc, source: str, ps_url: str, roster_url: str
) -> dict[str, Any]:
    did = f"sync-{source}-{uuid.uuid4().hex[:6]}"
    roster: dict[str, Any] = (
        {
            "clever": pb.CleverConnection(
                base_url=roster_url,
                client_id="clever-client",
                client_secret="clever-secret",
                clever_district_id=CLEVER_DISTRICT,
            )
        }
        if source == "clever"
        else {
            "classlink": pb.ClassLinkConnection(
                endpoint_url=roster_url,
                client_id="classlink-client",
                client_secret="classlink-secret",
            )
        }
    )
    district = pb.District(
        district_id=did,
        roster_source=pb.ROSTER_SOURCE_CLEVER if source == "clever" else pb.ROSTER_SOURCE_CLASSLINK,
        timezone=TZ,
        powerschool=pb.PowerSchoolConnection(
            base_url=ps_url, client_id="sim-client", client_secret="sim-secret"
        ),
        schools=[
            pb.School(school_number=n, roster_school_id=school_roster_id(source, n))  # type: ignore[arg-type]
            for n in (100, 200)
        ],
        **roster,
    )
    async with bench.channel(service) as channel:
        stub = writeback_pb2_grpc.WritebackServiceStub(channel)
        await stub.UpsertDistrict(pb.UpsertDistrictRequest(district=district))
        rss_before = peak_rss_mb(service.pid)
        started = time.monotonic()
        result = await stub.SyncRoster(
            pb.SyncRosterRequest(district_id=did, full=True), timeout=600
        )
        elapsed = time.monotonic() - started
    return {
        "students": result.created,
        "prefetched": result.prefetched,
        "seconds": elapsed,
        "students_per_s": result.created / elapsed,
        "peak_rss_mb": peak_rss_mb(service.pid),
        "rss_before_mb": rss_before,
    }


# --- the run ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    h2 = shutil.which("h2load")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": model,
        "cores": CORES,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "h2load": subprocess.run(
            [h2, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if h2
        else None,
    }


def print_table(rows: list[Row]) -> str:
    """The rows as a text table (also what goes into table.txt)."""
    head = ("measure", "echo", "service", "ratio", "target", "met?")
    cells = [
        (
            r.measure,
            r.echo,
            r.service,
            r.ratio,
            r.target,
            "" if r.met is None else ("yes" if r.met else "NO"),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for r, c in zip(rows, cells, strict=True):
        lines.append(" | ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())
        lines.extend(f"    note: {n}" for n in r.notes)
    return "\n".join(lines)


@contextlib.contextmanager
def _database() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL", "")
    if url:
        yield url
        return
    pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="bench-pg-")) / "pg")
    try:
        yield pg.start()
    finally:
        pg.stop()


async def _load_districts(bench: Bench, dataset: Dataset, *, submits: bool) -> None:
    """The load district (resolves, and the first pair's submits), and with ``submits`` one
    more per further pair, each with the dataset's students resolved once."""
    bench.load_district = f"bench-{uuid.uuid4().hex[:6]}"
    bench.submit_districts = [bench.load_district]
    if submits:
        bench.submit_districts += [f"bench-{uuid.uuid4().hex[:6]}" for _ in range(1, bench.pairs)]
    assert bench.service is not None
    async with bench.channel(bench.service) as channel:
        stub = writeback_pb2_grpc.WritebackServiceStub(channel)
        for district in bench.submit_districts:
            await district_with_students(
                stub, _district(district, bench.ps_url), list(dataset.students)
            )


async def run(args: argparse.Namespace) -> None:
    only = set(args.only.split(","))
    unknown = only - {"resolve", "submit", "delivery", "sync", "layouts"}
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {', '.join(sorted(unknown))}")
    out = Path(args.out or ROOT / ".data" / "bench" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    bench = Bench(out, args.seconds)
    info = machine()
    print(
        f"{info['date']}  {info['cpu']}, {info['cores']} cores, Python {info['python']},"
        f" grpcio {info['grpcio']}; output in {out}"
    )
    dataset = demo_dataset(students_per_school=PER_SCHOOL)
    students_csv(dataset, bench.students_file)
    bench.day = recent_school_day(dataset).isoformat()
    with _database() as database_url:
        bench.database_url = database_url
        try:
            if only & {"resolve", "submit", "layouts", "delivery"}:
                ps = bench.simulator("ps-load", "simulators.powerschool", PER_SCHOOL)
                bench.ps_url = f"http://127.0.0.1:{ps.port}"
                bench.echo = bench.start_echo()
                bench.service = await bench.start_service("service")
                if bench.service is None:
                    raise SystemExit("the service did not start (see above)")
                bench.pairs = args.pairs
                await _load_districts(bench, dataset, submits=bool(only & {"submit", "layouts"}))
                sections = [
                    ("resolve", resolve_section),
                    ("submit", submit_section),
                    ("layouts", layouts_section),
                ]
                for name, section in sections:
                    if name in only:
                        print(f"-- {name}")
                        await section(bench)
                if "delivery" in only:
                    print("-- delivery")
                    await delivery_section(bench, dataset)
                bench.stop(bench.service)
                bench.stop(bench.echo)
            if "sync" in only:
                print("-- sync")
                await sync_section(bench, args.students)
        finally:
            for proc in list(bench.procs):
                bench.stop(proc)
    table = print_table(bench.rows)
    print()
    print(table)
    (out / "table.txt").write_text(table + "\n")
    figures = {"machine": info, "seconds": args.seconds, "figures": bench.figures}
    figures["rows"] = [r.__dict__ for r in bench.rows]
    (out / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nfigures, load tool JSON and plots, flame graphs and logs: {out}")


def main() -> None:
    # Progress lines as they happen, also into a file or a pipe.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default="resolve,submit,layouts,delivery,sync",
        help="comma-separated sections: resolve, submit, layouts, delivery, sync",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--out", type=Path, help="output directory (default .data/bench/<UTC>)")
    parser.add_argument("--students", type=int, default=100_000, help="roster size to sync")
    parser.add_argument(
        "--pairs",
        type=int,
        default=PAIRS,
        help=f"alternating echo/service pairs per target figure, the median kept (default {PAIRS})",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
