"""Per-client limits for the web face: who the client is (X-Forwarded-For only from trusted proxies), and a
sliding-window counter per client."""

from __future__ import annotations

import collections
import ipaddress

from aiohttp import web

from smsbot.clock import Clock

MAX_CLIENTS = 10_000  # forget the oldest clients beyond this, so junk addresses can't fill memory


def client_ip(request: web.Request, trusted: tuple[str, ...]) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the nearest untrusted hop in
    X-Forwarded-For (proxies append, so the right end is the one we can believe)."""
    networks = [ipaddress.ip_network(n) for n in trusted]

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in n for n in networks)

    peer = request.remote or "unknown"
    if not networks or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a proxy passed on junk: fall back to what we know
    return peer


class SlidingWindow:
    """At most `limit` events per client in any `window` seconds."""

    def __init__(self, limit: int, window: float, clock: Clock):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._seen: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def _recent(self, client: str) -> collections.deque[float]:
        now = self.clock.now()
        times = self._seen.pop(client, None) or collections.deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        self._seen[client] = times
        while len(self._seen) > MAX_CLIENTS:
            self._seen.popitem(last=False)
        return times

    def wait(self, client: str) -> float:
        """0 if the client may go on, else the seconds until it may."""
        times = self._recent(client)
        if len(times) < self.limit:
            return 0.0
        return max(1.0, self.window - (self.clock.now() - times[0]))

    def hit(self, client: str) -> None:
        """Count one event for the client."""
        self._recent(client).append(self.clock.now())
