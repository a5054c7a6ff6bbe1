"""Signed test images without the internet: a throwaway certificate authority made with
``cryptography`` (root → intermediate → signer, ES256) and ``c2pa-python``'s own Builder.

Why: the provenance tests must exercise the real library on real signed files, with a trust chain
shaped like a vendor's (end-entity issued by an intermediate issued by a root in the PEM bundle).
"""
from __future__ import annotations

import datetime as _dt
import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


@dataclass
class TestCA:
    root_pem: bytes
    intermediate_pem: bytes
    signer_pem: bytes
    signer_key_pem: bytes

    @property
    def chain_pem(self) -> bytes:
        """What the signer embeds: its own certificate, then the intermediate (not the root)."""
        return self.signer_pem + self.intermediate_pem

    def write_root(self, path: Path) -> Path:
        path.write_bytes(self.root_pem)
        return path


#: Signing-certificate usages vendors use: e-mail protection, document signing, C2PA claim signing.
EMAIL_PROTECTION, DOCUMENT_SIGNING = "1.3.6.1.5.5.7.3.4", "1.3.6.1.5.5.7.3.36"
C2PA_CLAIM_SIGNING = "1.3.6.1.4.1.62558.2.1"


def make_ca(org: str = "Test Generator Vendor", signer_cn: str = "Test Generator Signer",
            eku: str = EMAIL_PROTECTION) -> TestCA:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ObjectIdentifier

    now = _dt.datetime.now(_dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])

    def cert(subject: str, issuer: str, key: Any, issuer_key: Any, ca: bool, path_len: int | None = None) -> Any:
        usage = dict(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                     data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                     encipher_only=False, decipher_only=False)
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
             .add_extension(x509.KeyUsage(**usage), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False))
        if not ca:
            b = b.add_extension(x509.ExtendedKeyUsage([ObjectIdentifier(eku)]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    root_key, inter_key, signer_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = cert(f"{org} Root CA", f"{org} Root CA", root_key, root_key, True, 1)
    inter = cert(f"{org} Intermediate CA", f"{org} Root CA", inter_key, root_key, True, 0)
    signer = cert(signer_cn, f"{org} Intermediate CA", signer_key, inter_key, False)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    return TestCA(pem(root), pem(inter), pem(signer),
                  signer_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def created_by_ai() -> dict[str, Any]:
    return {"actions": [{"action": "c2pa.created", "digitalSourceType": IPTC + "trainedAlgorithmicMedia",
                         "softwareAgent": {"name": "TestGen Image Model", "version": "2.0"}}]}


def ai_assisted_edit() -> dict[str, Any]:
    return {"actions": [
        {"action": "c2pa.created", "digitalSourceType": IPTC + "digitalCapture"},
        {"action": "c2pa.edited", "digitalSourceType": IPTC + "compositeWithTrainedAlgorithmicMedia",
         "softwareAgent": {"name": "TestEdit Generative Fill"},
         "description": "generative fill",
         "changes": [{"description": "sky replaced",
                      "region": [{"type": "spatial", "shape": {"type": "rectangle", "unit": "pixel",
                                                               "origin": {"x": 10, "y": 20},
                                                               "width": 100, "height": 50}}]}]}]}


def camera_capture() -> dict[str, Any]:
    return {"actions": [{"action": "c2pa.created", "digitalSourceType": IPTC + "digitalCapture",
                         "softwareAgent": {"name": "TestCam Firmware", "version": "1.0"}}]}


def sign(image_bytes: bytes, mime: str, ca: TestCA, actions: dict[str, Any],
         generator: str = "TestGen App") -> bytes:
    """``image_bytes`` with a C2PA manifest (the given actions) embedded and signed by ``ca``'s signer."""
    import c2pa

    manifest = {"claim_generator_info": [{"name": generator, "version": "1.0"}], "title": "test image",
                "assertions": [{"label": "c2pa.actions", "data": actions}]}
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, ca.chain_pem, ca.signer_key_pem, None)
    # The signing side does not judge its own certificate (verification is what the product under test does).
    with c2pa.Context.from_dict({"verify": {"verify_after_sign": False}}) as context, \
            c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest, context) as builder:
        out = io.BytesIO()
        builder.sign(signer, mime, io.BytesIO(image_bytes), out)
    return out.getvalue()


def flip_jpeg_scan_byte(data: bytes) -> bytes:
    """One byte of the entropy-coded image data changed (the file still decodes): an edit after signing."""
    buf = bytearray(data)
    sos = buf.rfind(b"\xff\xda")
    pos = sos + 2 + int.from_bytes(buf[sos + 2:sos + 4], "big")
    pos += (len(buf) - pos) // 2
    while buf[pos] in (0x00, 0xFF) or buf[pos - 1] == 0xFF or (buf[pos] ^ 0x10) == 0xFF:
        pos += 1
    buf[pos] ^= 0x10
    return bytes(buf)


def change_png_pixel(data: bytes, xy: tuple[int, int] = (5, 5)) -> bytes:
    """The same PNG, every chunk kept (the manifest too), with one pixel changed: IDAT re-encoded."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    r, g, b = img.getpixel(xy)
    img.putpixel(xy, ((r + 128) % 256, g, b))
    raw = b"".join(b"\x00" + img.tobytes()[y * img.width * 3:(y + 1) * img.width * 3] for y in range(img.height))
    idat = zlib.compress(raw)
    out, i, wrote = [data[:8]], 8, False
    while i < len(data):
        size = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        chunk = data[i:i + 12 + size]
        i += 12 + size
        if kind == b"IDAT":
            if not wrote:
                out.append(len(idat).to_bytes(4, "big") + b"IDAT" + idat
                           + zlib.crc32(b"IDAT" + idat).to_bytes(4, "big"))
                wrote = True
            continue
        out.append(chunk)
    return b"".join(out)


def sign_with_ingredient(image_bytes: bytes, ingredient: bytes, ca: TestCA, relationship: str,
                         actions: list[dict[str, Any]]) -> bytes:
    """A new manifest over ``image_bytes`` that records the signed file ``ingredient`` as its parent or a
    component (as an app does when it converts or composites a generated image)."""
    import c2pa

    manifest = {"claim_generator_info": [{"name": "TestGen App", "version": "1.0"}], "title": "derived image",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}]}
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, ca.chain_pem, ca.signer_key_pem, None)
    with c2pa.Context.from_dict({"verify": {"verify_after_sign": False}}) as context, \
            c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest, context) as builder:
        builder.add_ingredient({"title": "ingredient.jpg", "relationship": relationship, "label": "ing"},
                               "image/jpeg", io.BytesIO(ingredient))
        out = io.BytesIO()
        builder.sign(signer, "image/jpeg", io.BytesIO(image_bytes), out)
    return out.getvalue()
