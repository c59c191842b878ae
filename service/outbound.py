"""Where the service's HTTP clients (PowerSchool, Clever, ClassLink) may connect, and how much
they read back.

Every URL must be https (certificates verified); plain http only to loopback, and only with
``ALLOW_INSECURE_UPSTREAMS``. Every address a host name resolves to is checked when the
connection is made, by the resolver the connector uses, so a name that resolves to a public
address once and to 169.254.169.254 the next time (DNS rebinding) is still refused:
loopback, link-local (cloud metadata), private, unspecified, multicast and other non-public
addresses, unless ``UPSTREAM_ALLOWLIST`` names the host or a network holding the address.
Redirects to another host are refused; bodies are read up to a cap.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_METADATA = ipaddress.ip_address("169.254.169.254")


class OutboundError(Exception):
    """A call the policy stopped; ``str()`` names the host and why, never a secret. Not a
    network failure: retrying cannot help, only a configuration change can."""


class OutboundRefused(OutboundError):
    """The URL's scheme, or an address its host resolves to, is not allowed."""


class ResponseTooLarge(OutboundError):
    """The answer's body is larger than the cap for its kind of call."""


def address_class(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address ("loopback", "link-local", …), or None if it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip == _METADATA:
        return "link-local (cloud metadata)"
    for name, test in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
    ):
        if test:
            return name
    return None if ip.is_global else "non-public"


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class OutboundPolicy:
    """What may be reached: ``allow_insecure`` lets plain http and addresses on loopback
    through (simulators); ``allowlist`` holds host names and CIDRs whose private addresses
    are allowed (an on-premises PowerSchool)."""

    allow_insecure: bool = False
    allowlist: tuple[str, ...] = ()
    _hosts: frozenset[str] = field(init=False, repr=False)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        hosts, networks = set(), []
        for entry in self.allowlist:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        object.__setattr__(self, "_hosts", frozenset(hosts))
        object.__setattr__(self, "_networks", tuple(networks))

    def check_url(self, url: str) -> None:
        """Raise :class:`OutboundRefused` for a URL that may not be called: not https (plain
        http only to loopback or an allowlisted host, with ``allow_insecure``: simulators and
        local stacks), or an address literal that
        :meth:`check_address` refuses. Host names are judged when they are resolved."""
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise OutboundRefused(f"{url!r} has no host")
        ip = _ip(host)
        if scheme == "http":
            local = host == "localhost" or host.endswith(".localhost")
            listed = host in self._hosts or (
                ip is not None and any(ip in n for n in self._networks)
            )
            if not (
                self.allow_insecure and (local or listed or (ip is not None and ip.is_loopback))
            ):
                raise OutboundRefused(
                    f"{host} is plain http://: only https:// is allowed (http only to "
                    "loopback or an UPSTREAM_ALLOWLIST host, with ALLOW_INSECURE_UPSTREAMS=1)"
                )
        elif scheme != "https":
            raise OutboundRefused(f"{host}: the scheme {scheme!r} is not allowed, only https")
        if ip is not None:
            self.check_address(host, ip)

    def check_address(self, host: str, ip: IPAddress) -> None:
        """Raise :class:`OutboundRefused` if ``host`` may not be reached at ``ip``."""
        host = host.lower().rstrip(".")
        kind = address_class(ip)
        if kind is None or host in self._hosts or any(ip in n for n in self._networks):
            return
        if kind == "loopback" and self.allow_insecure:
            return
        where = str(ip) if _ip(host) == ip else f"{host} resolves to {ip}"
        raise OutboundRefused(
            f"{where} ({kind} address): refused before connecting "
            "(an on-premises server's host or network can be added to UPSTREAM_ALLOWLIST)"
        )


class PolicyResolver(AbstractResolver):
    """Resolves with ``inner`` (aiohttp's default resolver unless given), then refuses the
    host if any address it resolved to is not allowed."""

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The inner resolver's addresses for ``host``, each allowed by the policy."""
        results = await self._inner.resolve(host, port, family)
        for result in results:
            ip = _ip(result["host"])
            if ip is None:  # pragma: no cover  (resolvers answer with address literals)
                raise OutboundRefused(f"{host} resolved to something that is not an address")
            self._policy.check_address(host, ip)
        return results

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()


def session(
    policy: OutboundPolicy,
    *,
    limit: int,
    limit_per_host: int,
    ttl_dns_cache: int | None = 10,
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """A client session whose every request and redirect obeys ``policy``; certificates are
    verified (aiohttp's default, never turned off here). ``resolver`` replaces the system's
    DNS under the policy (tests map names to addresses with it)."""

    async def on_start(
        _session: aiohttp.ClientSession,
        _ctx: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        policy.check_url(str(params.url))

    async def on_redirect(
        _session: aiohttp.ClientSession,
        _ctx: SimpleNamespace,
        params: aiohttp.TraceRequestRedirectParams,
    ) -> None:
        target = params.response.headers.get("Location", "")
        here = (params.url.host or "").lower()
        there = (urlsplit(target).hostname or here).lower()
        if there != here:
            raise OutboundRefused(f"{here} redirected to another host ({there}): not followed")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    trace.on_request_redirect.append(on_redirect)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=limit,
            limit_per_host=limit_per_host,
            ttl_dns_cache=ttl_dns_cache,
            resolver=PolicyResolver(policy, resolver),
        ),
        trace_configs=[trace],
        raise_for_status=False,
    )


async def read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body, or :class:`ResponseTooLarge` as soon as it passes ``cap`` bytes (counted
    after decompression, so a small compressed bomb is stopped too)."""
    host = resp.url.host or "the server"
    if resp.content_length is not None and resp.content_length > cap:
        raise ResponseTooLarge(f"{host} answered {resp.content_length} bytes; at most {cap}")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > cap:
            raise ResponseTooLarge(f"{host} answered more than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_capped(resp: aiohttp.ClientResponse, cap: int) -> Any:
    """The body parsed as JSON (None if empty), read as :func:`read_capped`; ValueError if
    it is not JSON."""
    body = await read_capped(resp, cap)
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise ValueError("not JSON") from exc
