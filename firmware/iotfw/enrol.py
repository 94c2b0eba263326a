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
    while True:
        leave = await _session(dev)
        if leave or not creds.provisioning():
            return
        delay = creds.ask_delay()
        dev.log("provisioning: still pending, asking again in %d s" % delay)
        await asyncio.sleep(delay)


async def _session(dev):
    """One connection as `provision`: asks, and waits for an answer. Returns True
    when provisioning is over (approved, stopped, or the login must change), False
    when the device hung up while pending."""
    creds = dev.creds
    node = dev.node_id
    host, port = dev._broker_address()
    leave = asyncio.Event()
    wake = asyncio.Event()  # an answer came, or the session is over
    user, fleet = creds.login()

    def ask():
        link.publish(provision.request_topic(node), provision.request_payload(creds.secret), 1)
        creds.asked()

    def on_connect():
        creds.connected()
        ask()

    def on_message(topic, payload):
        before = creds.mode
        dev._save(creds.answer(payload))
        if creds.mode == provision.PENDING:
            if before != provision.PENDING:
                dev._show_status("pending")
                dev.log("provisioning: waiting for approval of %s" % node)
        if not creds.provisioning():
            if creds.mode == provision.OWN:
                dev.log("provisioning: approved, connecting as %s" % node)
            leave.set()
        wake.set()

    def on_refused(rc):
        dev._save(creds.refused(rc))
        if not creds.provisioning():
            leave.set()
            wake.set()
            return True
        return False

    link = MQTTClient(
        node, host, port, user, fleet, keepalive=dev.cfg.get("mqtt_keepalive"),
        ssl=dev._tls(), on_connect=on_connect, on_message=on_message,
        on_refused=on_refused, max_queue=2, backoff=dev._backoff(1.0), log=dev.log,
        max_packet=PROVISION_MAX_PACKET, rx=_lent(dev))
    link.subscribe(provision.response_topic(node), 1)
    dev.prov_link = link
    runner = asyncio.create_task(link.run())
    pending_since = None  # ms, once the answer is "pending"
    try:
        while not leave.is_set() and not runner.done():
            wake.clear()
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
                await asyncio.wait_for(wake.wait(), timeout)
            except asyncio.TimeoutError:
                if link.connected and creds.mode != provision.PENDING:
                    ask()  # no answer yet (the answer is not retained): ask again
        return True
    finally:
        dev.prov_link = None
        await link.close(timeout=0.5)
        try:
            await runner
        except Exception:  # noqa: BLE001, S110 - it never raises; be sure
            pass


def _lent(dev):
    # the link's own receive buffer: its client does not run while the device
    # provisions, and a new one may find no room in one piece after a few exchanges
    if dev.mqtt is None:
        return None
    return dev.mqtt.receive_buffer[:PROVISION_MAX_PACKET]
