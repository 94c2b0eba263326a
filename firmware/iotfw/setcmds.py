# The commands that change settings (set_config, automation, webhook) or start an
# update (ota). Loaded for one of them and unloaded after (see handlers.py): with the
# config checks they load, they are larger than the commands the device runs often.
import asyncio

from iotfw import automation, commands, settings
from iotfw.commands import CommandError
from iotfw.handlers import ASYNC


def run(dev, cid, name, params):
    if name == "set_config":
        return set_config(dev, cid, params)
    if name == "automation":
        return automation_cmd(dev, cid, params)
    if name == "webhook":
        return webhook(dev, cid, params)
    return ota(dev, cid, params)


def set_config(dev, cid, params):
    if not params:
        raise CommandError(cid, "no config keys given")
    try:
        changed = dev.cfg.update(params)
    except settings.ConfigError as exc:
        raise CommandError(cid, str(exc))
    apply_config(dev, changed)
    return settings.public(dev.cfg.data, changed)


def apply_config(dev, changed):
    cfg = dev.cfg.data
    if "automation" in changed:
        dev.automation.update_settings(cfg["automation"])
    if "webhook" in changed:
        dev.webhook.settings = cfg["webhook"]
    if "interval" in changed or "name" in changed or "automation" in changed:
        dev.publish_state()
        if dev.mqtt is not None and dev.mqtt.connected:
            dev.publish("info", dev.info(), retain=True)
    reconnect = [k for k in changed if k in settings.RECONNECT_KEYS]
    if reconnect and dev.mqtt is not None:
        m = dev.mqtt
        dev._tls_ctx = None
        m.host, m.port = dev._broker_address()
        m.ssl, m.keepalive = dev._tls(), cfg["mqtt_keepalive"]
        creds_keys = ("mqtt_user", "mqtt_password", "fleet_secret")
        if [k for k in changed if k in creds_keys]:
            dev._save(dev.creds.configure(dev._credential_settings()))
            dev._relink.set()
        m.user, m.password = dev.creds.login()
        dev._spawn(_reconnect_later(dev))


async def _reconnect_later(dev):
    await asyncio.sleep(0.5)  # the ack goes out first
    if dev.creds is not None and (dev.creds.provisioning() or dev.creds.stopped()):
        dev.mqtt.halt()  # another account now: the link loop takes over
    else:
        dev.mqtt.kill()


def automation_cmd(dev, cid, params):
    try:
        new = automation.validate(params, dev.automation.settings)
        dev.cfg.update({"automation": new})
    except (automation.AutomationError, settings.ConfigError) as exc:
        raise CommandError(cid, str(exc))
    dev.automation.update_settings(new)
    dev.publish_state()
    return dict(new)


def webhook(dev, cid, params):
    try:
        merged = settings.validate_webhook(params, dev.cfg.get("webhook"))
        dev.cfg.update({"webhook": merged})
    except settings.ConfigError as exc:
        raise CommandError(cid, str(exc))
    dev.webhook.settings = merged
    return {}


def ota(dev, cid, params):
    opts = commands.ota_params(cid, params)
    if dev.ota_busy:
        raise CommandError(cid, "an update is already in progress")
    dev.ota_busy = True
    from iotfw import maint

    dev._spawn(maint.run_ota(dev, cid, opts))
    return ASYNC
