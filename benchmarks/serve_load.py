"""Load test of `t5electra serve`: concurrent clients on loopback, dynamic batching vs batch size 1.

    python benchmarks/serve_load.py                                   # t5-small-shaped T5, 16 clients, 20 s
    python benchmarks/serve_load.py --preset t5-tiny --duration 10    # quick
    python benchmarks/serve_load.py --endpoint detect --clients 32    # ELECTRA replaced-token detection
    python benchmarks/serve_load.py --model-dir runs/t5-cola          # a real checkpoint

For each server setting (``--max-batch-size B --max-wait-ms W``, then ``--max-batch-size 1``) it
starts `t5electra serve` in a subprocess on 127.0.0.1 (never another interface), waits until it
answers, warms it up, then runs ``--clients`` concurrent clients for ``--duration`` seconds. Each
client sends one request at a time (one text; for generate a fixed number of new tokens: EOS is
suppressed with ``min_new_tokens`` so every request does the same work) and sends the next as soon
as the answer comes. Reported per setting: requests, throughput, p50 / p99 latency, errors by
status (0 expected: the clients stay below the queue limit), and the mean batch the server ran
(from GET /healthz). The gain is the throughput with dynamic batching over that with batch 1.

Models are random (the numbers measure the serving path, not quality), built in a temporary
directory from a preset with the demo tokenizers (t5electra.serve.demo), unless --model-dir is
given. Prints a JSON record and a Markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = ["translate English to German: the cat ate the meal in the park.",
           "summarize: our team built a small boat near the river. it was wonderful.",
           "sst2 sentence: the film was funny and sad.",
           "translate English to German: my friend read a book after lunch."]
SENTENCES = ["the chef ate the meal in the park.", "a dog read the map near the river.",
             "her brother sold an apple on monday.", "the pilot carried the red car by the sea."]


def build_model(kind: str, preset: str, directory: Path) -> Path:
    """A random model of ``preset``'s shape with the demo tokenizer, saved under ``directory``."""
    import torch

    from t5electra.models.electra import ElectraConfig, ElectraForPreTraining
    from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
    from t5electra.serve.demo import build_demo_models

    torch.manual_seed(0)
    demo = build_demo_models(directory / "demo")
    if kind == "t5":
        d = demo["t5-tiny"]
        T5ForConditionalGeneration(T5Config.from_preset(preset, dropout_rate=0.0)).save_pretrained(d)
        return d
    d = directory / "electra"
    d.mkdir()
    for f in demo["electra-tiny"].glob("*.*"):
        if f.name != "pretraining_config.json":
            (d / f.name).write_bytes(f.read_bytes())
    cfg = ElectraConfig.from_preset(preset, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ElectraForPreTraining(cfg).save_pretrained(d)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, args, batch: int, wait_ms: float, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "t5electra.cli", "serve", f"bench={model_dir}", "--host", "127.0.0.1",
           "--port", str(port), "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms),
           "--max-queue", str(max(256, 2 * args.clients)), "--log-level", "warning",
           "--max-new-tokens", str(max(args.max_new_tokens, 1)), "--device", args.device]
    if args.threads:
        cmd += ["--num-threads", str(args.threads)]
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"server did not come up within {timeout} s:\n{log.read_text()}")


def request_body(args, i: int) -> tuple[str, dict]:
    if args.endpoint == "generate":
        return "/v1/generate", {"model": "bench", "texts": [PROMPTS[i % len(PROMPTS)]],
                                "max_new_tokens": args.max_new_tokens, "min_new_tokens": args.max_new_tokens}
    return "/v1/detect", {"model": "bench", "texts": [SENTENCES[i % len(SENTENCES)]]}


async def load(url: str, args) -> dict:
    """``args.clients`` closed-loop clients for ``args.duration`` seconds."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=args.timeout) as client:
        # warm-up: every client shape once, not measured
        warm = [request_body(args, i) for i in range(min(args.clients, 8))]
        await asyncio.gather(*(client.post(path, json=body) for path, body in warm))
        stop = time.perf_counter() + args.duration

        async def one_client(c: int) -> None:
            i = c
            while time.perf_counter() < stop:
                path, body = request_body(args, i)
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, json=body)
                    status = r.status_code
                except httpx.HTTPError:
                    status = -1  # transport error / client timeout
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
                i += args.clients

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(args.clients)))
        elapsed = time.perf_counter() - t0
        stats = (await client.get("/healthz")).json()["models"]["bench"]
    lat = np.array(latencies) * 1000
    errors = {str(k): v for k, v in statuses.items() if k != 200}
    return {"requests": len(latencies), "seconds": round(elapsed, 2),
            "throughput_rps": round(len(latencies) / elapsed, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "errors": errors, "server_mean_batch": stats["mean_batch_texts"],
            "server_max_batch": stats["max_batch_texts"]}


def machine() -> str:
    from t5electra.machine import cpu_model

    cpu = cpu_model()
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} logical CPUs, load average {load1:.1f} at start"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", choices=("generate", "detect"), default="generate")
    p.add_argument("--preset", default=None, help="model shape (default: t5-small / electra-small)")
    p.add_argument("--model-dir", type=Path, help="serve this checkpoint instead of a random preset model")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per setting")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=None, help="torch threads in the server")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timeout", type=float, default=120.0, help="client timeout per request, seconds")
    p.add_argument("--json", type=Path, help="also write the record here")
    args = p.parse_args()
    preset = args.preset or ("t5-small" if args.endpoint == "generate" else "electra-small")

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        tmp = Path(tmp)
        model_dir = args.model_dir or build_model("t5" if args.endpoint == "generate" else "electra", preset, tmp)
        settings = [("dynamic", args.max_batch_size, args.max_wait_ms), ("batch-1", 1, 0.0)]
        results = {}
        for name, batch, wait_ms in settings:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = tmp / f"server-{name}.log"
            proc = start_server(model_dir, port, args, batch, wait_ms, log)
            try:
                wait_up(url, proc, log)
                results[name] = {"max_batch_size": batch, "max_wait_ms": wait_ms, **asyncio.run(load(url, args))}
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            print(f"{name}: {results[name]}", flush=True)

    gain = results["dynamic"]["throughput_rps"] / max(results["batch-1"]["throughput_rps"], 1e-9)
    record = {"endpoint": args.endpoint, "model": str(args.model_dir) if args.model_dir else f"random {preset}",
              "clients": args.clients, "duration_s": args.duration, "max_new_tokens": args.max_new_tokens,
              "threads": args.threads, "device": args.device, "machine": machine(),
              "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "results": results, "batching_gain": round(gain, 2)}
    print(json.dumps(record, indent=2))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")

    what = (f"POST /v1/generate, 1 text, {args.max_new_tokens} new tokens (greedy)" if args.endpoint == "generate"
            else "POST /v1/detect, 1 sentence")
    print(f"\n## Serving: dynamic batching under load ({record['model']})\n")
    print(f"`{record['command']}` on {record['machine']}; device {args.device}; {args.clients} concurrent clients "
          f"on 127.0.0.1 for {args.duration:.0f} s per setting; {what}.\n")
    print("| server setting | requests | throughput (req/s) | p50 latency (ms) | p99 latency (ms) | errors "
          "| mean batch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results.values():
        setting = f"max_batch_size={r['max_batch_size']}, max_wait_ms={r['max_wait_ms']:g}"
        errs = sum(r["errors"].values())
        print(f"| {setting} | {r['requests']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} | {errs} | "
              f"{r['server_mean_batch']} |")
    print(f"\nDynamic batching: **{gain:.2f}x** the throughput of batch size 1.")


if __name__ == "__main__":
    main()
