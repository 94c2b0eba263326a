# TLS for the MQTT link, with the broker's CA pinned: the device trusts only the CA
# certificate in its settings (mqtt_ca, PEM), not a public CA bundle.
#
# MicroPython (v1.22+): ssl.SSLContext(PROTOCOL_TLS_CLIENT), verify_mode CERT_REQUIRED
# (mbedtls ports verify nothing otherwise) and cadata = the certificate in DER (older
# ports take exactly one DER certificate). CPython: ssl.create_default_context(cadata=...).
# Both check the broker's name (mqtt_host) against its certificate.
import binascii

PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
PEM_END = "-----END CERTIFICATE-----"


class TLSError(ValueError):
    pass


def pem_certificates(pem):
    """PEM text -> list of DER certificates (bytes). Raises TLSError."""
    if isinstance(pem, (bytes, bytearray)):
        pem = bytes(pem).decode()
    out = []
    rest = pem
    while True:
        start = rest.find(PEM_BEGIN)
        if start < 0:
            break
        end = rest.find(PEM_END, start)
        if end < 0:
            raise TLSError("certificate without its END line")
        body = "".join(rest[start + len(PEM_BEGIN):end].split())
        try:
            der = binascii.a2b_base64(body.encode())
        except Exception as exc:  # noqa: BLE001 - binascii.Error is CPython's; MicroPython raises others
            raise TLSError("certificate is not valid base64: %s" % exc)
        if len(der) < 64 or der[0] != 0x30:
            raise TLSError("not a DER certificate")
        out.append(der)
        rest = rest[end + len(PEM_END):]
    if not out:
        raise TLSError("no PEM certificate found")
    return out


def check_pem(pem):
    """Raises TLSError unless pem holds at least one certificate."""
    pem_certificates(pem)


def client_context(ca_pem=None):
    """What MQTTClient passes as ssl=: a context trusting only ca_pem, or True (the
    platform's default: CPython's CA bundle; MicroPython verifies nothing) without it."""
    if not ca_pem:
        return True
    import ssl

    if hasattr(ssl, "create_default_context"):  # CPython
        return ssl.create_default_context(cadata=ca_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=pem_certificates(ca_pem)[0])
    return ctx
