# Maintenance, the rarely used parts of the device: the setup portal, the Wi-Fi
# station that falls back to it, and OTA updates with their trial. Loaded only when
# one of them is needed.
import asyncio

from iotfw import identity, ota, payloads, unload

PORTAL_RETRY_S = 600  # with stored credentials, retry station mode this often


async def station(dev):
    from iotfw.wifi import Station

    await Station(dev.hal, dev.cfg, dev.log).keep()
    # too many failures: fall back to the setup access point
    dev.request_reboot("portal")


async def run_portal(dev, retry_after=None):
    from iotfw.portal import Portal, dns_server

    hal = dev.hal
    ssid = identity.setup_ssid(hal.mac())
    ip = await hal.ap_start(ssid)
    dev.log("setup mode: join Wi-Fi %s and open http://%s/" % (ssid, ip))
    portal = Portal(hal, dev.cfg, dev.node_id,
                    lambda: dev.request_reboot("provisioned"), dev.log,
                    new_secret=dev._new_secret)
    await portal.start(port=getattr(hal, "portal_port", 80))
    stop_dns = asyncio.Event()
    dns = None
    if getattr(hal, "portal_dns", True):
        dns = asyncio.create_task(dns_server(ip, stop_dns))
    dev._done = asyncio.Event()
    dev._reason = None
    waited = 0
    try:
        while not dev._done.is_set():
            hal.wdt_feed()
            await asyncio.sleep(1)
            waited += 1
            if retry_after and waited >= retry_after and not portal.saved:
                dev.request_reboot("portal_timeout")
        await asyncio.sleep(1)  # let the browser get its answer
    finally:
        stop_dns.set()
        if dns is not None:
            dns.cancel()
        await portal.stop()
        hal.ap_stop()


async def run_ota(dev, cid, opts):
    hal = dev.hal

    def progress(stage, percent):
        dev.ack(payloads.ack_progress(cid, stage, percent))
        # the heap as the update goes: the download streams to flash, so it stays flat
        free = hal.free_mem()
        if free is not None:
            dev.log("mem ota %s %s free %d" % (stage, "-" if percent is None else percent,
                                               free))

    import gc

    from iotfw import update

    gc.collect()
    try:
        # downloaded and staged now; installed by the next boot, before the firmware starts
        await update.download(hal, dev.ota_state, cid, opts, progress, buf=dev.ota_buf)
    except ota.OTAError as exc:
        failed = str(exc)
    except Exception as exc:  # noqa: BLE001
        failed = "update failed: %r" % (exc,)
    else:
        await asyncio.sleep(0.2)
        dev.request_reboot("ota")
        return
    update = None
    for name in ("update", "httpc"):
        unload(name)  # a refused update leaves the heap as it found it
    gc.collect()
    dev.ota_busy = False
    dev.ack(payloads.ack_error(cid, failed))


async def ota_trial_timer(dev, timeout):
    await asyncio.sleep(timeout)
    if dev.ota_state.get("trial"):
        dev.log("new firmware did not reach the broker in %ss: rolling back" % timeout)
        ota.rollback(dev.ota_state)
        ota.save(dev.hal, dev.ota_state)
        dev.request_reboot("rollback")
