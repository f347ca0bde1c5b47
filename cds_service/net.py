"""The one place that decides what counts as loopback and as a safe URL: used by `serve` (may it
listen without client authentication), the FHIR access policy (may plain http be used), the
trusted-issuer loader (may a key URL be fetched) and the operations and analytics pages (is
the caller on this machine)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback_host(host: str) -> bool:
    """A host name or IP literal (IPv6 with or without brackets) on this machine only."""
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """A Host header without its port, lower-cased ("[::1]:8080" -> "[::1]")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def client_address(remote_addr: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The caller's IP address (an IPv4-mapped IPv6 address as IPv4; zone ids dropped), or
    None when the server gave none that parses."""
    try:
        address = ipaddress.ip_address((remote_addr or "").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def url_host(url: str) -> str:
    """The lower-case host of an absolute URL ("" when it has none or cannot be parsed)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def is_https_or_loopback(url: str) -> bool:
    """An https URL, or a plain http one whose host is loopback (decided on the parsed host,
    never by a substring of the URL)."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return False
    host = url_host(url)
    if not host:
        return False
    return scheme == "https" or (scheme == "http" and is_loopback_host(host))
