"""Which callback URLs the gateway will call: http(s) only, every address the host resolves to
inside ``GATEWAY_CALLBACK_ALLOWED_NETWORKS``, and cloud metadata services never.

A URL is checked when a tenant hands it over (a 422 naming the field) and again before every
attempt, and the attempt then connects to an address that was just checked: a host name that
resolves elsewhere later (DNS rebinding) cannot steer a callback into a refused network. A
name that does not resolve when it is handed over is accepted (DNS may be down for a moment,
or the service not deployed yet); its attempts fail until it resolves into allowed networks.

Metadata addresses are refused in any spelling: the host is parsed the way the C resolver
parses IPv4 (``2852039166``, ``0251.0376.0251.0376``, ``0xa9fea9fe``, ``169.254.43518``), and
IPv6 forms that carry an IPv4 address (``::ffff:169.254.169.254``, NAT64, 6to4, IPv4-compatible)
are checked as that IPv4 address too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

# Instance metadata services: AWS/GCP/Azure/OpenStack/DigitalOcean/Oracle (169.254.169.254),
# AWS over IPv6, ECS task metadata, Alibaba Cloud, Oracle Cloud Classic.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a) for a in (
        "169.254.169.254", "169.254.170.2", "169.254.170.23", "fd00:ec2::254", "fd00:ec2::23",
        "100.100.100.200", "192.0.0.192",
    )
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "instance-data.ec2.internal"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_MAX_URL = 2048


class CallbackUrlRefused(ValueError):
    """The URL may not receive callbacks; the message says why and is safe to show the tenant."""


class CallbackHostUnresolved(CallbackUrlRefused):
    """The host name did not resolve (now): an attempt fails, but a tenant may register it."""


@dataclass(frozen=True)
class CheckedUrl:
    url: str
    host: str  # as written (lower case), for the Host header and TLS server name
    port: int
    addresses: tuple[IPAddress, ...]  # every one allowed; connect to these, in order


def parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read as inet_aton reads it (1 to 4 parts, each decimal, octal or hex), or None."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        try:
            if part.lower().startswith("0x"):
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part[1:], 8))
            elif part.isdigit():
                numbers.append(int(part))
            else:
                return None
        except ValueError:
            return None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for n in leading:
        value = value * 256 + n
    value = value * 256 ** (5 - len(numbers)) + last
    return ipaddress.IPv4Address(value)


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return parse_legacy_ipv4(host)


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, NAT64, 6to4, IPv4-compatible)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    packed = int(address)
    if address in _NAT64 or (packed >> 32 == 0 and packed > 0xFFFF):  # NAT64; ::a.b.c.d (not ::1)
        found.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
    return found


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class CallbackUrlPolicy:
    def __init__(
        self,
        allowed_networks: Sequence[str],
        *,
        resolver: Resolver = system_resolver,
        resolve_timeout: float = 5.0,
    ) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allowed_networks
        )
        self._resolver = resolver
        self._resolve_timeout = resolve_timeout

    def refusal(self, address: IPAddress) -> str | None:
        """Why a callback may not connect to ``address``, or None if it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if isinstance(address, ipaddress.IPv6Address):
            address = ipaddress.IPv6Address(int(address))  # drop any zone id
        carried = embedded_ipv4(address)
        if address in METADATA_ADDRESSES or any(a in METADATA_ADDRESSES for a in carried):
            return "a cloud metadata address"
        for candidate in (address, *carried):
            if not any(candidate in network for network in self.networks):
                return "outside GATEWAY_CALLBACK_ALLOWED_NETWORKS"
        return None

    def split(self, url: str) -> SplitResult:
        """The URL's parts if its form is acceptable (scheme, host, no fragment games)."""
        if len(url) > _MAX_URL:
            raise CallbackUrlRefused(f"must be at most {_MAX_URL} characters")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            raise CallbackUrlRefused(f"is not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CallbackUrlRefused("must be an http(s) URL with a host")
        if any(c.isspace() for c in url):
            raise CallbackUrlRefused("must not contain whitespace")
        return parts

    async def check(self, url: str) -> CheckedUrl:
        """Resolve and check ``url``; raise CallbackUrlRefused saying why it is refused."""
        parts = self.split(url)
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if host in METADATA_HOSTS:
            raise CallbackUrlRefused("names a cloud metadata service")
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                async with asyncio.timeout(self._resolve_timeout):
                    addresses = await self._resolver(host, port)
            except (OSError, TimeoutError, UnicodeError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else "failed"
                raise CallbackHostUnresolved(f"host {host!r} could not be resolved ({reason})") from None
            if not addresses:
                raise CallbackHostUnresolved(f"host {host!r} has no addresses")
        for address in addresses:
            why = self.refusal(address)
            if why is not None:
                if literal is not None:
                    raise CallbackUrlRefused(f"refused: {address} is {why}")
                raise CallbackUrlRefused(f"refused: {host!r} resolves to {address}, {why}")
        return CheckedUrl(url=url, host=host, port=port, addresses=tuple(addresses))
