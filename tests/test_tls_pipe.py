"""net/tls_pipe.py: the chunk client's TLS through memory buffers and its HTTP/1.1 answer reader,
against a real TLS server on 127.0.0.1 (a thread here) that answers in each of HTTP's ways:
chunked (with extensions and trailers, split across TLS records at odd places), with a
Content-Length, to the end of the connection, and cut off."""

from __future__ import annotations

import random
import socket
import ssl
import threading
from pathlib import Path

import pytest

from p2psync.errors import NetworkError
from p2psync.net import tls
from p2psync.net.tls_pipe import Answer, TLSPipe
from p2psync.store.library import Library

BODY = random.Random(9).randbytes(300_000)


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        out += b"%x;ext=1\r\n" % size + body[at : at + size] + b"\r\n"
        at += size
    return out + b"0\r\nTrailer: x\r\n\r\n"


ANSWERS = {
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(BODY, [1, 70_000, 16_379, 213_620]),
    "length": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY,
    "to the end": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY,
    "cut": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(BODY, [300_000])[:150_000],
}


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("server")
    with Library.create(folder / "lib", "S") as library:
        return tls.certificate_files(library.identity(), folder / "lib" / "device.key", folder / "lib")


def _serve(listener: socket.socket, cert: tuple[Path, Path], wire: bytes, twice: bool) -> None:
    context = tls.server_context(*cert)
    raw, _ = listener.accept()
    with context.wrap_socket(raw, server_side=True) as sock:
        for _ in range(2 if twice else 1):
            request = b""
            while b"\r\n\r\n" not in request:
                request += sock.recv(4096)
            for at in range(0, len(wire), 7_777):  # records cut across the framing
                sock.sendall(wire[at : at + 7_777])


def _pipe(port: int) -> TLSPipe:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    pipe = TLSPipe(socket.create_connection(("127.0.0.1", port), timeout=10), context)
    pipe.handshake()
    return pipe


def _read(answer: Answer, piece: int) -> bytes:
    out = bytearray()
    buffer = bytearray(piece)
    with memoryview(buffer) as view:
        while not answer.done:
            got = answer.read_into(view)
            out += view[:got]
    return bytes(out)


@pytest.mark.parametrize("how", ["chunked", "length", "to the end"])
def test_every_way_of_ending_a_body_reads_it_whole(identity: tuple[Path, Path], how: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        twice = how != "to the end"
        server = threading.Thread(target=_serve, args=(listener, identity, ANSWERS[how], twice), daemon=True)
        server.start()
        pipe = _pipe(listener.getsockname()[1])
        try:
            bodies = []
            for piece in (65_536, 1_000_000)[: 2 if twice else 1]:  # a kept-alive connection asked twice
                pipe.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = Answer(pipe)
                assert answer.status == 200 and answer.keep_alive == twice
                bodies.append(_read(answer, piece))
        finally:
            pipe.close()
        server.join(10)
    assert all(body == BODY for body in bodies)


def test_a_cut_answer_raises_after_what_arrived(identity: tuple[Path, Path]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=_serve, args=(listener, identity, ANSWERS["cut"], False), daemon=True)
        server.start()
        pipe = _pipe(listener.getsockname()[1])
        got = bytearray()
        try:
            pipe.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = Answer(pipe)
            buffer = bytearray(10_000)
            with memoryview(buffer) as view, pytest.raises(ConnectionResetError):
                while True:
                    got += view[: answer.read_into(view)]
        finally:
            pipe.close()
        server.join(10)
    assert bytes(got) == BODY[: len(got)] and 100_000 < len(got) < 150_000


def test_what_is_not_http_is_refused(identity: tuple[Path, Path]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        wire = b"SSH-2.0-OpenSSH\r\n\r\n"
        server = threading.Thread(target=_serve, args=(listener, identity, wire, False), daemon=True)
        server.start()
        pipe = _pipe(listener.getsockname()[1])
        try:
            pipe.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(NetworkError):
                Answer(pipe)
        finally:
            pipe.close()
        server.join(10)
