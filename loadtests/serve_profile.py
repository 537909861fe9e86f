"""Where the server's CPU goes: py-spy (a sampling profiler outside the server process, so small functions
are not inflated) records collapsed stacks; `summarize_profile` turns them into CPU µs per request per
function and per package, from each one's share of the samples and the CPU µs/req measured over the same
window."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

from loadtests.loadgen import cpu_seconds, load

PROFILE_RATE = 1000  # samples per second of server CPU
# The in-process child's stacks without its start-up (imports, app and model loading, warm-up of the model):
# the requests, including the flushes the event loop runs outside any request's task.
MEASURED_FRAME = ";run (uvloop/"
STARTUP_FRAMES = (";_find_and_load (", "lifespan (")


def py_spy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise SystemExit("--profile needs py-spy: pip install -e '.[dev]'")
    return exe


async def load_profiled(
    pid: int, port: int, clients: int, warmup: float, duration: float, raw: Path
) -> tuple[dict[str, float], float]:
    """`load_with_cpu` with py-spy recording the server for the measured window (collapsed stacks, by
    function, only while the server runs on a CPU)."""
    task = asyncio.ensure_future(load(port, clients, warmup, duration))
    await asyncio.sleep(warmup)
    spy = await asyncio.create_subprocess_exec(
        *(py_spy(), "record", "--pid", str(pid), "--rate", str(PROFILE_RATE), "--duration"),
        *(str(max(1, int(duration))), "--format", "raw", "--function", "--nonblocking", "-o", str(raw)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    start = cpu_seconds(pid)
    await asyncio.sleep(duration)
    end = cpu_seconds(pid)
    _, err = await spy.communicate()
    if spy.returncode != 0:
        raise SystemExit(f"py-spy failed ({spy.returncode}): {err.decode().strip()[-300:]}")
    return await task, end - start


def keep_stacks(raw: Path, within: str, without: tuple[str, ...]) -> None:
    """Rewrite collapsed stacks keeping those that contain `within` and none of `without`."""
    lines = raw.read_text().splitlines()
    kept = [line for line in lines if within in f";{line}" and not any(f in f";{line}" for f in without)]
    raw.write_text("\n".join(kept) + "\n")


def short_frame(frame: str) -> tuple[str, str]:
    """py-spy's `func (path:line)` (paths relative to sys.path) → (the frame, its top-level package)."""
    path = frame.rpartition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    if path.startswith("<frozen"):
        return frame, "stdlib"
    top = path.split("/", 1)[0].removesuffix(".py")
    return frame, f"{top} (stdlib)" if top in sys.stdlib_module_names else top


def summarize_profile(
    raw: Path, cpu_us_per_req: float, top: int = 25, within: str | None = None, without: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Self and inclusive CPU µs per request per function, and self µs per package: each function's share
    of the samples times the server CPU µs/req measured over the same window (only the stacks that contain
    `within`, when given, and none of `without`)."""
    self_n: dict[str, int] = {}
    total_n: dict[str, int] = {}
    package_n: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if within is not None and within not in f";{stack}":
            continue
        if any(frame in f";{stack}" for frame in without):
            continue
        count = int(count_text)
        samples += count
        frames = [short_frame(f) for f in stack.split(";")]
        leaf, package = frames[-1]
        self_n[leaf] = self_n.get(leaf, 0) + count
        package_n[package] = package_n.get(package, 0) + count
        for name in {name for name, _ in frames}:
            total_n[name] = total_n.get(name, 0) + count
    us = cpu_us_per_req / max(samples, 1)

    def rank(counts: dict[str, int], n: int) -> list[dict[str, Any]]:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
        return [{"name": k, "us_per_req": v * us, "share": v / max(samples, 1)} for k, v in ordered]

    by_self = rank(self_n, top)
    for row in by_self:
        row["total_us_per_req"] = total_n[row["name"]] * us
    return {
        "samples": samples,
        "cpu_us_per_req": cpu_us_per_req,
        "self": by_self,
        "inclusive": rank(total_n, top),
        "packages": rank(package_n, len(package_n)),
    }


def profile_markdown(profiles: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    sockets = f"{meta['duration_s']} s per server" if meta["duration_s"] else "no socket-level profiles"
    lines = [
        "# 1-client profile of `/act` (`scripts/bench_serve.py --profile`)",
        "",
        f"{meta['when']} · {meta['machine']} · load average {meta['loadavg_at_start'][0]:.1f} at start, "
        f"{meta['loadavg_at_end'][0]:.1f} at end · py-spy at {PROFILE_RATE} Hz, on-CPU samples only, "
        f"{sockets}. µs/req = share of the samples × the server CPU µs/req "
        "measured over the same window. `in process` sections: the app called directly (no sockets, no "
        f"uvicorn), {meta['inproc_requests']} requests one at a time; µs/req = share × that run's thread CPU "
        "µs/req.",
    ]
    for name, prof in profiles.items():
        lines += [
            "",
            f"## {name}: {prof['cpu_us_per_req']:.0f} µs CPU per request ({prof['samples']} samples, "
            f"{prof['requests']} requests)",
            "",
            "| package | self µs/req | share |",
            "|---|---:|---:|",
        ]
        lines += [f"| {p['name']} | {p['us_per_req']:.1f} | {p['share']:.1%} |" for p in prof["packages"]]
        lines += ["", "| function (self time) | self µs/req | incl. µs/req |", "|---|---:|---:|"]
        lines += [
            f"| `{r['name']}` | {r['us_per_req']:.1f} | {r['total_us_per_req']:.1f} |" for r in prof["self"]
        ]
    return "\n".join(lines) + "\n"
