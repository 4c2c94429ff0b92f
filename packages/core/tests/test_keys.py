"""Ed25519 keys, RFC 7638 kids, key files and JWKS."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from execauth_core import (
    ConfigurationError,
    KeyFileError,
    KeySet,
    KeyStatus,
    LocalSigner,
    TrustedKey,
    jwk_thumbprint,
)
from execauth_core._b64 import b64url_decode, b64url_encode

# RFC 8037 Appendix A.1-A.4: the Ed25519 example key, its thumbprint, and a JWS.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
RFC8037_JWS = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)


def test_rfc8037_key_thumbprint_and_signature() -> None:
    signer = LocalSigner(b64url_decode(RFC8037_D))
    assert b64url_encode(signer.public_key) == RFC8037_X
    assert jwk_thumbprint(signer.public_key) == RFC8037_THUMBPRINT == signer.kid
    head, payload, sig = RFC8037_JWS.split(".")
    assert b64url_encode(signer.sign(f"{head}.{payload}".encode())) == sig


def test_key_file_roundtrip_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    signer = LocalSigner.generate()
    signer.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert LocalSigner.load(path).public_key == signer.public_key


def test_key_file_refuses_overwrite_and_open_permissions(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    LocalSigner.generate().save(path)
    with pytest.raises(KeyFileError, match="already exists"):
        LocalSigner.generate().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="too open"):
        LocalSigner.load(path)


@pytest.mark.parametrize("content", [b"", b"not json", b'{"kty": "RSA"}', b'{"kty":"OKP","crv":"Ed25519","d":"!!"}'])
def test_key_file_garbage_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError):
        LocalSigner.load(path)


def test_key_file_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such file"):
        LocalSigner.load(tmp_path / "nope.key")


def test_jwks_roundtrip_keeps_status_and_window() -> None:
    a, b = LocalSigner.generate(), LocalSigner.generate()
    keys = KeySet(
        [
            TrustedKey.from_public_key(a.public_key, not_before=10, not_after=20),
            TrustedKey.from_public_key(b.public_key, status=KeyStatus.RETIRED),
        ]
    )
    again = KeySet.from_jwks(keys.to_jwks())
    assert [(k.kid, k.status, k.not_before, k.not_after) for k in again] == [
        (a.kid, KeyStatus.ACTIVE, 10, 20),
        (b.kid, KeyStatus.RETIRED, None, None),
    ]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda k: k.update(kid="not-the-thumbprint"), "thumbprint"),
        (lambda k: k.update(d=RFC8037_D), "private key"),
        (lambda k: k.update(kty="RSA"), "Ed25519"),
        (lambda k: k.update(alg="HS256"), "not EdDSA"),
        (lambda k: (k.update(x="AAAA"), k.pop("kid")), "32 bytes"),
        (lambda k: k.update(status="trusted-forever"), "status|trusted"),
        (lambda k: k.update(exp="tomorrow"), "integer"),
    ],
)
def test_jwks_import_rejects(mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    doc = KeySet.of_signer(LocalSigner.generate()).to_jwks()
    mutate(doc["keys"][0])
    with pytest.raises(ConfigurationError, match=fragment):
        KeySet.from_jwks(doc)


def test_revocation_is_final() -> None:
    signer = LocalSigner.generate()
    keys = KeySet.of_signer(signer)
    keys.set_status(signer.kid, KeyStatus.REVOKED)
    with pytest.raises(ConfigurationError, match="cannot be undone"):
        keys.set_status(signer.kid, KeyStatus.ACTIVE)


def test_trusted_key_kid_must_be_thumbprint() -> None:
    signer = LocalSigner.generate()
    with pytest.raises(ConfigurationError):
        TrustedKey(kid="someone-else", public_key=signer.public_key)
