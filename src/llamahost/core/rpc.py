"""ggml RPC workers as a client sees them, asked over their own protocol before the engine is.

llama.cpp's RPC client ends the process where a worker cannot be reached or speaks another
protocol version (GGML_ABORT), and registers a reachable worker's devices for the rest of the
process. So llamahost asks each worker itself first, with the protocol's handshake (HELLO) and
its device queries: an unreachable worker or another version is an exception naming both
versions, and its devices are listed without touching the engine's registry.

Protocol (ggml/src/ggml-rpc/ggml-rpc.cpp): a request is a command byte, a u64 size and the
data; an answer a u64 size and the data; all little-endian.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ..errors import RPCWorkerError
from . import _native

CMD_GET_DEVICE_MEMORY = 11
CMD_HELLO = 14
CMD_DEVICE_COUNT = 15
CONN_CAPS_SIZE = 24  # transport.h: RPC_CONN_CAPS_SIZE (zeros: plain TCP)
PROTOCOL = tuple(_native.RPC_PROTOCOL)  # this build's (major, minor, patch)


@dataclass(frozen=True)
class RemoteDevice:
    endpoint: str
    index: int  # on its worker
    memory_free: int
    memory_total: int


def is_remote(device_name: str) -> bool:
    """Whether a device, as llama.cpp names it (RPC0, RPC1, ...), is an RPC worker's: its memory
    is another machine's."""
    return device_name.startswith("RPC")


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` as (host, port); ValueError naming what is wrong with it."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"an RPC worker is host:port, with a port from 1 to 65535; got {endpoint!r}")
    return host.strip("[]"), int(port)


def endpoints(rpc: str | list[str] | tuple[str, ...]) -> list[str]:
    """The workers of ``rpc`` (a list, or llama-server's comma-separated text), each checked."""
    names = [e.strip() for e in rpc.split(",")] if isinstance(rpc, str) else [str(e).strip() for e in rpc]
    if not names or not all(names):
        raise ValueError(f"rpc takes one or more host:port; got {rpc!r}")
    for name in names:
        split_endpoint(name)
    return names


class _Connection:
    def __init__(self, endpoint: str, timeout: float):
        self.endpoint = endpoint
        try:
            self.sock = socket.create_connection(split_endpoint(endpoint), timeout=timeout)
        except OSError as exc:
            raise RPCWorkerError(f"RPC worker {endpoint} cannot be reached: {exc}") from None

    def ask(self, cmd: int, data: bytes, answer_size: int) -> bytes:
        try:
            self.sock.sendall(struct.pack("<BQ", cmd, len(data)) + data)
            size = struct.unpack("<Q", self._read(8))[0]
            if size != answer_size:
                raise RPCWorkerError(f"RPC worker {self.endpoint} answered command {cmd} with {size} bytes, "
                                     f"not {answer_size}: not a ggml RPC server of this protocol")
            return self._read(size)
        except TimeoutError:
            raise RPCWorkerError(f"RPC worker {self.endpoint} did not answer within {self.sock.gettimeout():.0f} s: "
                                 "a worker serves one client at a time; is another server using it?") from None
        except OSError as exc:
            raise RPCWorkerError(f"RPC worker {self.endpoint} stopped answering: {exc}") from None

    def _read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise RPCWorkerError(f"RPC worker {self.endpoint} closed the connection")
            out += chunk
        return bytes(out)

    def close(self) -> None:
        self.sock.close()


def _hello(conn: _Connection) -> tuple[int, int, int]:
    answer = conn.ask(CMD_HELLO, bytes(CONN_CAPS_SIZE), 4 + CONN_CAPS_SIZE)
    version = (answer[0], answer[1], answer[2])
    # the engine's own rule: the same major version, a minor version it knows
    if version[0] != PROTOCOL[0] or version[1] > PROTOCOL[1]:
        raise RPCWorkerError(f"RPC worker {conn.endpoint} speaks RPC protocol {'.'.join(map(str, version))}; "
                             f"this llamahost speaks {'.'.join(map(str, PROTOCOL))}: run the same llamahost "
                             f"version on every machine")
    return version


def remote_devices(endpoint: str, timeout: float = 10.0) -> list[RemoteDevice]:
    """The devices a worker offers, with their memory; RPCWorkerError where it cannot be used."""
    conn = _Connection(endpoint, timeout)
    try:
        _hello(conn)
        count = struct.unpack("<I", conn.ask(CMD_DEVICE_COUNT, b"", 4))[0]
        found = []
        for index in range(count):
            free, total = struct.unpack("<QQ", conn.ask(CMD_GET_DEVICE_MEMORY, struct.pack("<I", index), 16))
            found.append(RemoteDevice(endpoint, index, free, total))
        return found
    finally:
        conn.close()


def check(rpc: str | list[str] | tuple[str, ...]) -> list[RemoteDevice]:
    """Every worker of ``rpc`` reachable and of this protocol version: their devices, in the
    order llama.cpp numbers them (RPC0, RPC1, ... across the workers in the order given)."""
    return [dev for endpoint in endpoints(rpc) for dev in remote_devices(endpoint)]

