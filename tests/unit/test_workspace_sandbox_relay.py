"""The rootless sandbox's relays (tre.workspaces._relay) on real sockets, in one event loop: bytes intact, ends
passed on as half-closes, errors closing both sides, backpressure, and a server socket that must be a socket.
(Through real sandboxes, as an unprivileged uid: tests/integration/test_sandbox_rootless.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tre.workspaces import _relay

MiB = 1024 * 1024
STEP = 10.0  # seconds any one step may take before the test is stuck (a hang guard, not a speed bound)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def unix_server(path: Path, handler: Handler) -> AsyncIterator[None]:
    server = await asyncio.start_unix_server(handler, path=str(path))
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def relay_to(connect: _relay.Connect) -> AsyncIterator[int]:
    """A loopback TCP listener relaying each connection through ``connect``; yields its port."""
    server = await asyncio.start_server(lambda r, w: _relay.splice(r, w, connect), "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 6 * STEP))


def test_bytes_cross_tcp_to_unix_and_back_intact(tmp_path: Path) -> None:
    payload = os.urandom(4 * MiB)

    async def scenario() -> None:
        async with unix_server(tmp_path / "s.sock", echo), relay_to(_relay.unix(str(tmp_path / "s.sock"))) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            writer.write_eof()
            received = await asyncio.wait_for(reader.read(), STEP)
            writer.close()
        assert received == payload

    run(scenario())


def test_an_end_of_stream_is_passed_on_and_the_answer_still_comes_back(tmp_path: Path) -> None:
    """A client that half-closes after its request still gets the whole answer, then the end."""

    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until the client's end, passed on by the relay
        writer.write(b"got " + str(len(request)).encode())
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        sock = tmp_path / "s.sock"
        async with unix_server(sock, answer_after_eof), relay_to(_relay.unix(str(sock))) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"x" * 1000)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), STEP) == b"got 1000"
            assert reader.at_eof()
            writer.close()

    run(scenario())


def test_a_refused_destination_closes_the_callers_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with relay_to(_relay.unix(str(tmp_path / "nobody-listens.sock"))) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(), STEP) == b""
            writer.close()

    run(scenario())


def test_a_reset_on_one_side_closes_the_other(tmp_path: Path) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        raw = writer.get_extra_info("socket")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def scenario() -> None:
        server = await asyncio.start_server(reset, "127.0.0.1", 0)
        upstream = int(server.sockets[0].getsockname()[1])
        async with relay_to(_relay.tcp("127.0.0.1", upstream)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello")  # the client never closes: only the relay can end this
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), STEP) == b""
            writer.close()
        server.close()

    run(scenario())


def test_a_reader_that_stops_reading_stops_the_sender(tmp_path: Path) -> None:
    """Backpressure: with a destination that never reads, the relay stops reading too, so a sender stalls after
    the socket buffers and one chunk, instead of the relay buffering everything in memory."""
    held: list[asyncio.StreamWriter] = []

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    async def scenario() -> None:
        async with unix_server(tmp_path / "s.sock", never_reads), relay_to(_relay.unix(str(tmp_path / "s.sock"))) as p:
            client = socket.create_connection(("127.0.0.1", p))
            client.setblocking(False)
            sent, stalled = 0, 0
            while stalled < 20 and sent < 256 * MiB:
                try:
                    sent += client.send(b"\0" * MiB)
                    stalled = 0
                except BlockingIOError:
                    stalled += 1
                    await asyncio.sleep(0.05)  # let the relay move whatever it will
            client.close()
            for writer in held:
                writer.close()  # the destination goes away: the relay's pending write fails and both are closed
            assert sent < 64 * MiB  # kernel buffers on two connections and a few chunks, not 256 MiB

    run(scenario())


def test_the_servers_socket_is_used_only_if_it_is_a_socket(tmp_path: Path) -> None:
    """The sandbox can write the directory of its server's socket: a link there (to any socket) or another kind
    of file is refused, and nothing reaches what a link points at."""
    reached: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(1)
        writer.close()

    async def scenario() -> None:
        inbound = tmp_path / "in"
        inbound.mkdir()
        directory = os.open(inbound, os.O_DIRECTORY)
        try:
            async with unix_server(tmp_path / "secret.sock", count), unix_server(inbound / "real.sock", count):
                (inbound / "link.sock").symlink_to("../secret.sock")
                (inbound / "file.sock").write_text("not a socket")
                for name in ("link.sock", "file.sock"):
                    with pytest.raises(OSError, match="not a socket"):
                        await _relay.unix_socket_in(directory, name)()
                reader, writer = await _relay.unix_socket_in(directory, "real.sock")()
                await reader.read()
                writer.close()
        finally:
            os.close(directory)
        assert reached == [1]  # only the real one

    run(scenario())


def test_sockets_are_named_by_port_and_bad_usage_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert _relay.socket_name(8081) == "tcp-8081.sock"
    assert _relay.main(["sideways", "{}", "--", "true"]) == 2
    assert "usage" in capsys.readouterr().err
