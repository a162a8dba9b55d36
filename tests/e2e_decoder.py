#!/usr/bin/env python3
"""An independent decoder of chatd's end-to-end encrypted DM envelopes, written from
docs/e2e.md ("Envelope") alone, with the `cryptography` package (pip install cryptography).

    e2e_decoder.py <user> <device> <private key: 64 hex digits> <envelope body>

Prints the plaintext and exits 0, or prints why not to stderr and exits 1. It checks what the
envelope itself proves (integrity, and that it was made with the sender key it carries); the
directory check of the sender key is the caller's (tests/e2e.rs runs this).

XChaCha20-Poly1305 is not in `cryptography`, so it is built as the draft specifies from
HChaCha20 (below, from draft-irtf-cfrg-xchacha section 2.2) and `cryptography`'s
ChaCha20-Poly1305.
"""

import base64
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "e2e:1:"
WRAP_INFO = b"chatd-e2e/1 wrap"


def _rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def _quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = _rotl(s[b] ^ s[c], 7)


def hchacha20(key, nonce16):
    state = list(struct.unpack("<4I", b"expand 32-byte k"))
    state += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        _quarter(state, 0, 4, 8, 12); _quarter(state, 1, 5, 9, 13)
        _quarter(state, 2, 6, 10, 14); _quarter(state, 3, 7, 11, 15)
        _quarter(state, 0, 5, 10, 15); _quarter(state, 1, 6, 11, 12)
        _quarter(state, 2, 7, 8, 13); _quarter(state, 3, 4, 9, 14)
    return struct.pack("<8I", *(state[0:4] + state[12:16]))


def xchacha20poly1305_decrypt(key, nonce24, data, aad):
    subkey = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(subkey).decrypt(b"\0\0\0\0" + nonce24[16:], data, aad or None)


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n):
        if self.at + n > len(self.data):
            raise ValueError("truncated envelope")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def byte(self):
        return self.take(1)[0]

    def str8(self):
        return self.take(self.byte()).decode("ascii")


def decode(user, device, private_key, body):
    if not body.startswith(PREFIX):
        raise ValueError("not an envelope")
    data = base64.b64decode(body[len(PREFIX):], validate=True)
    r = Reader(data)
    if r.byte() != 1:
        raise ValueError("unknown version")
    sender_user, sender_device = r.str8(), r.str8()
    sender_key, ephemeral_key, nonce = r.take(32), r.take(32), r.take(24)
    wrapped = None
    for _ in range(r.byte()):
        entry_user, entry_device, entry_wrapped = r.str8(), r.str8(), r.take(48)
        if wrapped is None and (entry_user, entry_device) == (user, device):
            wrapped = entry_wrapped
    header, ciphertext = data[:r.at], data[r.at:]
    if len(ciphertext) < 16:
        raise ValueError("no ciphertext")
    if wrapped is None:
        raise ValueError("not encrypted for this device")
    me = X25519PrivateKey.from_private_bytes(private_key)
    my_public = me.public_key().public_bytes_raw()
    dh1 = me.exchange(X25519PublicKey.from_public_bytes(ephemeral_key))
    dh2 = me.exchange(X25519PublicKey.from_public_bytes(sender_key))
    wrap_key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=WRAP_INFO + ephemeral_key + sender_key + my_public,
    ).derive(dh1 + dh2)
    message_key = xchacha20poly1305_decrypt(wrap_key, bytes(24), wrapped, b"")
    plaintext = xchacha20poly1305_decrypt(message_key, nonce, ciphertext, header)
    return sender_user, sender_device, plaintext.decode("utf-8")


def main(argv):
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    user, device, key_hex, body = argv[1:]
    try:
        sender_user, sender_device, text = decode(user, device, bytes.fromhex(key_hex), body)
    except Exception as e:  # noqa: BLE001 - any failure is a rejection, with its reason
        print(f"rejected: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"from {sender_user}/{sender_device}", file=sys.stderr)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
