"""csms.pki: station CSRs checked (each refusal), signed by the operator's CA, the external
sign command, the certificate hash data, and the [pki] settings."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from csms import pki
from csms.config import ConfigError, load_settings
from tests.certs import TestPki

ORG = "Operador de Teste Lda"
CP = "CP-PKI-1"


@pytest.fixture(scope="module")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


def make_csr(
    cn: str | None = CP,
    org: str | None = ORG,
    key: object | None = None,
    *,
    extra_cn: bool = False,
) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = []
    if org is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    if extra_cn:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, "another"))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attrs))
        .sign(
            key,  # type: ignore[arg-type]
            hashes.SHA256(),
        )
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def refusal(pem: str, station: str = CP, org: str | None = ORG) -> str:
    with pytest.raises(pki.CsrRefused) as e:
        pki.check_csr(pem, station, org)
    return str(e.value)


def test_good_csrs_pass() -> None:
    for key in (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        rsa_key(2048),
    ):
        csr = pki.check_csr(make_csr(key=key), CP, ORG)
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CP


def test_wrong_cn_is_refused() -> None:
    assert "is not the charge point id" in refusal(make_csr(cn="CP-OTHER"))
    # exactly: no prefix, suffix or case games
    assert "is not the charge point id" in refusal(make_csr(cn=CP.lower()))
    assert "is not the charge point id" in refusal(make_csr(cn=CP + " "))


def test_missing_or_double_cn_is_refused() -> None:
    assert "one CN" in refusal(make_csr(cn=None))
    assert "one CN" in refusal(make_csr(extra_cn=True))


def test_wrong_or_missing_organisation_is_refused() -> None:
    assert "is not 'Operador de Teste Lda'" in refusal(make_csr(org="Evil Corp"))
    assert "one O" in refusal(make_csr(org=None))


def test_rsa_1024_is_refused() -> None:
    assert "RSA key of 1024 bits" in refusal(make_csr(key=rsa_key(1024)))


def test_other_curves_are_refused() -> None:
    assert "P-256 or P-384" in refusal(make_csr(key=ec.generate_private_key(ec.SECP256K1())))


def test_bad_signature_is_refused() -> None:
    good = make_csr()
    der = x509.load_pem_x509_csr(good.encode()).public_bytes(serialization.Encoding.DER)
    # flip a bit in the signature (the last bytes of the DER)
    broken = der[:-3] + bytes([der[-3] ^ 0x01]) + der[-2:]
    pem = (
        "-----BEGIN CERTIFICATE REQUEST-----\n"
        + __import__("base64").encodebytes(broken).decode()
        + "-----END CERTIFICATE REQUEST-----\n"
    )
    assert "signature is not valid" in refusal(pem)


def test_not_pem_and_garbage_are_refused() -> None:
    assert refusal("hello") == "not a PEM certificate request"
    assert refusal("") == "not a PEM certificate request"
    der = x509.load_pem_x509_csr(make_csr().encode()).public_bytes(serialization.Encoding.DER)
    assert refusal(der.hex()) == "not a PEM certificate request"
    garbage = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA!!!!\n-----END CERTIFICATE REQUEST-----\n"
    assert refusal(garbage) == "the certificate request does not parse"
    truncated = make_csr()[:200] + "\n-----END CERTIFICATE REQUEST-----\n"
    assert refusal(truncated) == "the certificate request does not parse"
    assert "more than one" in refusal(make_csr() + make_csr())
    assert refusal("-----BEGIN CERTIFICATE REQUEST-----\n\u00e9\n-----END") in (
        "the certificate request does not parse",
    )


def test_ca_signs_a_client_certificate(test_pki: TestPki) -> None:
    ca = pki.CertificateAuthority.load(test_pki.ca.cert, test_pki.ca.key, None)
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = pki.check_csr(make_csr(key=key), CP, ORG)
    chain = pki.load_pem_certificates(ca.sign(csr, 365, now))
    leaf, issuer = chain
    assert issuer.fingerprint(hashes.SHA256()) == test_pki.ca.certificate.fingerprint(
        hashes.SHA256()
    )
    assert leaf.subject == csr.subject
    assert leaf.issuer == test_pki.ca.certificate.subject
    leaf.verify_directly_issued_by(test_pki.ca.certificate)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    days = (leaf.not_valid_after_utc - now).total_seconds() / 86400
    assert 364.9 < days <= 365.01
    # serials are random
    other = pki.load_pem_certificates(ca.sign(csr, 365, now))[0]
    assert other.serial_number != leaf.serial_number


def test_leaf_never_outlives_the_ca(test_pki: TestPki) -> None:
    ca = pki.CertificateAuthority.load(test_pki.ca.cert, test_pki.ca.key, None)
    now = datetime.now(UTC)
    csr = pki.check_csr(make_csr(), CP, ORG)
    leaf = pki.load_pem_certificates(ca.sign(csr, 3650 * 3, now))[0]
    assert leaf.not_valid_after_utc == test_pki.ca.certificate.not_valid_after_utc
    with pytest.raises(pki.SigningError, match="expired"):
        ca.sign(csr, 10, test_pki.ca.certificate.not_valid_after_utc + timedelta(days=1))


def test_ca_loading_errors_name_the_file_never_the_passphrase(
    test_pki: TestPki, tmp_path: Path
) -> None:
    encrypted = test_pki.server_certificate("enc", password=b"s3cret-passphrase")
    with pytest.raises(pki.SigningError, match="encrypted") as e:
        pki.CertificateAuthority.load(encrypted.cert, encrypted.key, None)
    with pytest.raises(pki.SigningError, match="passphrase is wrong") as e:
        pki.CertificateAuthority.load(encrypted.cert, encrypted.key, "wrong-passphrase")
    assert "wrong-passphrase" not in str(e.value)
    # the right passphrase opens the key; a server certificate is still no CA
    with pytest.raises(pki.SigningError, match="not a CA certificate"):
        pki.CertificateAuthority.load(encrypted.cert, encrypted.key, "s3cret-passphrase")
    with pytest.raises(pki.SigningError, match="does not hold the key"):
        pki.CertificateAuthority.load(test_pki.ca.cert, test_pki.other_ca.key, None)
    with pytest.raises(pki.SigningError, match="ca_cert_file"):
        pki.CertificateAuthority.load(tmp_path / "missing.pem", test_pki.ca.key, None)
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    with pytest.raises(pki.SigningError, match="not a PEM private key"):
        pki.CertificateAuthority.load(test_pki.ca.cert, junk, None)


async def test_sign_command(test_pki: TestPki, tmp_path: Path) -> None:
    script = tmp_path / "sign.py"
    script.write_text(
        "import os, sys\n"
        f"sys.stdout.write(open({str(test_pki.server.cert)!r}).read())\n"
        "sys.stderr.write('signed for ' + os.environ['CSMS_STATION_ID'])\n"
    )
    chain = await pki.run_sign_command([sys.executable, str(script)], make_csr(), CP, 10)
    assert len(pki.load_pem_certificates(chain)) == 2
    failing = tmp_path / "fail.py"
    failing.write_text("import sys\nsys.stderr.write('x' * 100000 + 'the reason')\nsys.exit(3)\n")
    with pytest.raises(pki.SigningError) as e:
        await pki.run_sign_command([sys.executable, str(failing)], make_csr(), CP, 10)
    assert "exited with 3" in str(e.value) and "the reason" in str(e.value)
    assert len(str(e.value)) < pki.MAX_STDERR_CHARS + 100  # stderr bounded
    silent = tmp_path / "silent.py"
    silent.write_text("print('no certificate here')\n")
    with pytest.raises(pki.SigningError, match="no PEM certificate"):
        await pki.run_sign_command([sys.executable, str(silent)], make_csr(), CP, 10)
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    with pytest.raises(pki.SigningError, match=r"within 0\.5 s"):
        await pki.run_sign_command([sys.executable, str(slow)], make_csr(), CP, 0.5)
    with pytest.raises(pki.SigningError, match="cannot run"):
        await pki.run_sign_command([str(tmp_path / "nope")], make_csr(), CP, 5)


def test_an_external_cas_certificate_must_be_for_the_request(test_pki: TestPki) -> None:
    """What a sign command prints is checked against the request: its key and the CN."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr_pem = make_csr(key=key)
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    ca = pki.CertificateAuthority.load(test_pki.ca.cert, test_pki.ca.key, None)
    now = datetime.now(UTC)
    pki.check_issued_for(ca.sign(csr, 30, now), csr_pem, CP)  # (the right one passes)
    # a certificate for another key (another request), and one for another station
    other = x509.load_pem_x509_csr(make_csr().encode())
    with pytest.raises(pki.SigningError, match="not for the request's key"):
        pki.check_issued_for(ca.sign(other, 30, now), csr_pem, CP)
    with pytest.raises(pki.SigningError, match="not the charge point id"):
        pki.check_issued_for(ca.sign(csr, 30, now), csr_pem, "CP-OTHER")


