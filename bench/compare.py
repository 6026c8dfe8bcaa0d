"""Side by side: chatgw (gateway + workers + Redis) against the model streamed inside the request.

    python -m bench.compare                                # levels 50 … 1600, 20 s each
    python -m bench.compare --levels 50,100 --seconds 10   # a quick check

Starts the baseline (bench/baseline_app.py: one uvicorn process that runs the same offline model and
retrieval inside the WebSocket handler) and then chatgw (one gateway and ``--workers`` workers on the
machine's Redis, 127.0.0.1:6379, under a fresh key prefix, per-user limits lifted), one design at a
time, and drives each with the same load client (bench/loadclient.py) at rising concurrency: each
simulated user holds one socket and chats back to back. A design stops at the first level that fails
the hold rule (:class:`HoldRule`). Before the levels, each design is measured idle: time to first
token of single chats one after another, and each server process's CPU with no traffic.

Reports per level and design: time to first token (the offline model emits its first word at once and
sleeps between words, so TTFT *is* the overhead of the design), relay latency (receive time - event
``ts``), delivered pace, tokens lost, CPU µs per delivered token of every server process (the Redis
server's included for chatgw), their RSS, and the load client's own CPU. Output: JSON on stdout and in
``--out``, a markdown table on stderr (and next to the JSON), a plot in ``--plot``. Talks only to
127.0.0.1; stops by itself; stops what it started and deletes its key prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import loadclient
from bench.procstat import CpuWindow, p50_p99
from cli.embedded_redis import free_port
from shared.testing.redis import redis_answers
from shared.testing.stack import ROOT, Gateway, Stack, wait_for

DEFAULT_LEVELS = (50, 100, 200, 400, 800, 1600)
REDIS_URL = "redis://127.0.0.1:6379/0"
CLIENT = "load client"
# chatgw's per-user limits are not what this measures: every simulated user may do anything.
LIFTED_LIMITS = {
    "CHATGW_RATE_LIMIT_PER_MINUTE": "100000000",
    "CHATGW_RATE_LIMIT_BURST": "100000000",
    "CHATGW_MAX_RUNS_PER_USER": "100000",
    "CHATGW_MAX_SOCKETS_PER_USER": "100000",
}


@dataclass(frozen=True, slots=True)
class HoldRule:
    """A design holds a level when all of these hold (``None``: no sample, which fails too)."""

    relay_p99_ms: float = 50.0
    ttft_p99_ms: float = 1000.0
    pace_factor: float = 1.25  # per-run delivered pace p99 <= this x the model's pace

    def failures(self, level: dict[str, Any], model_pace_ms: float) -> list[str]:
        """Why ``level`` (a :func:`level_report`) is not held; empty when it is."""
        checks = [
            ("relay p99", level["relay_ms"]["p99"], self.relay_p99_ms),
            ("TTFT p99", level["ttft_ms"]["p99"], self.ttft_p99_ms),
            ("pace p99", level["pace_ms"]["per_run"]["p99"], self.pace_factor * model_pace_ms),
        ]
        problems = [
            f"{name} {value} ms > {limit:g} ms" for name, value, limit in checks if not _le(value, limit)
        ]
        if level["tokens_lost"] or level["runs_content_mismatch"]:
            problems.append(
                f"{level['tokens_lost']} tokens lost, {level['runs_content_mismatch']} runs differ"
            )
        if level["errors"]:  # a refused socket or chat, a failed or unfinished run: its tokens are lost
            problems.append(f"errors {level['errors']}")
        if level["sockets_open"] < level["concurrency"]:
            problems.append(f"only {level['sockets_open']} of {level['concurrency']} sockets opened")
        if not level["runs_completed"]:
            problems.append("no run completed")
        return problems


def _le(value: float | None, limit: float) -> bool:
    return value is not None and not math.isnan(value) and value <= limit


@dataclass(frozen=True, slots=True)
class Config:
    levels: tuple[int, ...] = DEFAULT_LEVELS
    seconds: float = 20.0
    token_delay_ms: float = 20.0
    max_tokens: int = 200
    workers: int = 2
    worker_concurrency: int = 0  # 0: enough for the highest level
    idle_chats: int = 50
    idle_cpu_s: float = 10.0
    ramp_s: float = 2.0
    drain_s: float = 30.0
    designs: tuple[str, ...] = ("baseline", "chatgw")
    all_levels: bool = False  # go on after a level that is not held (the curves, not just the verdict)
    rule: HoldRule = field(default_factory=HoldRule)

    @property
    def concurrency_per_worker(self) -> int:
        wanted = math.ceil(max(self.levels) / self.workers) + 16
        return self.worker_concurrency or min(1024, wanted)  # 1024: CHATGW_WORKER_CONCURRENCY's ceiling

    def model_settings(self) -> dict[str, str]:
        return {
            "CHATGW_OFFLINE_TOKEN_DELAY_MS": f"{self.token_delay_ms:g}",
            "CHATGW_OFFLINE_MAX_TOKENS": str(self.max_tokens),
        }


@dataclass(frozen=True, slots=True)
class Design:
    name: str
    url: str
    servers: dict[str, int]  # pid of every process the design runs on: counted in CPU per token
    background: dict[str, int] = field(default_factory=dict)  # measured, not the design's (idle Redis)


# ------------------------------------------------------------------------------------- measuring


def _us_per_token(cpu_s: float, tokens: int) -> float | None:
    return None if not tokens or math.isnan(cpu_s) else round(cpu_s * 1e6 / tokens, 1)


def level_report(
    concurrency: int, samples: loadclient.Samples, window: CpuWindow, wall_s: float, design: Design
) -> dict[str, Any]:
    cpu, rss = window.cpu_s(), window.rss_kib()
    tokens = samples.words
    servers_cpu = sum(cpu[name] for name in design.servers)
    per_token = {name: _us_per_token(cpu[name], tokens) for name in [*design.servers, *design.background]}
    return {
        "concurrency": concurrency,
        "sockets_open": samples.sockets_open,
        "seconds": round(wall_s, 2),
        "runs_completed": samples.runs_completed,
        "tokens_delivered": tokens,
        "tokens_per_s": round(tokens / wall_s) if wall_s else 0,
        "ttft_ms": p50_p99(samples.ttft_ms, 1),
        "relay_ms": p50_p99(samples.relay_ms),
        "pace_ms": {
            "per_word_gap": p50_p99(samples.gap_ms_per_word),
            "per_run": p50_p99(samples.run_pace_ms),
            "per_run_at_source": p50_p99(samples.source_pace_ms),
        },
        "tokens_lost": samples.words_lost,
        "runs_content_mismatch": samples.runs_content_mismatch,
        "runs_retried": samples.runs_retried,
        "errors": dict(samples.errors),
        "cpu_s": {name: round(value, 3) for name, value in cpu.items()},
        "cpu_us_per_token": {**per_token, "servers_total": _us_per_token(servers_cpu, tokens)},
        "rss_mib": {name: round(kib / 1024, 1) for name, kib in rss.items() if name != CLIENT},
        "client_cpu_pct_of_core": round(cpu[CLIENT] / wall_s * 100, 1) if wall_s else None,
    }


async def measure_level(design: Design, concurrency: int, cfg: Config) -> dict[str, Any]:
    samples = loadclient.Samples()
    users = [f"c{concurrency}u{i}" for i in range(concurrency)]
    sockets = await loadclient.open_sockets(design.url, users, samples)
    window = CpuWindow({**design.servers, **design.background, CLIENT: os.getpid()})
    load_before = os.getloadavg()[0]
    window.start()
    started = time.monotonic()
    await loadclient.drive(sockets, cfg.seconds, cfg.ramp_s, cfg.drain_s, samples)
    wall = time.monotonic() - started
    window.stop()
    await loadclient.close_sockets(sockets)
    report = level_report(concurrency, samples, window, wall, design)
    report["loadavg_1m_before"] = round(load_before, 2)
    report["hold_failures"] = cfg.rule.failures(report, cfg.token_delay_ms)
    report["held"] = not report["hold_failures"]
    return report


async def measure_idle(design: Design, cfg: Config) -> dict[str, Any]:
    """Server CPU with no traffic at all, then TTFT of single chats one after another."""
    window = CpuWindow({**design.servers, **design.background})
    window.start()
    await asyncio.sleep(cfg.idle_cpu_s)
    window.stop()
    samples = await loadclient.sequential_chats(design.url, "idle", cfg.idle_chats, timeout_s=60)
    return {
        "cpu_pct_of_core": {name: round(s / cfg.idle_cpu_s * 100, 2) for name, s in window.cpu_s().items()},
        "rss_mib": {name: round(kib / 1024, 1) for name, kib in window.rss_kib().items()},
        "ttft_ms": p50_p99(samples.ttft_ms, 1),
        "chats": samples.runs_completed,
        "errors": dict(samples.errors),
    }


def log(message: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def bench_design(design: Design, cfg: Config, out: dict[str, Any]) -> None:
    """Idle figures, then the levels until one is not held; results land in ``out`` as they come."""
    await loadclient.sequential_chats(design.url, "warmup", 3, timeout_s=60)
    await asyncio.sleep(2)
    out["idle"] = await measure_idle(design, cfg)
    log(f"{design.name} idle: {out['idle']}")
    out["levels"], out["streams_held"] = [], 0
    for concurrency in cfg.levels:
        report = await measure_level(design, concurrency, cfg)
        out["levels"].append(report)
        log(f"{design.name} @{concurrency}: {_one_line(report)}")
        if report["held"] and all(r["held"] for r in out["levels"]):
            out["streams_held"] = concurrency
        elif not cfg.all_levels:
            return
        await asyncio.sleep(2)  # the level's sockets finish closing


def _one_line(r: dict[str, Any]) -> str:
    verdict = "held" if r["held"] else f"NOT held: {'; '.join(r['hold_failures'])}"
    return (
        f"ttft {r['ttft_ms']} relay {r['relay_ms']} pace {r['pace_ms']['per_run']} "
        f"(at source {r['pace_ms']['per_run_at_source']}) "
        f"cpu/token {r['cpu_us_per_token']['servers_total']} µs client {r['client_cpu_pct_of_core']}% "
        f"— {verdict}"
    )


# ------------------------------------------------------------------------------ the two designs


def redis_pid(url: str) -> int | None:
    """The Redis server's pid (``INFO server``), when its /proc entry is visible from here."""
    with redis.Redis.from_url(url) as client:
        pid = int(client.info("server")["process_id"])
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def ingest_sample_corpus(env: dict[str, str]) -> None:
    """The sample corpus into CHATGW_INDEX_PATH, with the very settings the servers get."""
    from cli.ingest import sample_corpus

    subprocess.run(
        [sys.executable, "-m", "cli.main", "ingest", str(sample_corpus())],
        env=env, cwd=ROOT, check=True, timeout=300, stdout=subprocess.DEVNULL,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def run_baseline(
    base: Path, settings: dict[str, str], redis_server: int | None
) -> AsyncIterator[Design]:
    (base / "baseline").mkdir()
    stack = Stack(REDIS_URL, base / "baseline", **settings)
    try:
        app = Gateway(
            stack.env(CHATGW_PORT=str(free_port())),
            stack.log_dir / "baseline.log",
            argv=[sys.executable, "-m", "bench.baseline_app"],
        )
        stack.gateways.append(app)
        await asyncio.to_thread(wait_for, lambda: app.ready() or not app.alive(), 60, what="baseline")
        if not app.alive():
            raise RuntimeError(f"the baseline app did not start:\n{app.output()[-2000:]}")
        unused = {"redis (not used)": redis_server} if redis_server else {}
        yield Design("baseline", app.url, {"baseline": app.pid}, unused)
    finally:
        await asyncio.to_thread(stack.stop)


@contextlib.asynccontextmanager
async def run_chatgw(
    base: Path, settings: dict[str, str], redis_server: int | None, cfg: Config
) -> AsyncIterator[Design]:
    (base / "chatgw").mkdir()
    concurrency = str(cfg.concurrency_per_worker)
    stack = Stack(REDIS_URL, base / "chatgw", **settings, CHATGW_WORKER_CONCURRENCY=concurrency)
    try:
        workers = [stack.start_worker(wait=False) for _ in range(cfg.workers)]
        gateway = await asyncio.to_thread(stack.start_gateway)
        for worker in workers:
            await asyncio.to_thread(stack.wait_worker, worker)
        servers = {"gateway": gateway.pid, **{f"worker-{i}": w.pid for i, w in enumerate(workers)}}
        yield Design("chatgw", gateway.url, {**servers, **({"redis": redis_server} if redis_server else {})})
    finally:
        await asyncio.to_thread(stack.stop)
        deleted = await asyncio.to_thread(delete_prefix, REDIS_URL, stack.prefix)
        log(f"chatgw stopped; deleted {deleted} keys under {stack.prefix}:")


def delete_prefix(url: str, prefix: str, max_rounds: int = 1_000_000) -> int:
    deleted = 0
    with redis.Redis.from_url(url) as client:
        cursor = 0
        for _ in range(max_rounds):
            cursor, keys = client.scan(cursor, match=f"{prefix}:*", count=1000)
            if keys:
                deleted += int(client.unlink(*keys))
            if cursor == 0:
                break
    return deleted


# ---------------------------------------------------------------------------------------- output


def machine() -> dict[str, Any]:
    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    with redis.Redis.from_url(REDIS_URL) as client:
        redis_version = client.info("server")["redis_version"]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    # Others may be editing the tree: what was measured is the commit plus these uncommitted files.
    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_changes_in": dirty}


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def _pair(stats: dict[str, float | None]) -> str:
    return " / ".join(_num(v) for v in stats.values())


def markdown(results: dict[str, Any]) -> str:
    designs = results["designs"]
    pace = results["settings"]["token_delay_ms"]
    lines = [
        "| design | idle TTFT p50 / p99 ms | idle CPU, % of a core | streams held |",
        "|---|---|---|---|",
    ]
    for name, d in designs.items():
        idle = d.get("idle", {})
        cpu = ", ".join(f"{k} {v:g}" for k, v in idle.get("cpu_pct_of_core", {}).items())
        lines.append(f"| {name} | {_pair(idle.get('ttft_ms', {}))} | {cpu} | {d.get('streams_held', 0)} |")
    lines += [
        "",
        "| streams | design | TTFT p50 / p99 ms | relay p50 / p99 ms "
        f"| pace p50 / p99 (at source p99) ms, model {pace:g} "
        "| tokens/s | lost | errors | CPU µs/token: servers total (per process) | RSS MiB "
        "| client CPU % | held |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(
        ((r["concurrency"], name, r) for name, d in designs.items() for r in d.get("levels", [])),
        key=lambda row: (row[0], row[1]),
    )
    for concurrency, name, r in rows:
        per_token = r["cpu_us_per_token"]
        parts = ", ".join(
            f"{k} {v:g}" for k, v in per_token.items() if k != "servers_total" and v is not None
        )
        rss = ", ".join(f"{k} {v:g}" for k, v in r["rss_mib"].items())
        errors = sum(r["errors"].values())
        lines.append(
            f"| {concurrency} | {name} | {_pair(r['ttft_ms'])} | {_pair(r['relay_ms'])} "
            f"| {_pair(r['pace_ms']['per_run'])} (src {_num(r['pace_ms']['per_run_at_source']['p99'])}) "
            f"| {r['tokens_per_s']} | {r['tokens_lost']} | {errors} "
            f"| {_num(per_token['servers_total'])} ({parts}) | {rss} | {r['client_cpu_pct_of_core']} "
            f"| {'yes' if r['held'] else 'no'} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    """Streams held per design, and CPU µs per token against concurrency; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    designs = results["designs"]
    fig, (held, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(designs)
    colours = {name: f"C{i}" for i, name in enumerate(names)}
    bars = held.bar(
        names, [designs[n].get("streams_held", 0) for n in names], color=[colours[n] for n in names]
    )
    held.bar_label(bars)
    held.set_title("concurrent streams held (hold rule)")
    held.set_ylabel("streams")
    for name in names:
        levels = [r for r in designs[name].get("levels", []) if r["cpu_us_per_token"]["servers_total"]]
        xs = [r["concurrency"] for r in levels]
        ys = [r["cpu_us_per_token"]["servers_total"] for r in levels]
        cpu.plot(xs, ys, marker="o", label=name, color=colours[name])
    cpu.set_xscale("log")
    cpu.set_xticks(list(results["settings"]["levels"]), [str(x) for x in results["settings"]["levels"]])
    cpu.minorticks_off()
    cpu.set_ylim(bottom=0)
    cpu.set_xlabel("concurrent streams")
    cpu.set_ylabel("server CPU µs per delivered token")
    cpu.set_title("CPU per token (all server processes)")
    cpu.legend()
    fig.suptitle(f"bench.compare @ {results['git']['commit']}: {results['machine']['nproc']} cores, "
                 f"model pace {results['settings']['token_delay_ms']:g} ms/token")  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------ main


async def compare(cfg: Config, results: dict[str, Any]) -> None:
    base = Path(tempfile.mkdtemp(prefix="chatgw-compare-"))
    results["logs"] = str(base)
    settings = {
        **cfg.model_settings(),
        **LIFTED_LIMITS,
        "CHATGW_INDEX_PATH": str(base / "index"),
        "CHATGW_RUN_RETENTION_S": "300",  # finished runs leave Redis soon: the levels make many
    }
    ingest_sample_corpus(Stack(REDIS_URL, base, **settings).env())
    redis_server = redis_pid(REDIS_URL)
    starters: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[Design]]] = {
        "baseline": lambda: run_baseline(base, settings, redis_server),
        "chatgw": lambda: run_chatgw(base, settings, redis_server, cfg),
    }
    for name in cfg.designs:
        results["designs"][name] = {}
        async with starters[name]() as design:
            log(f"{name} up: {design.servers}")
            await bench_design(design, cfg, results["designs"][name])


async def main_async(cfg: Config, time_limit_s: float) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "machine": machine(),
        "settings": {**asdict(cfg), "worker_concurrency": cfg.concurrency_per_worker},
        "designs": {},
    }
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        async with asyncio.timeout(time_limit_s):
            await compare(cfg, results)
    except TimeoutError:
        results["aborted"] = f"time limit of {time_limit_s:g} s reached; the results so far are kept"
    return results


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default=",".join(map(str, DEFAULT_LEVELS)), help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=20.0, help="load per level")
    parser.add_argument("--token-delay-ms", type=float, default=20.0, help="the model's pace")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-concurrency", type=int, default=0, help="default: enough for the top level")
    parser.add_argument("--idle-chats", type=int, default=50)
    parser.add_argument("--idle-cpu-seconds", type=float, default=10.0)
    parser.add_argument("--designs", default="baseline,chatgw")
    parser.add_argument("--all-levels", action="store_true", help="go on after a level that is not held")
    parser.add_argument("--time-limit-minutes", type=float, default=60.0, help="stop (keeping results) after")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"compare-{stamp}.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "compare.png")
    args = parser.parse_args(argv)
    cfg = Config(
        levels=tuple(int(x) for x in args.levels.split(",") if x.strip()),
        seconds=args.seconds,
        token_delay_ms=args.token_delay_ms,
        max_tokens=args.max_tokens,
        workers=args.workers,
        worker_concurrency=args.worker_concurrency,
        idle_chats=args.idle_chats,
        idle_cpu_s=args.idle_cpu_seconds,
        designs=tuple(d.strip() for d in args.designs.split(",") if d.strip()),
        all_levels=args.all_levels,
    )
    unknown = set(cfg.designs) - {"baseline", "chatgw"}
    if unknown or not cfg.levels or min(cfg.levels) < 1:
        parser.error(f"bad --designs {sorted(unknown)} or --levels {args.levels}")
    return cfg, args


def main() -> None:
    cfg, args = parse_args()
    if not redis_answers("127.0.0.1", 6379):
        sys.exit("bench.compare needs a Redis on 127.0.0.1:6379")
    results = asyncio.run(main_async(cfg, args.time_limit_minutes * 60))
    text = json.dumps(results, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table, file=sys.stderr)
    if plot(results, args.plot):
        log(f"plot: {args.plot}")
    log(f"results: {args.out} (+ .md)")


if __name__ == "__main__":
    main()
