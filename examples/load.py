"""Bounded load on a running `council serve`: N concurrent clients on loopback, throughput and latency.

    council serve --port 8765 &
    python examples/load.py --url http://127.0.0.1:8765 --clients 4 --requests 3 --max-tokens 40

Every client sends its requests one after another; the run stops by itself after clients x requests.
Requests queue behind the one model, so latency grows with the number of clients while throughput stays flat.
"""

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

PROMPTS = ["Give me one tip for sleeping better.", "How do I say sorry to a friend?", "Why is the sky blue?"]


def client(url: str, n: int, max_tokens: int, index: int) -> list[tuple[float, int]]:
    """One client's requests, one after another: (seconds, HTTP status) each."""
    key = os.environ.get("COUNCIL_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    results = []
    with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
        for i in range(n):
            body = {
                "model": "council",
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": PROMPTS[(index + i) % len(PROMPTS)]}],
            }
            start = time.perf_counter()
            status = http.post("/v1/chat/completions", json=body).status_code
            results.append((time.perf_counter() - start, status))
    return results


def main() -> None:
    """Run the load and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=3, help="per client")
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        parser.error("load runs against loopback only")
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(args.clients) as pool:
            runs = pool.map(lambda i: client(args.url, args.requests, args.max_tokens, i), range(args.clients))
            results = [r for run in runs for r in run]
    except httpx.ConnectError:
        parser.exit(1, f"cannot reach {args.url}: start `council serve` first\n")
    wall = time.perf_counter() - start
    latencies = sorted(t for t, _ in results)
    ok = sum(1 for _, status in results if status == 200)
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    print(f"requests {len(results)}  ok {ok}  errors {len(results) - ok}  wall {wall:.1f} s")
    p50 = statistics.median(latencies)
    print(f"throughput {len(results) / wall:.3f} req/s  latency p50 {p50:.2f} s  p95 {p95:.2f} s")


if __name__ == "__main__":
    main()
