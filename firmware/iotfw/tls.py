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
    return _walk(pem, True)


def check_pem(pem):
    """Raises TLSError unless pem holds at least one certificate."""
    _walk(pem, False)


def _walk(pem, keep):
    # a line at a time, in place: the config is checked at every boot and the
    # certificate decoded at every connect, when a PEM's copies (~3 KB in one piece)
    # may not fit the heap; a DER is filled in once its size is known
    if isinstance(pem, (bytes, bytearray)):
        pem = bytes(pem).decode()
    out = []
    start = pem.find(PEM_BEGIN)
    if start < 0:
        raise TLSError("no PEM certificate found")
    while start >= 0:
        end = pem.find(PEM_END, start)
        if end < 0:
            raise TLSError("certificate without its END line")
        size = _decode(pem, start + len(PEM_BEGIN), end, None)
        if size < 64:
            raise TLSError("not a DER certificate")
        if keep:
            der = bytearray(size)
            _decode(pem, start + len(PEM_BEGIN), end, der)
            out.append(bytes(der))  # what ssl takes as cadata
        start = pem.find(PEM_BEGIN, end)
    return out


def _decode(pem, pos, end, into):
    """The size of the DER between pos and end, copied into `into` when given."""
    size = 0
    while pos < end:
        stop = pem.find("\n", pos, end)
        stop = end if stop < 0 else stop
        line = pem[pos:stop].strip()
        pos = stop + 1
        if not line:
            continue
        try:
            der = binascii.a2b_base64(line.encode())
        except Exception as exc:  # noqa: BLE001 - binascii.Error is CPython's; MicroPython raises others
            raise TLSError("certificate is not valid base64: %s" % exc)
        if size == 0 and der and der[0] != 0x30:
            raise TLSError("not a DER certificate")
        if into is not None:
            into[size:size + len(der)] = der
        size += len(der)
    return size


def client_context(ca_pem=None):
    """What MQTTClient passes as ssl=: a context trusting only ca_pem, or True (the
    platform's default: CPython's CA bundle; MicroPython verifies nothing) without it."""
    if not ca_pem:
        return True
    import ssl

    if hasattr(ssl, "create_default_context"):  # CPython
        return ssl.create_default_context(cadata=ca_pem)
    # the context first: its ~3 KB in one piece is the larger need
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=pem_certificates(ca_pem)[0])
    return ctx
