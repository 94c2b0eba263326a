# Ed25519 signature verification (RFC 8032, section 5.1.7) in plain Python:
# MicroPython ships no public-key crypto. Verification only: nothing secret is
# handled here, so constant time does not matter; speed and heap do.
#
# Points are in extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, x*y = T/Z.
# Every product is reduced with one % P: on MicroPython that beats folding with
# 2**255 = 19 (mod p) by shifts and adds (measured, bench/firmware_verify.py).
# [S]B - [k]A is computed in one pass (Straus) with signed 3-bit windows (digits
# -4..4: tables of 4 multiples per point, negatives taken for free). 4-bit windows
# save a few additions (no faster, measured on the unix port) for tables twice the
# size, and an update verifies when the device has the least heap to spare.
from iotfw import sha512

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
_MASK = 2 ** 255 - 1
_P2 = 2 * P
_D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161  # 2d
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960


def _pow(x, e):
    out = 1
    while e:
        if e & 1:
            out = out * x % P
        x = x * x % P
        e >>= 1
    return out


def _double(p):
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    s = x1 + y1
    e = h + _P2 - s * s % P
    g = a + _P2 - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _cached(p):
    # the form a table entry is added in: (Y-X, Y+X, 2dT, 2Z)
    x, y, z, t = p
    return (y + _P2 - x, y + x, t * _D2 % P, 2 * z)


def _add(p, q):
    x1, y1, z1, t1 = p
    ymx, ypx, t2d, z2 = q
    a = (y1 + _P2 - x1) * ymx % P
    b = (y1 + x1) * ypx % P
    c = t1 * t2d % P
    d = z1 * z2 % P
    e = b + _P2 - a
    f = d + _P2 - c
    g = d + c
    h = b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _table(p):
    # [0*p, 1*p, ..., 4*p] in cached form (0*p unused); -j*p is taken from j*p
    out = [None, _cached(p)]
    q = p
    for _ in range(3):
        q = _add(q, out[1])
        out.append(_cached(q))
    return out


def _neg(c):
    # -Q in cached form: x -> -x swaps Y-X and Y+X and negates T
    return (c[1], c[0], P - c[2], c[3])


def decode_point(data):
    """A point from its 32-byte encoding, or None when it is not a valid,
    canonical encoding."""
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= _MASK
    if y >= P:
        return None
    yy = y * y % P
    u = (yy - 1) % P
    v = (_D * yy + 1) % P
    v3 = v * v % P * v % P
    x = u * v3 % P * _pow(u * v3 % P * v3 % P * v % P, (P - 5) // 8) % P
    vxx = v * x % P * x % P
    if vxx != u:
        if vxx != P - u:
            return None
        x = x * _SQRT_M1 % P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def encode_point(p):
    x, y, z, _ = p
    zi = _pow(z, P - 2)
    x = x * zi % P
    y = y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _digits(n):
    # n < 2**253 as 85 signed base-8 digits in -4..4 (sum of d[i] * 8**i)
    out = bytearray(85)
    for i in range(85):
        d = n & 7
        n >>= 3
        if d > 4:
            d -= 8
            n += 1
        out[i] = d & 0xFF
    return out


def _step(acc, table, d):
    if d == 0:
        return acc
    if d < 128:
        return _add(acc, table[d])
    return _add(acc, _neg(table[256 - d]))


def _straus(s, b_table, k, a_table):
    sd = _digits(s)
    kd = _digits(k)
    acc = (0, 1, 1, 0)
    for i in range(84, -1, -1):
        if i != 84:
            acc = _double(_double(_double(acc)))
        acc = _step(acc, b_table, sd[i])
        acc = _step(acc, a_table, kd[i])
    return acc


def verify(public_key, message, signature):
    """True when signature (64 bytes) is public_key's (32 bytes) Ed25519
    signature of message: bytes, or an iterable of chunks of them (hashed as they
    come: the message is never held whole)."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = decode_point(public_key)
    if a is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    r = signature[:32]
    if isinstance(message, (bytes, bytearray, memoryview)):
        message = (message,)
    k = int.from_bytes(sha512.digest_all(_chain(r, public_key, message)), "little") % L
    neg_a = ((P - a[0]) % P, a[1], 1, (P - a[3]) % P)
    base = (_BX, _BY, 1, _BX * _BY % P)
    point = _straus(s, _table(base), k, _table(neg_a))
    return encode_point(point) == bytes(r)


def _chain(r, public_key, chunks):
    yield r
    yield public_key
    for chunk in chunks:
        yield chunk
