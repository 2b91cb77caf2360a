"""The byte relays of a rootless sandbox: TCP to Unix sockets and back. Standard library only.

A rootless sandbox has a network namespace of its own holding nothing but ``lo``: no packet can leave it. Its one
way out is a directory of Unix sockets, bind-mounted read-only at ``/run/tre`` (with ``in/`` writable), and two
relays, one on each side, carry the few connections it is allowed:

* ``outside`` runs in the host's network as the sandbox's parent. For each allowed loopback TCP port it listens on
  ``tcp-PORT.sock`` in the socket directory and connects every caller to ``127.0.0.1:PORT`` and nowhere else. It
  accepts the hub's connections on an inherited TCP listener and connects each to the server's socket
  ``in/server.sock``, which it opens without following links and uses only if it is a socket (the sandbox can
  write ``in/``). Then it runs its command (bubblewrap) and exits with its status: if the relay dies, bubblewrap
  (``--die-with-parent``) and the whole sandbox die with it.
* ``inside`` is the sandbox's first process. For each allowed port it listens on ``127.0.0.1:PORT`` and connects
  every caller to ``/run/tre/tcp-PORT.sock``, so URLs such as ``http://127.0.0.1:8081/hub/api`` work unchanged;
  it listens on ``/run/tre/in/server.sock`` and connects each caller to the server's own port. Then it runs the
  server, passes it SIGTERM, SIGINT and SIGHUP, and exits with its status (which ends the sandbox).

When its command ends, a relay stops accepting and gives the connections in flight a moment (``LINGER``) to
deliver what was already written, then exits.

Each connection is copied both ways with backpressure (a side is read only as fast as the other drains); an end
of stream is passed on as a half-close, both sockets are closed once both directions have ended, and any error or
refused connection closes both at once.

Usage: ``python -I _relay.py outside|inside CONFIG_JSON -- COMMAND...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import stat
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

CHUNK = 64 * 1024
LINGER = 2.0  # seconds connections in flight may take to finish once the command has ended
RUN_INSIDE = "/run/tre"
SERVER_SOCKET = "server.sock"
INBOUND_DIR = "in"
_PR_SET_PDEATHSIG = 1

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connect = Callable[[], Awaitable[Streams]]


def socket_name(port: int) -> str:
    """The Unix socket that leads to loopback TCP ``port``."""
    return f"tcp-{port}.sock"


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, waiting for ``writer`` to drain after each chunk; then half-close it."""
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof() and not writer.is_closing():
        writer.write_eof()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connect: Connect) -> None:
    """Relay one accepted connection to a new one from ``connect``, both ways; close both when both directions
    have ended, or at once on an error (a refused ``connect`` closes the accepted one)."""
    try:
        upstream_reader, upstream_writer = await connect()
    except OSError:
        await _close(writer)
        return
    copies = [
        asyncio.ensure_future(_copy(reader, upstream_writer)),
        asyncio.ensure_future(_copy(upstream_reader, writer)),
    ]
    try:
        _, pending = await asyncio.wait(copies, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        for task in copies:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
    finally:
        for task in copies:
            task.cancel()
        await _close(upstream_writer)
        await _close(writer)


def tcp(host: str, port: int) -> Connect:
    return lambda: asyncio.open_connection(host, port)


def unix(path: str) -> Connect:
    return lambda: asyncio.open_unix_connection(path)


def unix_socket_in(directory_fd: int, name: str) -> Connect:
    """Connect to the socket ``name`` in a directory the other side can write: refused unless it is a socket
    there (never a link to somewhere else)."""

    async def connect() -> Streams:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory_fd)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                raise ConnectionRefusedError(f"{name} is not a socket")
            return await asyncio.open_unix_connection(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    return connect


class Connections:
    """The connections being relayed, so that those in flight when the command ends can finish."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def handler(self, connect: Connect) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            try:
                await splice(reader, writer, connect)
            finally:
                self.tasks.discard(task)

        return handle

    async def finish(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the connections in flight (bytes the command wrote before it ended
        are still delivered)."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)


async def _run(
    command: Sequence[str], servers: Sequence[asyncio.AbstractServer], connections: Connections, forward: Sequence[int]
) -> int:
    """Run ``command`` while ``servers`` relay; its exit status (128 + signal if killed)."""
    child = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.DEVNULL)
    loop = asyncio.get_running_loop()
    for signum in forward:
        loop.add_signal_handler(signum, _pass_on, child, signum)
    status = await child.wait()
    for server in servers:
        server.close()
    await connections.finish(LINGER)
    return status if status >= 0 else 128 - status


def _pass_on(child: asyncio.subprocess.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signum)


async def outside(config: dict[str, Any], command: Sequence[str]) -> int:
    """The host side: Unix sockets to the allowed loopback ports, the hub's listener to the server's socket."""
    os.chdir(config["dir"])  # socket names stay short, however long the state directory's path
    inbound_dir = os.open(INBOUND_DIR, os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    connections, servers = Connections(), []
    for port in config["ports"]:
        handle = connections.handler(tcp(config["host"], port))
        servers.append(await asyncio.start_unix_server(handle, path=socket_name(port)))
    listener = socket.socket(fileno=int(config["inbound_fd"]))
    handle = connections.handler(unix_socket_in(inbound_dir, SERVER_SOCKET))
    servers.append(await asyncio.start_server(handle, sock=listener))
    return await _run(command, servers, connections, forward=())


async def inside(config: dict[str, Any], command: Sequence[str]) -> int:
    """The sandbox side: loopback ports to the Unix sockets, the server's socket to its port."""
    connections, servers = Connections(), []
    for port in config["ports"]:
        handle = connections.handler(unix(f"{RUN_INSIDE}/{socket_name(port)}"))
        servers.append(await asyncio.start_server(handle, "127.0.0.1", port))
    inbound = f"{RUN_INSIDE}/{INBOUND_DIR}/{SERVER_SOCKET}"
    handle = connections.handler(tcp("127.0.0.1", config["server_port"]))
    servers.append(await asyncio.start_unix_server(handle, path=inbound))
    return await _run(command, servers, connections, forward=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP))


def _die_with_parent(parent: int) -> None:
    """Be killed when the process that started this one ends (and end now if it already has)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit(1)


def main(argv: Sequence[str]) -> int:
    if len(argv) < 4 or argv[0] not in {"outside", "inside"} or argv[2] != "--":
        print("usage: _relay.py outside|inside CONFIG_JSON -- COMMAND...", file=sys.stderr)
        return 2
    side, config, command = argv[0], json.loads(argv[1]), list(argv[3:])
    os.umask(0o077)  # every socket made here is its owner's only
    if side == "outside":
        _die_with_parent(int(config["parent"]))
        return asyncio.run(outside(config, command))
    return asyncio.run(inside(config, command))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
