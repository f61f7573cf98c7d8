"""Server load and engine memory, in one run: a table on stdout and a plot (PNG).

1. Load: `dgemma serve`'s app on a loopback port with the bundled Sudoku model (or --model DIR);
   for each concurrency level, that many client threads send held-out puzzles to /v1/completions
   back to back. Reported: requests/s, generated tokens/s, p50 and p99 latency.
2. Memory: for each batch size, a fresh process builds a random model with a large vocabulary
   (65,536 tokens, canvas 256: the shape where full-vocabulary float32 temporaries dominate) and
   runs denoising steps of that many rows through the engine; it reports its peak resident memory
   above what it held before the engine started. The same is measured for a batch-wide sampler
   (logits, probabilities and entropies for every row at once, as a sampler without row chunks
   holds them), next to the size of one such (B, C, V) float32 tensor.

    .venv/bin/python bench/serve_load.py [--concurrency 1 4 16 64] [--batch-sizes 1 4 16 64]
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import queue
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dgemma  # noqa: E402
from dgemma.apps.sudoku import bundled_model  # noqa: E402
from dgemma.server.app import ServerSettings  # noqa: E402
from dgemma.server.launch import running_server  # noqa: E402
from dgemma.tasks import sudoku  # noqa: E402

PROBE_VOCAB = 65536
PROBE_CANVAS = 256


def _post(host: str, port: int, payload: dict) -> dict:
    conn = http.client.HTTPConnection(host, port, timeout=600)
    try:
        conn.request("POST", "/v1/completions", json.dumps(payload), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {body}")
        return body
    finally:
        conn.close()


def _run_level(host: str, port: int, name: str, puzzles: list[str], level: int, n: int) -> dict:
    """`level` client threads send `n` puzzles back to back; returns throughput and latency figures."""
    jobs: queue.Queue = queue.Queue()
    for i in range(n):
        jobs.put(puzzles[i % len(puzzles)])
    latencies, tokens = [], []
    lock = threading.Lock()

    def client() -> None:
        while True:
            try:
                puzzle = jobs.get_nowait()
            except queue.Empty:
                return
            start = time.perf_counter()
            payload = {"model": name, "prompt": f"<bos>{puzzle}<sep>", "max_tokens": 82, "seed": 0}
            body = _post(host, port, payload)
            with lock:
                latencies.append(time.perf_counter() - start)
                tokens.append(body["usage"]["completion_tokens"])

    threads = [threading.Thread(target=client) for _ in range(level)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "concurrency": level,
        "requests": n,
        "req_per_s": n / wall,
        "tok_per_s": sum(tokens) / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def load_levels(model_dir: Path, levels: list[int], per_level: int) -> list[dict]:
    model = dgemma.load(model_dir)
    name = "bench"
    puzzles = [p.puzzle for p in sudoku.heldout_puzzles(max(levels) * 2 + per_level)]
    settings = ServerSettings(port=0, model_name=name, max_batch=max(levels), max_queue=4096)
    rows = []
    with running_server(model, settings) as (url, _):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        _post(
            host, int(port), {"model": name, "prompt": f"<bos>{puzzles[0]}<sep>", "max_tokens": 82}
        )  # warm-up
        for level in levels:
            rows.append(_run_level(host, int(port), name, puzzles, level, max(per_level, 2 * level)))
            r = rows[-1]
            print(
                f"  concurrency {level:3d}: {r['requests']:4d} requests, {r['req_per_s']:6.2f} req/s, "
                f"{r['tok_per_s']:8.1f} tok/s, p50 {r['p50_s']:.3f} s, p99 {r['p99_s']:.3f} s",
                flush=True,
            )
    return rows


def probe_memory(batch: int, batched_sampler: bool) -> dict:
    """Run in a fresh process: peak RSS growth (MiB) while `batch` rows denoise a few steps."""
    from dgemma.config import ModelConfig, SamplerConfig
    from dgemma.engine.diffusion import DiffusionEngine
    from dgemma.engine.request import Request
    from dgemma.model.init import init_model
    from dgemma.sampling.entropy_bound import token_entropy
    from dgemma.tasks.sudoku.format import model_config

    torch.set_num_threads(2)
    cfg = model_config()
    cfg["canvas_length"] = PROBE_CANVAS
    cfg["text_config"].update(vocab_size=PROBE_VOCAB, max_position_embeddings=1024)
    model = init_model(ModelConfig.from_hf(cfg), seed=0)
    sampler = SamplerConfig(max_denoising_steps=3, stability_threshold=0, confidence_threshold=1e-12)
    g = torch.Generator().manual_seed(0)
    requests = [
        Request(torch.randint(4, PROBE_VOCAB, (32,), generator=g).tolist(), PROBE_CANVAS, sampler, i, ())
        for i in range(batch)
    ]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    engine = DiffusionEngine(model, batch, 32 + PROBE_CANVAS)
    for r in requests:
        engine.add(r)
    if batched_sampler:  # what a sampler over the whole batch at once holds: (B, C, V) float32 tensors
        engine.step()
        with torch.inference_mode():
            from dgemma.engine.passes import decode_rows

            canvas = torch.randint(0, PROBE_VOCAB, (batch, PROBE_CANVAS), generator=g)
            hidden = decode_rows(model, engine.cache, list(range(batch)), canvas, None)
            logits = model.logits(hidden).float()
            processed = logits / 0.8
            probs = torch.softmax(processed, dim=-1)
            entropy = token_entropy(processed)
            del logits, processed, probs, entropy
    else:
        while engine.busy:
            engine.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"batch": batch, "peak_mib": (peak - before) / 1024, "kv_mib": engine.cache.nbytes() / 2**20}


def memory_levels(batches: list[int], skip_batched_above: int) -> list[dict]:
    rows = []
    for b in batches:
        row = {"batch": b, "full_vocab_tensor_mib": b * PROBE_CANVAS * PROBE_VOCAB * 4 / 2**20}
        for mode in ("rows", "batched"):
            if mode == "batched" and b > skip_batched_above:
                row[f"{mode}_peak_mib"] = None
                continue
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--probe",
                    str(b),
                    *(["--batched-sampler"] if mode == "batched" else []),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            probe = json.loads(out.stdout.strip().splitlines()[-1])
            row[f"{mode}_peak_mib"] = probe["peak_mib"]
            row["kv_mib"] = probe["kv_mib"]
        rows.append(row)
        batched = row["batched_peak_mib"]
        print(
            f"  batch {b:3d}: engine peak +{row['rows_peak_mib']:7.1f} MiB (KV cache {row['kv_mib']:.1f}); "
            f"batch-wide sampler +{'-' if batched is None else f'{batched:7.1f}'} MiB; "
            f"one (B, C, V) float32 tensor {row['full_vocab_tensor_mib']:7.1f} MiB",
            flush=True,
        )
    return rows


def plot(load: list[dict], memory: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    c = [r["concurrency"] for r in load]
    axes[0].plot(c, [r["tok_per_s"] for r in load], "o-")
    axes[0].set(xscale="log", xlabel="concurrent clients", ylabel="generated tokens/s", title="throughput")
    axes[1].plot(c, [r["p50_s"] for r in load], "o-", label="p50")
    axes[1].plot(c, [r["p99_s"] for r in load], "s--", label="p99")
    axes[1].set(xscale="log", xlabel="concurrent clients", ylabel="latency (s)", title="latency")
    axes[1].legend()
    b = [r["batch"] for r in memory]
    axes[2].plot(b, [r["rows_peak_mib"] for r in memory], "o-", label="dgemma engine (row-chunked sampler)")
    measured = [(r["batch"], r["batched_peak_mib"]) for r in memory if r["batched_peak_mib"] is not None]
    axes[2].plot(*zip(*measured, strict=True), "s--", label="batch-wide sampler (measured)")
    axes[2].plot(b, [r["full_vocab_tensor_mib"] for r in memory], ":", label="one (B, C, V) fp32 tensor")
    axes[2].set(xscale="log", yscale="log", xlabel="batch (rows)", ylabel="peak memory added (MiB)")
    axes[2].set_title(f"memory, vocab {PROBE_VOCAB}, canvas {PROBE_CANVAS}")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="checkpoint dir (default: the bundled model)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=32, help="requests per level at least")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument(
        "--batched-up-to", type=int, default=16, help="largest batch for the batch-wide probe"
    )
    parser.add_argument("--plot", type=Path, default=Path("docs/serve_load.png"))
    parser.add_argument("--probe", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batched-sampler", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe is not None:
        print(json.dumps(probe_memory(args.probe, args.batched_sampler)))
        return
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print("load (bundled Sudoku model, /v1/completions, one 82-token canvas per request):")
    load = load_levels(args.model or bundled_model(), args.concurrency, args.requests)
    print(f"memory (random model, vocab {PROBE_VOCAB}, canvas {PROBE_CANVAS}, 3 denoising steps):")
    memory = memory_levels(args.batch_sizes, args.batched_up_to)
    plot(load, memory, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
