# Wi-Fi provisioning: a captive portal on the setup access point. A tiny asyncio
# HTTP server shows the nearby networks and a form (Wi-Fi password, MQTT broker,
# TLS and its CA certificate, the fleet provisioning secret, device name); saving validates and stores the config, then the device reboots
# into station mode. A small DNS responder points every name at the portal so
# phones open it by themselves.
import asyncio

from iotfw import provision, settings

AP_IP = "192.168.4.1"
MAX_BODY = 12288  # a PEM certificate, URL-encoded, fits
FORM_FIELDS = ("ssid", "ssid_manual", "password", "mqtt_host", "mqtt_port", "mqtt_user",
               "mqtt_password", "mqtt_tls", "mqtt_ca", "fleet_secret", "name")
# URLs that phones and laptops probe to detect a captive portal
PROBES = ("/generate_204", "/gen_204", "/hotspot-detect.html", "/connecttest.txt",
          "/ncsi.txt", "/success.txt", "/library/test/success.html", "/redirect")


def unquote_plus(text):
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    raw = bytearray()
    i = 0
    src = text.encode()
    while i < len(src):
        c = src[i]
        if c == 0x25 and i + 2 < len(src) and _is_hex(src[i + 1:i + 3]):
            raw.append(int(src[i + 1:i + 3].decode(), 16))
            i += 3
        else:
            raw.append(c)
            i += 1
    return bytes(raw).decode()


def _is_hex(pair):
    if len(pair) != 2:
        return False
    for c in pair:
        if not (48 <= c <= 57 or 65 <= c <= 70 or 97 <= c <= 102):
            return False
    return True


def parse_form(body):
    """application/x-www-form-urlencoded bytes -> dict (last value wins)."""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode()
    out = {}
    for pair in body.split("&"):
        if not pair:
            continue
        if "=" in pair:
            key, value = pair.split("=", 1)
        else:
            key, value = pair, ""
        out[unquote_plus(key)] = unquote_plus(value)
    return out


def escape(text):
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def form_to_config(form):
    """Form fields -> validated config updates. Raises settings.ConfigError."""
    ssid = form.get("ssid_manual") or form.get("ssid") or ""
    if not ssid:
        raise settings.ConfigError("choose a Wi-Fi network")
    host = form.get("mqtt_host", "").strip()
    if not host:
        raise settings.ConfigError("enter the MQTT broker host")
    use_tls = form.get("mqtt_tls", "") in ("on", "1", "true")
    port_text = form.get("mqtt_port", "").strip() or ("8883" if use_tls else "1883")
    if not port_text.isdigit():
        raise settings.ConfigError("MQTT port must be a number")
    updates = {"wifi_ssid": ssid, "wifi_password": form.get("password", ""),
               "mqtt_host": host, "mqtt_port": int(port_text),
               "mqtt_user": form.get("mqtt_user", "").strip(),
               "mqtt_password": form.get("mqtt_password", ""),
               "mqtt_tls": use_tls,
               "mqtt_ca": form.get("mqtt_ca", "").strip().replace("\r\n", "\n"),
               "name": form.get("name", "").strip()}
    if updates["mqtt_ca"]:
        updates["mqtt_ca"] += "\n"
    # the fleet secret is never shown again: an empty field keeps the stored one
    fleet = form.get("fleet_secret", "").strip()
    if fleet:
        updates["fleet_secret"] = fleet
    settings.validate(updates)
    return updates


def fingerprint_note(cfg):
    """The fingerprint an admin compares before approving this device (secure mode)."""
    secret = cfg.get("provision_secret") or ""
    if not secret or cfg.get("mqtt_user"):
        return ""
    return ("<p>Provisioning fingerprint <b><code>%s</code></b>: approve this device in the "
            "dashboard only if its request shows the same.</p>"
            % escape(provision.fingerprint(secret)))


def render_page(networks, cfg, node_id, message="", error=""):
    opts = []
    for ssid, rssi in networks:
        sel = " selected" if ssid == cfg.get("wifi_ssid") else ""
        opts.append('<option value="%s"%s>%s (%d dBm)</option>' % (
            escape(ssid), sel, escape(ssid), rssi))

    def field(label, name, value="", kind="text"):
        return ('<label>%s<input name="%s" type="%s" value="%s"></label>'
                % (label, name, kind, escape(value)))

    note = ""
    if error:
        note = '<p class="err">%s</p>' % escape(error)
    elif message:
        note = '<p class="ok">%s</p>' % escape(message)
    return "".join([
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">",
        "<title>IoT Platform setup</title><style>",
        "body{font-family:sans-serif;max-width:28em;margin:1em auto;padding:0 1em}",
        "label{display:block;margin:.6em 0}input,select{width:100%;padding:.4em}",
        ".err{color:#b00}.ok{color:#080}button{padding:.6em 2em;margin-top:1em}",
        "</style></head><body><h1>IoT Platform setup</h1>",
        "<p>Device <b>%s</b></p>" % escape(node_id), fingerprint_note(cfg), note,
        "<form method=\"post\" action=\"/save\">",
        "<label>Wi-Fi network<select name=\"ssid\"><option value=\"\">choose...</option>",
        "".join(opts), "</select></label>",
        field("or type its name", "ssid_manual"),
        field("Wi-Fi password", "password", "", "password"),
        field("MQTT broker host", "mqtt_host", cfg.get("mqtt_host") or ""),
        field("MQTT port", "mqtt_port", str(cfg.get("mqtt_port") or 1883), "number"),
        field("MQTT user", "mqtt_user", cfg.get("mqtt_user") or ""),
        field("MQTT password", "mqtt_password", "", "password"),
        "<label><input type=\"checkbox\" name=\"mqtt_tls\" value=\"on\" style=\"width:auto\"%s>"
        " TLS (mqtts, port 8883)</label>" % (" checked" if cfg.get("mqtt_tls") else ""),
        "<label>Broker CA certificate (PEM; pins TLS to it)<textarea name=\"mqtt_ca\" rows=\"4\""
        " style=\"width:100%%\">%s</textarea></label>" % escape(cfg.get("mqtt_ca") or ""),
        field("Fleet provisioning secret (secure mode; empty keeps the stored one)",
              "fleet_secret", "", "password"),
        field("Device name", "name", cfg.get("name") or ""),
        "<button type=\"submit\">Save and restart</button></form></body></html>",
    ])


