"""Safe defaults for a server others can reach: a warning when one listens beyond this
machine without an API key, and API keys compared in constant time."""

from __future__ import annotations

import hmac
import ipaddress
import warnings
from typing import Iterable


class ExposedServerWarning(UserWarning):
    """A server listens on an address other machines can reach, and no API key guards it."""


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``: a loopback address, ``localhost``, or a
    UNIX socket path (llama-server's ``.sock`` hosts)."""
    host = host.strip().strip("[]")
    if host == "localhost" or host.endswith(".sock"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposed_hosts(hosts: Iterable[str], n_api_keys: int) -> list[str]:
    """The hosts beyond loopback, when no API key guards them (else none)."""
    return [] if n_api_keys else [h for h in hosts if not is_loopback(h)]


def warn_if_exposed(hosts: Iterable[str], n_api_keys: int, what: str) -> None:
    exposed = exposed_hosts(hosts, n_api_keys)
    if exposed:
        warnings.warn(f"{what} listens on {', '.join(exposed)} without an API key: anyone who can reach that address "
                      "can use it. Set an API key (api_key=, --api-key) or listen on 127.0.0.1.",
                      ExposedServerWarning, stacklevel=2)


def key_matches(given: str, keys: Iterable[str]) -> bool:
    """Whether ``given`` is one of ``keys``, every key compared in full in constant time."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found
