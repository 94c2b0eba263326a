# Webhook: an HTTP GET or POST to a configured URL on chosen device events. One
# request at a time; events that arrive while one is running are counted and
# dropped, so a slow endpoint never piles up tasks or memory.
import asyncio

from iotfw import jsonx


def _quote(text):
    out = []
    for ch in str(text):
        if ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ("0" <= ch <= "9") or ch in "-_.~":
            out.append(ch)
        else:
            for b in ch.encode():
                out.append("%%%02X" % b)
    return "".join(out)


def build_request(settings, node_id, event, data):
    """(method, url, body or None, headers) for one event."""
    method = settings.get("method", "POST")
    url = settings["url"]
    if method == "GET":
        sep = "&" if "?" in url else "?"
        return "GET", url + sep + "device=" + _quote(node_id) + "&event=" + _quote(event), \
            None, None
    body = jsonx.dumps({"device": node_id, "event": event, "data": data})
    return "POST", url, body, {"Content-Type": "application/json"}


class Webhook:
    def __init__(self, node_id, settings, log=None):
        self.node_id = node_id
        self.settings = settings
        self.log = log
        self.busy = False
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_status = None

    def wants(self, event):
        s = self.settings
        return bool(s.get("url")) and event in s.get("events", ())

    def notify(self, event, data=None):
        """Fires the webhook for event if configured; never blocks."""
        if not self.wants(event):
            return False
        if self.busy:
            self.dropped += 1
            return False
        self.busy = True
        asyncio.create_task(self._send(event, data))
        return True

    async def _send(self, event, data):
        try:
            method, url, body, headers = build_request(self.settings, self.node_id, event, data)
            from iotfw import httpc  # loaded only when a webhook fires

            status, _ = await httpc.request(method, url, body, headers, timeout=10, max_body=512)
            self.last_status = status
            if 200 <= status < 300:
                self.sent += 1
            else:
                self.failed += 1
        except Exception as exc:  # noqa: BLE001 - a webhook never takes the device down
            self.failed += 1
            if self.log:
                self.log("webhook failed: %r" % (exc,))
        finally:
            self.busy = False
