# The device's MQTT link: which broker and account, TLS, keeping the connection up
# with the right credentials, and what goes out on every connect. Part of Device
# (device.py); the provisioning exchange itself is in enrol.py, loaded only while
# the device provisions.
import asyncio

from iotfw import ota, payloads, provision, unload
from iotfw.backoff import Backoff
from iotfw.mqtt import MQTTClient

REFUSAL_BACKOFF_BASE_S = 1.0  # pause after a refused login before the next account


class Link:
    def _broker_address(self):
        if self.broker is not None:
            return self.broker[0], self.broker[1]
        cfg = self.cfg.data
        return cfg["mqtt_host"], cfg["mqtt_port"]

    def _credential_settings(self):
        cfg = self.cfg.data
        if self.broker is not None and self.broker[2] is not None:
            # credentials handed in (simulator --broker mqtt://user:pass@...) win
            view = dict(cfg)
            view["mqtt_user"], view["mqtt_password"] = self.broker[2], self.broker[3] or ""
            return view
        return cfg

    def _tls(self):
        """ssl= for the MQTT clients: False, True, or a context pinning mqtt_ca."""
        cfg = self.cfg.data
        if not cfg["mqtt_tls"]:
            return False
        if self._tls_ctx is None:
            from iotfw import tls

            self._tls_ctx = tls.client_context(cfg["mqtt_ca"] or None)
        return self._tls_ctx

    def _save(self, updates):
        if updates:
            try:
                self.cfg.update(updates)
            except Exception as exc:  # noqa: BLE001 - keep going with what is in memory
                self.log("storing credentials failed: %r" % (exc,))

    def _new_secret(self):
        rnd = getattr(self.hal, "random_bytes", None)
        if rnd is None:
            import os

            rnd = os.urandom
        return provision.new_secret(rnd)

    def _backoff(self, base):
        rand = self.rand
        return Backoff(base=base, cap=60.0, rand=rand.random if rand else None)

    def _start_mqtt(self):
        cfg = self.cfg.data
        host, port = self._broker_address()
        self.creds = provision.Credentials(self.node_id, self._new_secret)
        self._save(self.creds.configure(self._credential_settings()))
        user, password = self.creds.login()
        self.mqtt = MQTTClient(
            self.node_id, host, port, user, password, keepalive=cfg["mqtt_keepalive"],
            will=(self._t["status"], b"offline", 1, True), ssl=self._tls(),
            on_connect=self._on_connect, on_message=self._on_message,
            backoff=self._backoff(1.0), log=self.log, on_refused=self._on_refused,
            views=True)  # commands are parsed as they arrive (take_command)
        self.mqtt.subscribe(self._t["commands"], 1)
        self._refusal_backoff = self._backoff(REFUSAL_BACKOFF_BASE_S)
        self._spawn(self._link(), critical=True)

    async def _link(self):
        """Keeps the device's MQTT link up with the right account: its own
        credentials, or provisioning with the fleet secret first. Never returns (a
        stopped device keeps measuring and automating offline)."""
        creds = self.creds
        while True:
            if creds.stopped():
                self._show_status("stopped")
                self.log("MQTT stopped: " + creds.reason)
                self._relink.clear()
                await self._relink.wait()  # new settings (or a reboot) start over
                continue
            if creds.provisioning():
                self._show_status("provisioning")
                from iotfw import enrol

                await enrol.run(self)
                enrol = None
                unload("enrol")  # provisioning is over (or waits): its code goes
            else:
                m = self.mqtt
                m.user, m.password = creds.login()
                await m.run()  # returns when the login was refused and must change
                if m.closed:  # the device is shutting down
                    return
            if not creds.stopped() and creds.refusals:
                await asyncio.sleep(self._refusal_backoff.next_delay())

    def _on_refused(self, rc):
        """The device's own (or anonymous, or probing) login was refused."""
        creds = self.creds
        was = creds.login()
        self._save(creds.refused(rc))
        return creds.stopped() or creds.provisioning() or creds.login() != was

    def _credentials_ok(self):
        self._save(self.creds.connected())
        self._refusal_backoff.reset()
        self._show_status("ok")

    def _show_status(self, what):
        """ok, provisioning, pending or stopped: on a status LED where the HAL has one."""
        self.link_status = what
        show = getattr(self.hal, "show_status", None)
        if show is not None:
            try:
                show(what)
            except Exception:  # noqa: BLE001, S110 - a LED never stops the device
                pass

    def _on_connect(self):
        m = self.mqtt
        self._credentials_ok()
        # info first: a platform registers a new device from the first message it
        # sees, and only info carries the suggested name
        m.publish(self._t["info"], payloads.encode(self.info()), 1, True)
        m.publish(self._t["status"], b"online", 1, True)
        m.publish(self._t["state"], payloads.encode(self.state()), 1, True)
        # results of an OTA update that finished (or rolled back) across a reboot
        if self.ota_state.get("trial"):
            ota.confirm(self.ota_state)
            ota.save(self.hal, self.ota_state)
        for res in ota.take_results(self.hal, self.ota_state):
            if res["status"] == "ok":
                self.ack(payloads.ack_ok(res["id"], {"version": res["version"]}))
            else:
                self.ack(payloads.ack_error(res["id"], res["error"]))
        self.webhook.notify("online", {"firmware": self.version})
        if m.connects == 1:
            self.webhook.notify("boot", {"firmware": self.version})

    def _on_message(self, topic, payload):
        if topic != self._t["commands"]:
            self.ignored_messages += 1
            return
        self.take_command(payload)
