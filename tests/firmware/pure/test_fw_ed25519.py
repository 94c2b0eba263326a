# The firmware's Ed25519 verifier and SHA-512 against RFC 8032's test vectors
# (section 7.1) and FIPS 180-4's examples. Runs on CPython and on MicroPython
# (tests/firmware/test_fw_micropython.py); the random cases against the
# `cryptography` package are in tests/firmware/test_fw_ed25519_oracle.py.
import binascii

from iotfw import ed25519, sha512

# (public key, message, signature): TEST 1, 2, 3 and TEST SHA(abc)
RFC8032 = (
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
)


def _b(text):
    return binascii.unhexlify(text)


def test_rfc8032_vectors_verify():
    for pk, msg, sig in RFC8032:
        assert ed25519.verify(_b(pk), _b(msg), _b(sig))


def test_a_message_given_in_chunks_verifies_as_a_whole():
    pk, msg, sig = [_b(x) for x in RFC8032[3]]  # TEST SHA(abc): a 64-byte message
    for size in (1, 7, 64):
        chunks = (msg[i:i + size] for i in range(0, len(msg), size))
        assert ed25519.verify(pk, chunks, sig)
    assert not ed25519.verify(pk, iter([msg[:10], msg[11:]]), sig)  # a byte missing
    assert sha512.digest_all(iter([b"ab", b"c"])) == sha512.digest(b"abc")
    assert sha512.digest_pure_all(iter([b"ab", b"c"])) == sha512.digest(b"abc")


def test_altered_signatures_fail():
    pk, msg, sig = [_b(x) for x in RFC8032[1]]
    for i in (0, 31, 32, 63):
        bad = bytearray(sig)
        bad[i] ^= 0x01
        assert not ed25519.verify(pk, msg, bytes(bad))
    assert not ed25519.verify(pk, msg + b"\x00", sig)
    assert not ed25519.verify(_b(RFC8032[0][0]), msg, sig)  # another key
    assert not ed25519.verify(pk, msg, sig[:63])
    assert not ed25519.verify(pk[:31], msg, sig)


def test_non_canonical_s_is_refused():
    # S + L verifies the same equation: only S < L is accepted (RFC 8032 5.1.7)
    pk, msg, sig = [_b(x) for x in RFC8032[0]]
    s = int.from_bytes(sig[32:], "little") + ed25519.L
    assert not ed25519.verify(pk, msg, sig[:32] + s.to_bytes(32, "little"))


def test_invalid_public_keys_are_refused():
    _, msg, sig = [_b(x) for x in RFC8032[0]]
    # y >= p is not a canonical encoding
    assert ed25519.decode_point((ed25519.P + 1).to_bytes(32, "little")) is None
    assert not ed25519.verify((ed25519.P + 1).to_bytes(32, "little"), msg, sig)
    # y = 2 has no x on the curve
    assert ed25519.decode_point((2).to_bytes(32, "little")) is None
    # x = 0 with the sign bit set
    assert ed25519.decode_point(((1 << 255) | 1).to_bytes(32, "little")) is None


def test_encode_decode_round_trip():
    for pk, _, _ in RFC8032:
        assert ed25519.encode_point(ed25519.decode_point(_b(pk))) == _b(pk)


SHA512_ABC = (
    "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
)
SHA512_EMPTY = (
    "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)
SHA512_112 = (
    "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
    "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"
)


def test_sha512_known_answers():
    long = (
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
        b"ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
    )
    for data, hexdigest in ((b"abc", SHA512_ABC), (b"", SHA512_EMPTY), (long, SHA512_112)):
        assert binascii.hexlify(sha512.digest_pure(data)).decode() == hexdigest
        assert sha512.digest(data) == sha512.digest_pure(data)


def test_sha512_of_parts_is_sha512_of_their_concatenation():
    data = bytes(range(256)) * 3
    for cuts in ((0, 0), (1, 5), (64, 96), (127, 129), (128, 256), (300, 700), (768, 768)):
        a, b, c = data[:cuts[0]], data[cuts[0]:cuts[1]], data[cuts[1]:]
        assert sha512.digest_pure(a, b, c) == sha512.digest_pure(data)
