# Provisioning exchange (secure mode, see provision.py): asks the platform for
# approval with the fleet secret. Loaded only while a device provisions.
import asyncio

from iotfw import provision
from iotfw.mqtt import MQTTClient


async def run(dev):
    """Asks the platform for approval with the fleet secret until approved (then
    the device logs in as itself) or stopped; waiting never blocks the device."""
    creds = dev.creds
    node = dev.node_id
    host, port = dev._broker_address()
    leave = asyncio.Event()
    user, fleet = creds.login()
    dev.log("provisioning: asking as %s, fingerprint %s (approve only a request "
            "showing the same)" % (node, provision.fingerprint(creds.secret)))

    def ask():
        link.publish(provision.request_topic(node), provision.request_payload(creds.secret), 1)
        creds.asked()

    def on_connect():
        creds.connected()
        ask()

    def on_message(topic, payload):
        before = creds.mode
        dev._save(creds.answer(payload))
        if creds.mode != before and creds.mode == provision.PENDING:
            dev._show_status("pending")
            dev.log("provisioning: waiting for approval of %s" % node)
        if not creds.provisioning():
            if creds.mode == provision.OWN:
                dev.log("provisioning: approved, connecting as %s" % node)
            leave.set()

    def on_refused(rc):
        dev._save(creds.refused(rc))
        if not creds.provisioning():
            leave.set()
            return True
        return False

    link = MQTTClient(
        node, host, port, user, fleet, keepalive=dev.cfg.get("mqtt_keepalive"),
        ssl=dev._tls(), on_connect=on_connect, on_message=on_message,
        on_refused=on_refused, max_queue=2, backoff=dev._backoff(1.0), log=dev.log)
    link.subscribe(provision.response_topic(node), 1)
    dev.prov_link = link
    runner = asyncio.create_task(link.run())
    try:
        while not leave.is_set() and not runner.done():
            try:
                await asyncio.wait_for(leave.wait(), creds.ask_delay())
            except asyncio.TimeoutError:
                if link.connected:
                    ask()  # the answer is not retained: ask again now and then
    finally:
        dev.prov_link = None
        await link.close(timeout=0.5)
        try:
            await runner
        except Exception:  # noqa: BLE001, S110 - it never raises; be sure
            pass
