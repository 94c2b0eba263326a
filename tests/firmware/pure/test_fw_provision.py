# The credential state machine (iotfw/provision.py) and the TLS helpers (iotfw/tls.py):
# pure, so they run under pytest and inside MicroPython.
from fwtest_helpers import MemoryStorage, raises
from iotfw import jsonx, provision, settings, tls

NODE = "A4CF12B3C4D5"
FLEET = "fleet-secret-0123456789"
FINGERPRINT_VECTOR = "B2BA-7FB3-4363"  # sha256sum of the text, first 12 hex digits

# A self-signed test CA (EC P-256), made for these tests only.
CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBgzCCASmgAwIBAgIUEtb9pJbbYehULykHLlWDUXzUaUAwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMaW90cCB0ZXN0IENBMB4XDTI2MTEyNzIwNDg0NloXDTM2MTEy
NDIwNDg0NlowFzEVMBMGA1UEAwwMaW90cCB0ZXN0IENBMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAErbeZM7l3HI1oQh0/30u3v0YPLIRF5dwKtbOC0k3UV3bY0ZHH
gg3v3AIDR692Jm35PsqPML/haBzlvimWFUNzEaNTMFEwHQYDVR0OBBYEFLCJnvbY
7TdtMfy5VOwMXUOR6da9MB8GA1UdIwQYMBaAFLCJnvbY7TdtMfy5VOwMXUOR6da9
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhANbQEztV8ciN1cj9
xzcJMYlHfQMbnNnEwyEZWkrzXW/OAiBdbsRE3pWxQqpwpLK332Ptz+HOi+UAFKYr
lkFauLH4NQ==
-----END CERTIFICATE-----
"""


def answer(status, error=None):
    body = {"status": status}
    if error is not None:
        body["error"] = error
    return jsonx.dumps(body).encode()


def machine(cfg, secrets=None):
    made = []
    pool = list(secrets or ["s" * 48, "t" * 48, "u" * 48])

    def make():
        made.append(pool.pop(0))
        return made[-1]

    creds = provision.Credentials(NODE, make)
    return creds, creds.configure(cfg), made


def test_new_secret_is_hex_of_random_bytes():
    secret = provision.new_secret(lambda n: bytes(range(n)))
    assert len(secret) == 2 * provision.SECRET_BYTES
    assert secret.startswith("000102")
    assert provision.MIN_SECRET <= len(secret) <= provision.MAX_SECRET


def test_fingerprint_is_the_one_the_platform_shows():
    # the same vector as tests/unit/test_identifiers.py (services.credentials.fingerprint)
    assert provision.fingerprint("device-secret-0123456789abcdef") == FINGERPRINT_VECTOR
    assert provision.fingerprint("device-secret-0123456789abcdeg") != FINGERPRINT_VECTOR


def test_modes_from_settings():
    creds, saved, _ = machine({})
    assert creds.mode == provision.OPEN
    assert saved is None
    assert creds.login() == (None, None)
    creds, saved, _ = machine({"mqtt_user": NODE, "mqtt_password": "p" * 20, "fleet_secret": FLEET})
    assert creds.mode == provision.OWN
    assert saved is None
    assert creds.login() == (NODE, "p" * 20)


def test_first_boot_generates_and_stores_a_secret_then_asks():
    creds, saved, made = machine({"fleet_secret": FLEET})
    assert creds.mode == provision.REQUEST
    assert saved == {"provision_secret": made[0]}  # stored before it is ever sent
    assert creds.provisioning()
    assert creds.login() == (provision.PROVISION_USER, FLEET)
    assert provision.request_topic(NODE) == "provision/" + NODE + "/request"
    assert provision.response_topic(NODE) == "provision/" + NODE + "/response"
    assert jsonx.loads(provision.request_payload(creds.secret)) == {"secret": made[0]}
    # a reboot while pending asks with the same secret
    again, saved, made2 = machine({"fleet_secret": FLEET, "provision_secret": made[0]})
    assert again.secret == made[0]
    assert made2 == []


def test_pending_then_approved_gives_own_credentials():
    creds, _, made = machine({"fleet_secret": FLEET})
    assert creds.connected() is None
    assert creds.answer(answer("pending")) is None
    assert creds.mode == provision.PENDING
    assert creds.provisioning()
    # waiting: asks again with a growing, capped delay
    delays = []
    for _ in range(10):
        delays.append(creds.ask_delay())
        creds.asked()
    assert delays[:4] == [5, 10, 20, 40]
    assert delays[-1] == provision.ASK_CAP_S
    saved = creds.answer(answer("approved"))
    assert saved == {"mqtt_user": NODE, "mqtt_password": made[0], "provision_secret": ""}
    assert creds.mode == provision.OWN
    assert not creds.provisioning()
    assert creds.login() == (NODE, made[0])
    assert creds.answer(answer("approved")) is None  # a late duplicate changes nothing


def test_revoked_and_rejected_stop():
    creds, _, _ = machine({"fleet_secret": FLEET})
    creds.answer(answer("revoked"))
    assert creds.stopped()
    assert "revoked" in creds.reason
    assert not creds.provisioning()
    creds, _, _ = machine({"fleet_secret": FLEET})
    creds.answer(answer("rejected", "device 'X' already has credentials"))
    assert creds.stopped()
    assert "already has credentials" in creds.reason
    # the platform's "internal error, ask again later" is not final
    creds, _, _ = machine({"fleet_secret": FLEET})
    creds.answer(answer("rejected", "internal error, ask again later"))
    assert creds.mode == provision.REQUEST


def test_bad_answers_are_counted_and_ignored():
    creds, _, _ = machine({"fleet_secret": FLEET})
    for payload in (b"{not json", b"[1]", b'{"status": 3}', b'{"status": "maybe"}', b"\xff"):
        assert creds.answer(payload) is None
    assert creds.bad_answers == 5
    assert creds.mode == provision.REQUEST


def test_wrong_fleet_secret_stops_after_repeated_refusals():
    creds, _, made = machine({"fleet_secret": "wrong-fleet-secret-000"})
    logins = []
    while not creds.stopped():
        logins.append(creds.login())
        creds.refused(5)
        assert len(logins) <= provision.GIVE_UP_AFTER
    assert len(logins) == provision.GIVE_UP_AFTER
    # provision and a probe as itself (approved meanwhile?) take turns
    assert logins[0] == (provision.PROVISION_USER, "wrong-fleet-secret-000")
    assert logins[1] == (NODE, made[0])
    assert "fleet secret" in creds.reason
    assert creds.login() == (None, None)  # stopped: no login at all


def test_approved_while_away_is_found_by_the_probe():
    creds, _, made = machine({"fleet_secret": FLEET})
    creds.answer(answer("pending"))
    creds.refused(5)  # the broker refuses `provision` for an approved id
    assert not creds.provisioning()
    assert creds.login() == (NODE, made[0])
    saved = creds.connected()
    assert saved == {"mqtt_user": NODE, "mqtt_password": made[0], "provision_secret": ""}
    assert creds.mode == provision.OWN


def test_network_failures_are_not_refusals():
    creds, _, _ = machine({"mqtt_user": NODE, "mqtt_password": "p" * 20})
    for rc in (1, 2, 3):
        creds.refused(rc)
    assert creds.refusals == 0
    assert creds.mode == provision.OWN


def test_own_credentials_refused_fall_back_to_provisioning_with_the_same_secret():
    own = "own-secret-0123456789abcdef"
    creds, _, made = machine({"mqtt_user": NODE, "mqtt_password": own, "fleet_secret": FLEET})
    for _ in range(provision.FALLBACK_AFTER - 1):
        assert creds.refused(5) is None
        assert creds.mode == provision.OWN
    saved = creds.refused(4)
    assert saved == {"provision_secret": own}
    assert creds.provisioning()
    assert creds.secret == own
    assert made == []
    # forgotten by the platform: pending, then approved again with the same secret
    creds.connected()
    creds.answer(answer("pending"))
    assert creds.answer(answer("approved"))["mqtt_password"] == own


def test_own_credentials_refused_without_fleet_secret_stop():
    creds, _, _ = machine({"mqtt_user": NODE, "mqtt_password": "p" * 20})
    for _ in range(provision.FALLBACK_AFTER):
        creds.refused(5)
    assert creds.stopped()
    assert "revoked or rotated" in creds.reason


def test_revoked_device_with_fleet_secret_stops():
    # own login refused, then the provision login refused too (the embedded broker
    # refuses `provision` for a revoked id): stop, with the reason
    creds, _, _ = machine({"mqtt_user": NODE, "mqtt_password": "p" * 20, "fleet_secret": FLEET})
    n = 0
    while not creds.stopped():
        creds.refused(5)
        n += 1
        assert n <= provision.GIVE_UP_AFTER
    assert "credentials and the fleet secret" in creds.reason
    creds.configure({"mqtt_user": NODE, "mqtt_password": "q" * 20})  # new settings: start over
    assert creds.mode == provision.OWN
    assert creds.reason == ""


def test_success_resets_the_refusal_count():
    creds, _, _ = machine({"mqtt_user": NODE, "mqtt_password": "p" * 20, "fleet_secret": FLEET})
    for _ in range(10):
        creds.refused(5)
        creds.connected()
    assert creds.mode == provision.OWN


def test_settings_hold_fleet_secret_ca_and_mask_secrets():
    storage = MemoryStorage()
    cfg = settings.Config(storage)
    cfg.load()
    assert cfg.get("fleet_secret") == ""
    assert cfg.get("mqtt_ca") == ""
    cfg.update({"fleet_secret": FLEET, "mqtt_ca": CA_PEM, "mqtt_tls": True, "mqtt_port": 8883})
    shown = settings.public(cfg.data)
    assert shown["fleet_secret"] == settings.SECRET_MASK
    assert shown["mqtt_ca"] == CA_PEM
    raises(settings.ConfigError, cfg.update, {"mqtt_ca": "not a certificate"})
    raises(settings.ConfigError, cfg.update, {"mqtt_ca": "x" * 5000})
    raises(settings.ConfigError, cfg.update, {"fleet_secret": 5})
    cfg.update({"mqtt_ca": ""})


def test_pem_to_der():
    ders = tls.pem_certificates(CA_PEM)
    assert len(ders) == 1
    assert ders[0][0] == 0x30
    assert len(ders[0]) > 300
    assert len(tls.pem_certificates(CA_PEM + CA_PEM)) == 2
    assert tls.pem_certificates(CA_PEM.encode()) == ders
    raises(tls.TLSError, tls.pem_certificates, "hello")
    raises(tls.TLSError, tls.pem_certificates, tls.PEM_BEGIN + "\nAAAA\n")
    raises(tls.TLSError, tls.pem_certificates, tls.PEM_BEGIN + "\n!!!!\n" + tls.PEM_END)
    assert tls.client_context("") is True


def test_check_pem_accepts_what_decodes():
    # the check at every config load decodes a line at a time: the same verdicts
    tls.check_pem(CA_PEM)
    tls.check_pem(CA_PEM + CA_PEM)
    tls.check_pem(CA_PEM.encode())
    tls.check_pem(CA_PEM.replace("\n", "\r\n"))
    for bad in ("hello", "", tls.PEM_BEGIN + "\nAAAA\n",
                tls.PEM_BEGIN + "\n!!!!\n" + tls.PEM_END,
                tls.PEM_BEGIN + "\nAAAA\n" + tls.PEM_END,
                CA_PEM.replace("MII", "NII", 1), CA_PEM + tls.PEM_BEGIN + "\nAAAA\n"):
        raises(tls.TLSError, tls.check_pem, bad)


def test_the_config_is_written_in_short_pieces_and_reads_back():
    class Pieces(MemoryStorage):
        def write_file(self, path, data):
            self.longest = max(len(part) for part in data)
            MemoryStorage.write_file(self, path, data)

    storage = Pieces()
    cfg = settings.Config(storage)
    cfg.load()
    ca = CA_PEM
    cfg.update({"mqtt_ca": ca, "name": "Küche \"2\"", "mqtt_tls": True})
    assert storage.longest <= 300  # the CA alone is over 500 characters
    again = settings.Config(storage)
    data = again.load()
    assert again.load_errors == []
    assert data["mqtt_ca"] == ca
    assert data["name"] == "Küche \"2\""
    assert jsonx.loads(storage.files[settings.CONFIG_FILE]) == cfg.data
