"""Soak: many concurrent clients mixing normal, hostile and cancelled requests against `dgemma serve`
for a bounded time on loopback; every normal request must be answered correctly and the server's
memory must stay flat. Prints a table and writes a JSON record and a plot of resident memory.

    .venv/bin/python bench/soak.py [--clients 200] [--seconds 180] [--model DIR] [--out bench/out/soak]

The server runs as a separate `dgemma serve` process (the bundled Sudoku model by default); its
resident memory is read from /proc. Normal requests are held-out puzzles on /v1/completions with
a fixed seed: an answer counts as correct when it is a 200 with a well-formed completion, and it is
compared with the same request's answer on an idle server (equal unless rounding flips a draw). Hostile requests are
the cases of tests/test_server_hardening.py and malformed bodies; cancelled ones are streams the
client drops after the first event, or non-stream requests dropped after 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgemma.tasks import sudoku  # noqa: E402

MODEL_NAME = "soak"


def _fmt(schema):
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


HOSTILE_BODIES = [
    b"not json",
    b"\xff\xfe{}",
    b"[" * 50_000 + b"]" * 50_000,
    b'{"model": "soak", "prompt": "\\ud800"}',
    json.dumps({"model": MODEL_NAME, "prompt": "x", "t_max": 1e-300, "t_min": 0}).encode(),
    json.dumps({"model": MODEL_NAME, "prompt": "x", "stability_threshold": 10**18}).encode(),
    json.dumps({"model": MODEL_NAME, "prompt": "x", "temperature": 10**400}).encode(),
    json.dumps({"model": MODEL_NAME, "prompt": "x", "n": 10**6}).encode(),
    json.dumps({"model": MODEL_NAME, "prompt": [10**9]}).encode(),
    json.dumps({"model": MODEL_NAME, "prompt": "x" * 2_000_000}).encode(),
    json.dumps(
        {
            "model": MODEL_NAME,
            "messages": [{"role": "user", "content": "x"}],
            "response_format": _fmt({"type": "array", "items": {"type": "integer"}, "minItems": 10**9}),
        }
    ).encode(),  # fmt: skip
    json.dumps(
        {
            "model": MODEL_NAME,
            "messages": [{"role": "user", "content": "x"}],
            "response_format": _fmt({"enum": list(range(60_000))}),
        }
    ).encode(),  # fmt: skip
]


async def _raw(host: str, port: int, payload: bytes, path: str = "/v1/completions", method: str = "POST"):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
        try:
            await writer.drain()
        except ConnectionResetError:  # refused before the body was read (413): the answer may be there
            pass
        data = await asyncio.wait_for(reader.read(), timeout=600)
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
        return status, data.split(b"\r\n\r\n", 1)[-1]
    finally:
        writer.close()


async def _half_headers(host: str, port: int) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    try:
        await asyncio.wait_for(reader.read(), timeout=30)
        return "closed"
    except TimeoutError:
        return "left open"
    finally:
        writer.close()


def _normal_body(puzzle: str, seed: int) -> bytes:
    prompt = f"<bos>{puzzle}<sep>"
    return json.dumps({"model": MODEL_NAME, "prompt": prompt, "max_tokens": 82, "seed": seed}).encode()


def _answer(body: bytes) -> str | None:
    """The completion text of a well-formed OpenAI completion body, else None."""
    try:
        choice = json.loads(body)["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    ok = isinstance(choice.get("text"), str) and choice.get("finish_reason") in ("stop", "length")
    return choice["text"] if ok else None


async def _client(i: int, host: str, port: int, deadline: float, puzzles, alone, log) -> None:
    rng = random.Random(i)
    while time.monotonic() < deadline:
        kind = rng.choices(["normal", "hostile", "cancel", "headers"], weights=[6, 3, 2, 0.2])[0]
        start = time.perf_counter()
        try:
            if kind == "normal":
                k = rng.randrange(len(puzzles))
                status, body = await _raw(host, port, _normal_body(puzzles[k], k))
                text = _answer(body) if status == 200 else None
                log.append(
                    ("normal", status, text is not None, text == alone[k], time.perf_counter() - start)
                )
            elif kind == "hostile":
                try:
                    status, _ = await _raw(host, port, rng.choice(HOSTILE_BODIES))
                except ConnectionResetError:  # an oversized body: refused and closed before it was read
                    status = 0
                log.append(
                    ("hostile", status, status == 0 or 400 <= status < 500, None, time.perf_counter() - start)
                )
            elif kind == "cancel":
                k = rng.randrange(len(puzzles))
                task = asyncio.ensure_future(_raw(host, port, _normal_body(puzzles[k], k)))
                await asyncio.sleep(0.05)
                task.cancel()
                log.append(("cancel", 0, True, None, time.perf_counter() - start))
            else:
                result = await _half_headers(host, port)
                log.append(("headers", 0, result == "closed", None, time.perf_counter() - start))
        except (OSError, TimeoutError, asyncio.CancelledError) as err:
            log.append((kind, -1, False, None, time.perf_counter() - start))
            print(f"client {i}: {kind}: {type(err).__name__}: {err}", file=sys.stderr)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _soak(host, port, pid, clients, seconds, puzzles, alone):
    log: list[tuple] = []
    rss: list[tuple[float, float]] = []
    t0 = time.monotonic()
    deadline = t0 + seconds

    async def sample() -> None:
        while time.monotonic() < deadline + 5:
            rss.append((time.monotonic() - t0, _rss_mib(pid)))
            await asyncio.sleep(1.0)

    sampler = asyncio.ensure_future(sample())
    await asyncio.gather(*(_client(i, host, port, deadline, puzzles, alone, log) for i in range(clients)))
    await sampler
    return log, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", type=Path, default=Path("bench/out/soak"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "dgemma.cli", "serve", "--port", "0", "--served-model-name", MODEL_NAME]
    cmd += ["--max-queue", "4096", "--request-timeout", "600"] + (
        ["--model", args.model] if args.model else []
    )
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        host, port = line.strip().rsplit("//", 1)[1].split(":")
        port = int(port)
        puzzles = [p.puzzle for p in sudoku.heldout_puzzles(32)]

        async def alone_answers():
            out = []
            for k, p in enumerate(puzzles):
                status, body = await _raw(host, port, _normal_body(p, k))
                out.append(_answer(body) if status == 200 else None)
            return out

        alone = asyncio.run(alone_answers())
        rss_before = _rss_mib(server.pid)
        log, rss = asyncio.run(_soak(host, port, server.pid, args.clients, args.seconds, puzzles, alone))
        health = asyncio.run(_raw(host, port, b"", path="/health", method="GET"))
    finally:
        server.terminate()
        server.wait(timeout=60)
    report = _report(log, rss, rss_before, args, health)
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    _plot(rss, args.out / "soak_rss.png")
    print(json.dumps(report, indent=2))


def _report(log, rss, rss_before, args, health) -> dict:
    by_kind = Counter(k for k, *_ in log)
    statuses = Counter(f"{k}:{s}" for k, s, *_ in log)
    normal = [r for r in log if r[0] == "normal"]
    lat = sorted(r[4] for r in normal if r[1] == 200)
    third = max(1, len(rss) // 3)
    return {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "clients": args.clients,
        "seconds": args.seconds,
        "requests": dict(by_kind),
        "statuses": dict(statuses),
        "normal_correct": sum(1 for r in normal if r[2]),
        "normal_total": len(normal),
        "normal_equal_to_alone": sum(1 for r in normal if r[3]),
        "hostile_4xx": sum(1 for r in log if r[0] == "hostile" and r[2]),
        "hostile_total": by_kind["hostile"],
        "half_headers_closed": sum(1 for r in log if r[0] == "headers" and r[2]),
        "any_5xx": sum(1 for _, s, *_ in log if s >= 500),
        "client_errors": sum(1 for _, s, *_ in log if s == -1),
        "latency_p50_s": statistics.median(lat) if lat else None,
        "latency_p99_s": lat[int(0.99 * (len(lat) - 1))] if lat else None,
        "rss_mib_before": rss_before,
        "rss_mib_first_third_max": max(v for _, v in rss[:third]),
        "rss_mib_last_third_max": max(v for _, v in rss[-third:]),
        "health_after": health[0],
    }


def _plot(rss, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([t for t, _ in rss], [v for _, v in rss])
    ax.set_xlabel("seconds")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title("dgemma serve under soak")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
