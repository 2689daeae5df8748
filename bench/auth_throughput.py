"""Benchmark: forward-auth checks per second (GET /auth with a valid session cookie), the hot path of every page
a protected tool serves. The app runs in a child process (`smsbot dev`); this process is the client.
Usage: .venv/bin/python bench/auth_throughput.py [requests] [concurrency]
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import aiohttp

ADMIN = "+14155550100"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(total: int, concurrency: int) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SMSBOT_DB": f"{tmp}/b.db", "SMSBOT_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen([sys.executable, "-m", "smsbot", "dev", "--port", str(port)],  # noqa: S603
                                  env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                for _ in range(100):
                    try:
                        async with http.get(f"{base}/healthz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)

                async def send(sender: str, text: str) -> None:
                    async with http.post(f"{base}/dev/phone/send", json={"from": sender, "text": text}) as r:
                        assert r.status == 200

                async def last_text(number: str) -> str:
                    for _ in range(100):
                        async with http.get(f"{base}/dev/phone/texts") as r:
                            texts = [t["text"] for t in (await r.json())["texts"]
                                     if t["number"] == number and t["direction"] == "out"]
                        if texts:
                            return str(texts[-1])
                        await asyncio.sleep(0.05)
                    raise RuntimeError("no text")

                await send(ADMIN, "INVITE +14155550134 bench")
                code = re.search(r"code (\w{6})", await last_text("+14155550134"))
                assert code
                await send("+14155550134", code.group(1))
                await asyncio.sleep(0.3)
                pin = re.search(r"PIN is (\d{6})", await last_text("+14155550134"))
                assert pin
                async with http.get(f"{base}/login") as r:
                    token = re.search(r'name="csrf_token" value="([^"]+)"', await r.text())
                assert token
                form = {"username": "bench", "pin": pin.group(1), "csrf_token": token.group(1)}
                async with http.post(f"{base}/login", allow_redirects=False, data=form) as r:
                    assert r.status == 303
                    cookie = r.cookies["smsbot_session"].value

                latencies: list[float] = []

                async def worker(n: int) -> None:
                    for _ in range(n):
                        start = time.perf_counter()
                        async with http.get(f"{base}/auth", cookies={"smsbot_session": cookie}) as r:
                            assert r.status == 200 and r.headers["X-Auth-User"] == "bench"
                        latencies.append(time.perf_counter() - start)

                started = time.perf_counter()
                await asyncio.gather(*(worker(total // concurrency) for _ in range(concurrency)))
                elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(10)
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000
    print(f"{len(latencies)} /auth checks, {concurrency} at a time: {len(latencies) / elapsed:.0f} per second; "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000, int(sys.argv[2]) if len(sys.argv) > 2 else 20))
