"""The two child processes (simulators, exporter) and what /proc says about them.

Both run as separate processes so that /proc numbers are theirs alone: the exporter's CPU
(utime + stime) and memory (VmRSS, VmHWM) exclude the simulators' work and the benchmark's own
scraping, and the simulators' CPU can be shown next to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks import scenario as sc

REPO_ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 60.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU the process has used so far (resolution: one clock tick, 10 ms).

    Read from /proc/<pid>/stat fields 14 and 15; the command name in field 2 may contain spaces,
    so the fields are counted from after its closing parenthesis.
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class Memory:
    """Resident set size now and its high-water mark since the process started, in MB."""

    rss_mb: float
    hwm_mb: float


def memory(pid: int) -> Memory:
    """VmRSS and VmHWM from /proc/<pid>/status (reported in kB)."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return Memory(values["VmRSS"], values["VmHWM"])


def free_port() -> int:
    """A loopback port that was free a moment ago (the exporter binds it right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass
class SimProcess:
    """The simulator child: its pid, provider URLs and the request counts it keeps."""

    proc: asyncio.subprocess.Process
    urls: dict[str, str]

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def counts(self, session: aiohttp.ClientSession) -> Counter[str]:
        """Upstream requests received so far, per provider (plus sub-counts)."""
        async with session.get(f"{self.urls['control']}/counts") as response:
            response.raise_for_status()
            return Counter(await response.json())


@contextlib.asynccontextmanager
async def simulators(scenario: sc.Scenario, latency: float) -> AsyncIterator[SimProcess]:
    """Run ``python -m benchmarks.sim_server`` for the scenario until the block ends."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.sim_server",
        "--scenario",
        scenario.name,
        "--latency",
        str(latency),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        if not line:
            raise RuntimeError("the simulator process exited before printing its URLs")
        yield SimProcess(proc, json.loads(line))
    finally:
        await _stop(proc)


def exporter_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m exporter``."""
    script = Path(sys.executable).with_name("chat-unread-exporter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "exporter"]


@dataclass
class ExporterProcess:
    """The exporter child: pid, base URL, config path, startup time and its stderr log."""

    proc: asyncio.subprocess.Process
    url: str
    config_path: Path
    log_path: Path
    startup_seconds: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextlib.asynccontextmanager
async def exporter(
    config_text: str,
    session: aiohttp.ClientSession,
    wrapper: list[str] | None = None,
    flags: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[ExporterProcess]:
    """Run the real console script on a generated config; ready once ``/-/ready`` answers 200.

    ``wrapper`` prefixes the command (e.g. a profiler); the pid measured is then the wrapper's.
    ``flags`` are added to the command line, ``env`` to the environment.
    """
    workdir = Path(tempfile.mkdtemp(prefix="chat-unread-bench-"))
    config_path = workdir / "config.yaml"
    config_path.write_text(config_text, encoding="utf-8")
    log_path = workdir / "exporter.log"
    port = free_port()
    command = [
        *(wrapper or []),
        *exporter_command(),
        "--config.file",
        str(config_path),
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--log.level",
        "warn",
        *flags,
    ]
    started = time.perf_counter()
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=workdir, stderr=log, env={**os.environ, **(env or {})}
        )
    handle = ExporterProcess(
        proc, f"http://127.0.0.1:{port}", config_path, log_path, time.perf_counter() - started
    )
    try:
        await _wait_ready(handle, session)
        handle.startup_seconds = time.perf_counter() - started
        yield handle
    finally:
        await _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


async def _wait_ready(handle: ExporterProcess, session: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if handle.proc.returncode is not None:
            raise RuntimeError(f"the exporter exited at startup:\n{handle.log_tail()}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{handle.url}/-/ready") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise RuntimeError(
        f"the exporter was not ready within {START_TIMEOUT:g}s:\n{handle.log_tail()}"
    )