def test_root_certificate_checks(test_pki: TestPki) -> None:
    now = datetime.now(UTC)
    assert pki.check_root_certificate(test_pki.ca.cert.read_text(), now)
    with pytest.raises(pki.CertificateError, match="not a CA"):
        pki.check_root_certificate(
            test_pki.station("X").certificate.public_bytes(serialization.Encoding.PEM).decode(),
            now,
        )
    with pytest.raises(pki.CertificateError, match="one certificate expected"):
        pki.check_root_certificate(test_pki.server.cert.read_text(), now)
    with pytest.raises(pki.CertificateError, match="no PEM certificate"):
        pki.check_root_certificate("junk", now)
    with pytest.raises(pki.CertificateError, match="expired"):
        pki.check_root_certificate(test_pki.ca.cert.read_text(), now + timedelta(days=4000))


def test_hash_data_of_a_root(test_pki: TestPki) -> None:
    data = pki.certificate_hash_data(test_pki.ca.certificate)
    assert data["hashAlgorithm"] == "SHA256"
    assert data["serialNumber"] == format(test_pki.ca.certificate.serial_number, "x")
    assert len(data["issuerNameHash"]) == 64 and len(data["issuerKeyHash"]) == 64
    # issuerKeyHash: the hash of the key's bits (as OCSP's), the same for its own leaf's issuer
    from cryptography.x509 import ocsp

    leaf = test_pki.station("Y").certificate
    req = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(leaf, test_pki.ca.certificate, hashes.SHA256())
        .build()
    )
    assert pki.certificate_hash_data(leaf, test_pki.ca.certificate)["issuerKeyHash"] == (
        req.issuer_key_hash.hex()
    )
    assert pki.certificate_hash_data(leaf, test_pki.ca.certificate)["issuerNameHash"] == (
        req.issuer_name_hash.hex()
    )