def dns_response(query, ip):
    """Answers any DNS A query with ip; None for what is not a standard query."""
    if len(query) < 12 or query[2] & 0x80 or (query[2] >> 3) & 0x0F != 0:
        return None
    if query[4:6] != b"\x00\x01":
        return None
    # skip the question name
    pos = 12
    while pos < len(query) and query[pos] != 0:
        pos += query[pos] + 1
    end = pos + 5
    if end > len(query):
        return None
    question = query[12:end]
    header = query[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00"
    addr = bytes([int(x) for x in ip.split(".")])
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + addr
    return header + question + answer


class Portal:
    """HTTP server of the captive portal.

    on_saved() is called after a valid form was stored.
    """

    def __init__(self, hal, cfg, node_id, on_saved, log=None, new_secret=None):
        self.hal = hal
        self.new_secret = new_secret  # () -> a provisioning secret (secure mode)
        self.cfg = cfg
        self.node_id = node_id
        self.on_saved = on_saved
        self.log = log
        self.server = None
        self.saved = False

    async def start(self, host="0.0.0.0", port=80):  # noqa: S104 - the AP interface
        self.server = await asyncio.start_server(self._client, host, port)
        return self.server

    async def stop(self):
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def _networks(self):
        try:
            nets = self.hal.wifi_scan()
        except Exception:  # noqa: BLE001
            nets = []
        seen = {}
        for ssid, rssi in nets:
            if ssid and (ssid not in seen or rssi > seen[ssid]):
                seen[ssid] = rssi
        return sorted(seen.items(), key=lambda item: -item[1])

    async def _client(self, reader, writer):
        try:
            await asyncio.wait_for(self._serve(reader, writer), 15)
        except Exception as exc:  # noqa: BLE001 - one bad client never stops the portal
            if self.log:
                self.log("portal client error: %r" % (exc,))
        try:
            writer.close()
            await writer.wait_closed()
        except Exception:  # noqa: BLE001
            pass

    async def _serve(self, reader, writer):
        line = await reader.readline()
        parts = line.decode().split(" ")
        if len(parts) < 2:
            return
        method, path = parts[0], parts[1].split("?", 1)[0]
        length = 0
        while True:
            header = await reader.readline()
            if not header or header in (b"\r\n", b"\n"):
                break
            text = header.decode().lower()
            if text.startswith("content-length:"):
                value = text[15:].strip()
                length = int(value) if value.isdigit() else 0
        if method == "POST" and path == "/save":
            if length > MAX_BODY:
                await self._send(writer, 413, "text/plain", "form too large")
                return
            body = await reader.readexactly(length) if length else b""
            try:
                updates = form_to_config(parse_form(body))
                self._provisioning_secret(updates)
                self.cfg.update(updates)
            except (settings.ConfigError, ValueError) as exc:
                page = render_page(self._networks(), self.cfg.data, self.node_id, error=str(exc))
                await self._send(writer, 400, "text/html", page)
                return
            self.saved = True
            await self._send(writer, 200, "text/html",
                             "<!DOCTYPE html><html><body><h1>Saved</h1><p>The device restarts "
                             "and joins %s.</p>%s</body></html>"
                             % (escape(updates["wifi_ssid"]), fingerprint_note(self.cfg.data)))
            self.on_saved()
            return
        if method == "GET" and path == "/":
            page = render_page(self._networks(), self.cfg.data, self.node_id)
            await self._send(writer, 200, "text/html", page)
            return
        # captive-portal probes and anything else: send the browser to the form
        await self._send(writer, 302, "text/plain", "", {"Location": "http://%s/" % AP_IP})

    def _provisioning_secret(self, updates):
        """With a fleet secret and no credentials of its own, the device's provisioning
        secret is made now, so this page can show its fingerprint before it asks."""
        cfg = self.cfg.data
        fleet = updates.get("fleet_secret") or cfg.get("fleet_secret")
        if not fleet or updates.get("mqtt_user") or self.new_secret is None:
            return
        if len(cfg.get("provision_secret") or "") >= provision.MIN_SECRET:
            return
        updates["provision_secret"] = self.new_secret()

    async def _send(self, writer, status, ctype, body, headers=None):
        reason = {200: "OK", 302: "Found", 400: "Bad Request", 413: "Payload Too Large"}
        data = body.encode()
        head = ["HTTP/1.0 %d %s" % (status, reason.get(status, "")),
                "Content-Type: %s; charset=utf-8" % ctype,
                "Content-Length: %d" % len(data), "Cache-Control: no-store",
                "Connection: close"]
        if headers:
            for key in headers:
                head.append(key + ": " + headers[key])
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()


async def dns_server(ip=AP_IP, stop=None):
    """Answers every DNS query with the portal's address (runs on the device)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("0.0.0.0", 53))  # noqa: S104
    try:
        while stop is None or not stop.is_set():
            try:
                query, addr = sock.recvfrom(512)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            reply = dns_response(query, ip)
            if reply:
                try:
                    sock.sendto(reply, addr)
                except OSError:
                    pass
    finally:
        sock.close()
