# Minimal asyncio HTTP/1.0 client over asyncio streams (MicroPython and CPython):
# enough for OTA downloads and webhooks. HTTP/1.0 keeps servers from chunking.
import asyncio


class HTTPError(Exception):
    pass


def parse_url(url):
    """'http://host:port/path?q' -> (ssl, host, port, path)."""
    if url.startswith("http://"):
        ssl, rest, port = False, url[7:], 80
    elif url.startswith("https://"):
        ssl, rest, port = True, url[8:], 443
    else:
        raise HTTPError("unsupported URL: " + url)
    slash = rest.find("/")
    hostport, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    if hostport.startswith("["):
        end = hostport.find("]")
        host = hostport[1:end]
        if hostport[end + 1:end + 2] == ":":
            port = int(hostport[end + 2:])
    elif ":" in hostport:
        host, port_text = hostport.rsplit(":", 1)
        if not port_text.isdigit():
            raise HTTPError("bad port in URL")
        port = int(port_text)
    else:
        host = hostport
    if not host:
        raise HTTPError("no host in URL")
    return ssl, host, port, path


async def open_request(method, url, body=None, headers=None, timeout=15):
    """Sends a request; returns (status, headers, reader, writer).

    The caller reads the body from reader and closes writer.
    """
    ssl, host, port, path = parse_url(url)
    if ssl:
        opener = asyncio.open_connection(host, port, ssl=True)
    else:
        opener = asyncio.open_connection(host, port)
    reader, writer = await asyncio.wait_for(opener, timeout)
    try:
        lines = [method + " " + path + " HTTP/1.0", "Host: " + host,
                 "User-Agent: iotp-firmware", "Connection: close"]
        if headers:
            for key in headers:
                lines.append(key + ": " + headers[key])
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            lines.append("Content-Length: " + str(len(body)))
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        if body:
            writer.write(body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        parts = status_line.decode().split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HTTPError("bad HTTP status line")
        status = int(parts[1])
        resp_headers = {}
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line or line in (b"\r\n", b"\n"):
                break
            text = line.decode().strip()
            colon = text.find(":")
            if colon > 0:
                resp_headers[text[:colon].strip().lower()] = text[colon + 1:].strip()
        return status, resp_headers, reader, writer
    except BaseException:
        await close(writer)
        raise


async def close(writer):
    try:
        writer.close()
        await writer.wait_closed()
    except Exception:  # noqa: BLE001
        pass


async def request(method, url, body=None, headers=None, timeout=15, max_body=4096):
    """Whole request; returns (status, body bytes cut at max_body)."""
    status, _, reader, writer = await open_request(method, url, body, headers, timeout)
    try:
        data = b""
        while len(data) < max_body:
            chunk = await asyncio.wait_for(reader.read(max_body - len(data)), timeout)
            if not chunk:
                break
            data += chunk
        return status, data
    finally:
        await close(writer)


async def download(url, write, progress=None, timeout=30, chunk=1024, max_size=None,
                   buf=None):
    """Streams a GET response body into write(bytes); returns the size.

    progress(done, total_or_None) is called after each chunk. buf: a buffer to read
    into, when the stream can (MicroPython's): write() then gets views of it, and
    the download allocates nothing per chunk.
    """
    status, headers, reader, writer = await open_request("GET", url, timeout=timeout)
    try:
        if status != 200:
            raise HTTPError("download failed: HTTP %d" % status)
        total = headers.get("content-length")
        total = int(total) if total and total.isdigit() else None
        if max_size is not None and total is not None and total > max_size:
            raise HTTPError("download too large")
        done = 0
        readinto = getattr(reader, "readinto", None) if buf is not None else None
        view = memoryview(buf) if readinto is not None else None
        # with a Content-Length the body ends there: no waiting for the server to close
        # (a TLS server may take its time over that)
        while total is None or done < total:
            want = chunk if total is None else min(chunk, total - done)
            if view is not None:
                room = view[:min(len(view), want)]
                got = await asyncio.wait_for(readinto(room), timeout)
                while got is None:  # TLS: a record not whole yet (readinto does not wait)
                    got = await asyncio.wait_for(readinto(room), timeout)
                data = room[:got]
            else:  # CPython's StreamReader has no readinto
                data = await asyncio.wait_for(reader.read(want), timeout)
            if not data:
                break
            done += len(data)
            if max_size is not None and done > max_size:
                raise HTTPError("download too large")
            write(data)
            if progress:
                progress(done, total)
        if total is not None and done != total:
            raise HTTPError("download truncated")
        return done
    finally:
        await close(writer)