def test_pki_settings(tmp_path: Path) -> None:
    s = load_settings(None, {"CSMS_PKI__CA_KEY_PASSWORD": "123", "CSMS_PKI__ORGANIZATION": '"X"'})
    assert s.pki.ca_key_password is not None
    assert s.pki.ca_key_password.get_secret_value() == "123"  # a string, never a number
    assert "123" not in repr(s.pki)
    assert s.pki.station_certificate_days == 365 and s.pki.expiry_warning_days == 30
    config = tmp_path / "c.toml"
    config.write_text('[pki]\nca_key_password = "in the file"\n')
    with pytest.raises(ConfigError, match="environment only"):
        load_settings(config, {})
    config.write_text('[pki]\nca_cert_file = "ca.pem"\n')
    with pytest.raises(ConfigError, match="both"):
        load_settings(config, {})
    config.write_text("[pki]\nsign_command = []\n")
    with pytest.raises(ConfigError, match="sign_command"):
        load_settings(config, {})


def test_encrypted_ca_key_with_its_passphrase_from_the_environment(
    test_pki: TestPki, tmp_path: Path
) -> None:
    key_path = tmp_path / "ca.key"
    key_path.write_bytes(
        test_pki.ca.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"0123"),
        )
    )
    env = {
        "CSMS_PKI__CA_CERT_FILE": f'"{test_pki.ca.cert}"',
        "CSMS_PKI__CA_KEY_FILE": f'"{key_path}"',
        "CSMS_PKI__CA_KEY_PASSWORD": "0123",
    }
    ca = pki.load_ca(load_settings(None, env).pki)
    assert ca is not None and ca.cert.subject == test_pki.ca.certificate.subject
    del env["CSMS_PKI__CA_KEY_PASSWORD"]
    with pytest.raises(pki.SigningError, match="encrypted"):
        pki.load_ca(load_settings(None, env).pki)
    assert pki.load_ca(load_settings(None, {}).pki) is None
