"""Closed-loop HTTP load generation and latency statistics for `sidstream bench serving` (no Ray, no Feast here).

`concurrency` clients each send a request, wait for the answer, and send the next one, for `seconds`; every
latency is measured at the client (end to end over HTTP), and the replica's own stage times are read from the
`Server-Timing` header each response carries.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from typing import Callable

from catalogue.bench import percentile
from urllib.parse import urlsplit
import json as _json


def parse_server_timing(header: str | None) -> dict[str, float]:
    out = {}
    for part in (header or "").split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            try:
                out[name] = float(rest[4:])
            except ValueError:
                continue
    return out


class KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive JSON client on asyncio streams. The load generator shares the cores with
    the server it measures, so it should cost as little CPU as possible (httpx costs several times more)."""
    def __init__(self, url: str, headers: dict | None = None):

        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port or 80, parts.path or "/"
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                      f"Content-Type: application/json\r\n{extra}Content-Length: ")
        self._reader = self._writer = None

    async def post(self, body: dict) -> tuple[int, dict, bytes]:

        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        data = _json.dumps(body).encode()
        self._writer.write(f"{self._head}{len(data)}\r\n\r\n".encode() + data)
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        payload = await self._reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, payload

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None


async def closed_loop(url: str, make_body: Callable[[int], dict], concurrency: int, seconds: float,
                      headers: dict | None = None, warmup_s: float = 1.0) -> dict:
    """Run `concurrency` clients for warmup_s + seconds; statistics cover the measured part only."""
    latencies, stages, failures, statuses = [], [], 0, {}
    clients = [KeepAliveClient(url, headers) for _ in range(concurrency)]
    try:
        start = time.perf_counter()
        measure_from = start + warmup_s
        stop_at = measure_from + seconds
        counter = 0

        async def one_client(cid: int):
            nonlocal failures, counter
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                counter += 1
                body = make_body(counter * 7919 + cid)
                t0 = time.perf_counter()
                try:
                    status, response_headers, _ = await asyncio.wait_for(clients[cid].post(body), 30.0)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                    status, response_headers = "error", {}
                    await clients[cid].close()
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= stop_at:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append((t1 - t0) * 1000)
                        stages.append(parse_server_timing(response_headers.get("server-timing")))
                    else:
                        failures += 1

        await asyncio.gather(*(one_client(i) for i in range(concurrency)))
    finally:
        for client in clients:
            await client.close()
    return summarise(latencies, stages, failures, seconds, statuses)


def summarise(latencies: list[float], stages: list[dict], failures: int, seconds: float, statuses: dict) -> dict:
    def med(name):
        vals = [s[name] for s in stages if name in s]
        return round(statistics.median(vals), 3) if vals else None

    return {
        "p50_ms": round(percentile(latencies, 50), 3), "p95_ms": round(percentile(latencies, 95), 3),
        "p99_ms": round(percentile(latencies, 99), 3), "rps": round(len(latencies) / seconds, 1),
        "requests": len(latencies), "failed": failures, "statuses": {str(k): v for k, v in statuses.items()},
        "server_median_ms": {"feast": med("feast"), "generate": med("generate"), "replica": med("replica")},
    }


def breakdown(result: dict) -> dict:
    """Median end-to-end split: Feast read, generation, rest (HTTP, proxy, batching wait, serialisation)."""
    server = result["server_median_ms"]
    feast, gen = server["feast"] or 0.0, server["generate"] or 0.0
    return {"feast_read": feast, "generation": gen, "rest": round(max(0.0, result["p50_ms"] - feast - gen), 3),
            "end_to_end_p50": result["p50_ms"]}


def batch_counters(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the replica's batch-size histogram from a /metrics page."""
    total = count = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("sidstream_serving_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("sidstream_serving_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count
