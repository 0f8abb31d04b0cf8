"""The local stack's TLS material: a CA made once by `stack up`, and a certificate for
127.0.0.1/localhost that the services present (Kafka's SASL_SSL listener). Clients trust
``ca.pem``; keys are written 0600."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smartport.files import write_new

_VALID = timedelta(days=825)  # the longest validity clients accept for a server certificate


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # what clients trust
    server: Path  # the server's private key and certificate chain, one PEM file (0600; Kafka)
    key: Path  # the same key alone (0600; Mosquitto)
    chain: Path  # the same chain alone (Mosquitto)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smartport local stack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def ensure_tls(directory: Path) -> TlsFiles:
    """The CA and the loopback server certificate, made once and reused."""
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                     directory / "server.crt")
    if all(path.is_file() for path in (files.ca, files.server, files.key, files.chain)):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("smartport local CA"))
          .issuer_name(_name("smartport local CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + _VALID)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
              .issuer_name(ca.subject).public_key(key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + _VALID)
              .add_extension(x509.SubjectAlternativeName([
                  x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                  critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    chain = server.public_bytes(pem) + ca.public_bytes(pem)
    write_new(files.key, key_pem, mode=0o600)
    write_new(files.chain, chain)
    write_new(files.server, key_pem + chain, mode=0o600)
    write_new(files.ca, ca.public_bytes(pem))  # the CA's key is not kept: nothing more to sign
    return files
