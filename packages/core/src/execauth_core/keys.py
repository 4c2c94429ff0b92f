"""Ed25519 keys (PyNaCl), signers, trusted key sets and JWKS.

A key's ``kid`` is its RFC 7638 JWK thumbprint, so a kid names exactly one
public key. Verifiers only ever trust keys from a *configured* :class:`KeySet`;
a key carried inside a token or artifact is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import nacl.exceptions
import nacl.signing

from ._b64 import b64url_decode, b64url_encode
from .canonical import CanonicalizationError, canonicalize, loads_strict
from .errors import ConfigurationError, KeyFileError


def jwk_thumbprint(public_key: bytes) -> str:
    """RFC 7638 thumbprint of an Ed25519 OKP JWK (RFC 8037), base64url SHA-256."""
    # Required members only, lexicographic order, no whitespace: exactly the
    # JCS form of this all-ASCII object.
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(public_key)}
    return b64url_encode(hashlib.sha256(canonicalize(members)).digest())


class Signer(Protocol):
    """Something that signs with an Ed25519 key it does not have to reveal.

    A local key file implements it today; a KMS or HSM can implement it tomorrow.
    """

    @property
    def kid(self) -> str:
        """RFC 7638 thumbprint of the public key."""
        ...

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        ...


class LocalSigner:
    """An Ed25519 signing key held in this process."""

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise ConfigurationError("an Ed25519 seed is exactly 32 bytes")
        self._key = nacl.signing.SigningKey(seed)
        self._public = bytes(self._key.verify_key)
        self._kid = jwk_thumbprint(self._public)

    @classmethod
    def generate(cls) -> LocalSigner:
        """A new key from the operating system's randomness (via libsodium)."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message).signature

    def private_jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url_encode(self._public),
            "d": b64url_encode(bytes(self._key)),
            "kid": self._kid,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the private key as a JWK to a new file with mode 0600.

        Refuses to overwrite an existing file.
        """
        data = json.dumps(self.private_jwk(), indent=2).encode("utf-8") + b"\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise KeyFileError(f"{os.fspath(path)}: already exists, not overwriting") from exc
        except OSError as exc:
            raise KeyFileError(f"{os.fspath(path)}: cannot create: {exc.strerror}") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LocalSigner:
        """Read a private key JWK written by :meth:`save`.

        Refuses a file that group or others can read or write.
        """
        name = os.fspath(path)
        try:
            st = os.stat(name)
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyFileError(
                    f"{name}: permissions {stat.S_IMODE(st.st_mode):04o} are too open; a private key file must be 0600"
                )
            raw = Path(name).read_bytes()
        except FileNotFoundError as exc:
            raise KeyFileError(f"{name}: no such file") from exc
        except OSError as exc:
            raise KeyFileError(f"{name}: cannot read: {exc.strerror}") from exc
        try:
            jwk = loads_strict(raw)
            if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                raise ValueError("not an Ed25519 OKP JWK")
            signer = cls(b64url_decode(jwk["d"]))
            if "x" in jwk and b64url_decode(jwk["x"]) != signer.public_key:
                raise ValueError("public part does not match the private key")
        except (CanonicalizationError, ValueError, KeyError, TypeError, ConfigurationError) as exc:
            raise KeyFileError(f"{name}: not a private key file: {exc}") from exc
        return signer


class KeyStatus(str, Enum):
    """Lifecycle of a trusted key."""

    ACTIVE = "active"
    """Signs and verifies."""
    RETIRED = "retired"
    """No longer signs; still verifies what it signed inside its validity window."""
    REVOKED = "revoked"
    """Verifies nothing, ever."""


@dataclass(frozen=True)
class TrustedKey:
    """A public key the verifier trusts, with its status and validity window."""

    kid: str
    public_key: bytes
    status: KeyStatus = KeyStatus.ACTIVE
    not_before: int | None = None
    not_after: int | None = None

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise ConfigurationError("an Ed25519 public key is exactly 32 bytes")
        if jwk_thumbprint(self.public_key) != self.kid:
            raise ConfigurationError(f"kid {self.kid!r} is not the thumbprint of its key")

    @classmethod
    def from_public_key(cls, public_key: bytes, **kwargs: Any) -> TrustedKey:
        return cls(kid=jwk_thumbprint(public_key), public_key=public_key, **kwargs)

    def valid_at(self, t: int) -> bool:
        """True if ``t`` lies inside the key's validity window."""
        if self.not_before is not None and t < self.not_before:
            return False
        return not (self.not_after is not None and t > self.not_after)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Check an Ed25519 signature; True only if it verifies."""
        try:
            nacl.signing.VerifyKey(self.public_key).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
            return False
        return True

    def to_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url_encode(self.public_key),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
            "status": self.status.value,
        }
        if self.not_before is not None:
            jwk["nbf"] = self.not_before
        if self.not_after is not None:
            jwk["exp"] = self.not_after
        return jwk


class KeySet:
    """The configured set of trusted verification keys, by kid."""

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        self._keys: dict[str, TrustedKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: TrustedKey) -> None:
        if key.kid in self._keys:
            raise ConfigurationError(f"duplicate kid {key.kid!r} in key set")
        self._keys[key.kid] = key

    def get(self, kid: str) -> TrustedKey | None:
        return self._keys.get(kid)

    def set_status(self, kid: str, status: KeyStatus, *, at: int | None = None) -> None:
        """Retire or revoke a key (revocation is final).

        Retiring needs the time it stops signing (``at``, or the key's existing
        ``not_after``): tokens it signed before then still verify, later ones never do.
        """
        key = self._keys.get(kid)
        if key is None:
            raise ConfigurationError(f"no key {kid!r} in key set")
        if key.status is KeyStatus.REVOKED and status is not KeyStatus.REVOKED:
            raise ConfigurationError(f"key {kid!r} is revoked; revocation cannot be undone")
        not_after = key.not_after
        if status is KeyStatus.RETIRED:
            if at is None and not_after is None:
                raise ConfigurationError("retiring a key needs `at`: the time it stopped signing")
            not_after = min(x for x in (at, not_after) if x is not None)
        self._keys[kid] = replace(key, status=status, not_after=not_after)

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    @classmethod
    def of_signer(cls, signer: Signer) -> KeySet:
        return cls([TrustedKey.from_public_key(signer.public_key)])

    def to_jwks(self) -> dict[str, Any]:
        """Export as a JWKS document (RFC 7517) with our status/window members."""
        return {"keys": [key.to_jwk() for key in self]}

    @classmethod
    def from_jwks(cls, document: Any) -> KeySet:
        """Import a JWKS document. Every key must be a well-formed Ed25519 OKP key
        whose ``kid`` (if present) is its thumbprint.

        Raises:
            ConfigurationError: anything else.
        """
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ConfigurationError("a JWKS is an object with a 'keys' array")
        keys = []
        for i, jwk in enumerate(document["keys"]):
            try:
                if not isinstance(jwk, dict):
                    raise ValueError("not an object")
                if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                    raise ValueError("only Ed25519 OKP keys are accepted")
                if "d" in jwk:
                    raise ValueError("a private key does not belong in a trusted key set")
                if jwk.get("alg", "EdDSA") != "EdDSA":
                    raise ValueError(f"alg {jwk.get('alg')!r} is not EdDSA")
                public = b64url_decode(jwk["x"])
                kid = jwk_thumbprint(public)
                if jwk.get("kid", kid) != kid:
                    raise ValueError("kid is not the RFC 7638 thumbprint of the key")
                status = KeyStatus(jwk.get("status", "active"))
                nbf, exp = jwk.get("nbf"), jwk.get("exp")
                for bound in (nbf, exp):
                    if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool)):
                        raise ValueError("nbf/exp must be integer Unix seconds")
                keys.append(TrustedKey(kid=kid, public_key=public, status=status, not_before=nbf, not_after=exp))
            except (ValueError, KeyError, TypeError, ConfigurationError) as exc:
                raise ConfigurationError(f"JWKS key #{i}: {exc}") from exc
        return cls(keys)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeySet:
        """Read a JWKS file."""
        name = os.fspath(path)
        try:
            raw = Path(name).read_bytes()
        except FileNotFoundError as exc:
            raise ConfigurationError(f"{name}: no such file") from exc
        except OSError as exc:
            raise ConfigurationError(f"{name}: cannot read: {exc.strerror}") from exc
        try:
            document = loads_strict(raw)
        except CanonicalizationError as exc:
            raise ConfigurationError(f"{name}: {exc}") from exc
        return cls.from_jwks(document)
