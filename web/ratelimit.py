"""The per-client sign-in limit: who the client is (X-Forwarded-For only from trusted proxies; IPv6 by /64), and
a sliding-window count per client, shared by every instance through the database."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import web

from smsbot.clock import Clock
from smsbot.keys import Keys
from smsbot.store import Counted, Store, Tx


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


def client_group(address: str) -> str:
    """What the limit counts as one client: an IPv4 address, or an IPv6 address's /64 (one subscriber's usual
    share, so hopping between its addresses buys nothing)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Slot:
    """A failed sign-in counted ahead of time: `id` in the database, or `wait` seconds when the client has none left."""

    id: int | None
    wait: float = 0.0


@dataclass(eq=False)
class SignInLimit:
    """At most `limit` failed sign-ins per client in any `window` seconds, for every instance together.

    A sign-in takes a slot before it is weighed, in one unit of work (count and insert), and gives it back only when
    it succeeds: however many come at once, no more than `limit` are weighed. The count lives in the database, so
    instances behind one load balancer share it, and keeps only a keyed hash of the client.
    """

    store: Store
    keys: Keys
    clock: Clock
    limit: int
    window: float = 60.0

    async def take(self, client: str) -> Slot:
        key = self.keys.client_key(client_group(client))
        now = self.clock.now()
        since = now - self.window

        async def work(tx: Tx) -> Slot:
            if await tx.count_since(key, Counted.SIGNIN, since) >= self.limit:
                first = await tx.first_since(key, Counted.SIGNIN, since)
                return Slot(None, max(1.0, self.window - (now - (first if first is not None else now))))
            return Slot(await tx.note_now(key, Counted.SIGNIN, now))

        return await self.store.run(work)

    async def give_back(self, slot: Slot) -> None:
        """A sign-in that succeeded was no failure: its slot is free again."""
        counted = slot.id
        if counted is not None:
            await self.store.run(lambda tx: tx.unnote(counted))
