# Provisioning exchange (secure mode, see provision.py): asks the platform for
# approval with the fleet secret. Loaded only while a device provisions.
#
# Told "pending", the device listens a while (an admin at the dashboard, or a
# pairing window, approves within seconds, and the platform sends "approved" at
# once), then hangs up and asks again later, waiting longer each time (ask_delay: 5 s
# doubling to 5 min). A device nobody approves so holds no broker connection, TLS
# session or receive buffer most of the time; asking again after an approval is
# answered "approved", so nothing is lost by not listening.
import asyncio

from iotfw import clock, provision
from iotfw.mqtt import MQTTClient

PENDING_LISTEN_S = 20  # connected after a "pending" answer, waiting for the approval
PROVISION_MAX_PACKET = 512  # answers are a few dozen bytes


async def run(dev):
    """Asks the platform for approval with the fleet secret until approved (then
    the device logs in as itself) or stopped; waiting never blocks the device."""
    creds = dev.creds
    dev.log("provisioning: asking as %s, fingerprint %s (approve only a request "
            "showing the same)" % (dev.node_id, provision.fingerprint(creds.secret)))
    # one client for the whole exchange, connected again for each session: a new one
    # per attempt may find no room in one piece after a few
    exchange = _Exchange(dev)
    try:
        while True:
            leave = await exchange.session()
            if leave or not creds.provisioning():
                return
            delay = creds.ask_delay()
            dev.log("provisioning: still pending, asking again in %d s" % delay)
            await asyncio.sleep(delay)
    finally:
        dev.prov_link = None


class _Exchange:
    def __init__(self, dev):
        self.dev = dev
        self.creds = dev.creds
        self.node = dev.node_id
        self.leave = asyncio.Event()
        self.wake = asyncio.Event()  # an answer came, or the session is over
        host, port = dev._broker_address()
        user, fleet = self.creds.login()
        self.link = MQTTClient(
            self.node, host, port, user, fleet, keepalive=dev.cfg.get("mqtt_keepalive"),
            ssl=dev._tls(), on_connect=self.on_connect, on_message=self.on_message,
            on_refused=self.on_refused, max_queue=2, backoff=dev._backoff(1.0),
            log=dev.log, max_packet=PROVISION_MAX_PACKET, rx=_lent(dev))
        self.link.subscribe(provision.response_topic(self.node), 1)

    def ask(self):
        self.link.publish(provision.request_topic(self.node),
                          provision.request_payload(self.creds.secret), 1)
        self.creds.asked()

    def on_connect(self):
        self.creds.connected()
        self.ask()

    def on_message(self, topic, payload):
        creds = self.creds
        before = creds.mode
        self.dev._save(creds.answer(payload))
        if creds.mode == provision.PENDING:
            if before != provision.PENDING:
                self.dev._show_status("pending")
                self.dev.log("provisioning: waiting for approval of %s" % self.node)
        if not creds.provisioning():
            if creds.mode == provision.OWN:
                self.dev.log("provisioning: approved, connecting as %s" % self.node)
            self.leave.set()
        self.wake.set()

    def on_refused(self, rc):
        self.dev._save(self.creds.refused(rc))
        if not self.creds.provisioning():
            self.leave.set()
            self.wake.set()
            return True
        return False

    async def session(self):
        """One connection as `provision`: asks, and waits for an answer. Returns True
        when provisioning is over (approved, stopped, or the login must change),
        False when the device hung up while pending."""
        creds = self.creds
        link = self.link
        link.user, link.password = creds.login()
        self.leave.clear()
        self.dev.prov_link = link
        runner = asyncio.create_task(link.run())
        pending_since = None  # ms, once the answer is "pending"
        try:
            while not self.leave.is_set() and not runner.done():
                self.wake.clear()
                if creds.mode == provision.PENDING:
                    if pending_since is None:
                        pending_since = clock.now_ms()
                    left = PENDING_LISTEN_S * 1000 - clock.since_ms(pending_since)
                    if left <= 0:
                        return False  # nobody approved it meanwhile
                    timeout = left / 1000
                else:
                    timeout = creds.ask_delay()
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout)
                except asyncio.TimeoutError:
                    if link.connected and creds.mode != provision.PENDING:
                        self.ask()  # no answer yet (the answer is not retained): ask again
            return True
        finally:
            await link.close(timeout=0.5)
            try:
                await runner
            except Exception:  # noqa: BLE001, S110 - it never raises; be sure
                pass
            link.reopen()


def _lent(dev):
    # the link's own receive buffer: its client does not run while the device
    # provisions, and a new one may find no room in one piece after a few exchanges
    if dev.mqtt is None:
        return None
    return dev.mqtt.receive_buffer[:PROVISION_MAX_PACKET]
