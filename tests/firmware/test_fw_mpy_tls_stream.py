"""A download over TLS whose records arrive in pieces, on the real MicroPython unix port:
MicroPython's Stream.readinto returns None while a TLS record is not whole, and the
firmware's readers (the OTA download's, the MQTT link's) must wait for the rest rather
than take the buffer as it was. The server (CPython) sends the response through a
proxy that forwards it 100 bytes at a time."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path

from iotp.simulator import firmware
from iotp.simulator.mpy import micropython_command
from tests.firmware.mpy_support import need_micropython
from tests.integration.test_broker_acl_stack import _make_ca_and_cert

BODY = bytes(range(256)) * 80  # 20,480 bytes: a couple of TLS records

CLIENT = """
import asyncio, hashlib, binascii, ssl, sys
sys.path.insert(0, "{firmware}")
from iotfw import httpc

opener = asyncio.open_connection


def unverified(host, port, ssl=None):
    # the device checks an update by its hash and signature, not by the server's
    # certificate; this test's server has a certificate of its own CA
    context = None
    if ssl:
        import ssl as _ssl
        context = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
        context.verify_mode = _ssl.CERT_NONE
    return opener(host, port, ssl=context)


httpc.asyncio.open_connection = unverified


async def main():
    sha = hashlib.sha256()
    size = await httpc.download("https://127.0.0.1:{port}/fw.bin", sha.update,
                                buf=bytearray(1024))
    print("RESULT", size, binascii.hexlify(sha.digest()).decode())


asyncio.run(main())
"""


async def _serve(cert: Path, key: Path) -> asyncio.Server:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)


async def _dribbling_proxy(target: int) -> asyncio.Server:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, piece: int) -> None:
        try:
            while data := await src.read(4096):
                for i in range(0, len(data), piece):
                    dst.write(data[i : i + piece])
                    await dst.drain()
                    await asyncio.sleep(0.002)
        finally:
            dst.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(reader, up_writer, 4096), pipe(up_reader, writer, 100))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_a_download_over_tls_in_pieces_is_whole(tmp_path: Path) -> None:
    need_micropython()
    _, cert, key = _make_ca_and_cert(tmp_path)
    server = await _serve(cert, key)
    proxy = await _dribbling_proxy(server.sockets[0].getsockname()[1])
    try:
        script = tmp_path / "client.py"
        script.write_text(
            CLIENT.format(firmware=firmware.firmware_dir(), port=proxy.sockets[0].getsockname()[1])
        )
        proc = await asyncio.create_subprocess_exec(
            micropython_command(),
            str(script),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        proxy.close()
        server.close()
    text = out.decode(errors="replace")
    result = next((line.split() for line in text.splitlines() if line.startswith("RESULT")), None)
    assert result is not None, text
    assert int(result[1]) == len(BODY), text
    assert result[2] == hashlib.sha256(BODY).hexdigest()
