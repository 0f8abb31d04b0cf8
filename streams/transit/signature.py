"""The terminal signs each discharge certificate it issues (Ed25519): anchoring proves since
when a certificate exists unchanged, the signature who vouches for it. Verified by
``anchoring.verify.verify_certificate``."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.transit import DischargeCertificate, TerminalSignature
from smartport.ed25519 import fingerprint, raw_public


def sign(certificate: DischargeCertificate, key: Ed25519PrivateKey) -> DischargeCertificate:
    public = key.public_key()
    return certificate.model_copy(update={"signature": TerminalSignature(
        key_id=fingerprint(public), public_key=raw_public(public),
        value=key.sign(certificate.signed_bytes()).hex())})
