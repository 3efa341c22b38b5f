"""Model versions signed in the OpenSSF model signing format (the `model-signing` package):
a manifest of the sha256 of every file of a version's folder, signed with an elliptic-curve
private key, kept in the folder as ``model.sig`` (a Sigstore bundle). Key-based signing and
verifying need no network.

The manifest covers every file of the version except its metadata (``metadata.json``, which
the registry rewrites to mark a version refused) and the signature itself.

`Verifier.verify(folder)` runs before any byte of the artifact reaches ONNX (loader.py): a
flipped byte, a swapped or added file, a signature by a key not trusted, or (when signatures
are required) no signature at all refuses the version.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("flywheel.signing")

SIGNATURE_FILE = "model.sig"
#: Files of a version folder the signature does not cover (see the module docstring).
UNSIGNED_FILES = ("metadata.json", SIGNATURE_FILE)  # registry.METADATA, the signature


class SignatureRefused(Exception):
    """The version's signature is missing or does not verify; the message says which."""


def _hashing():
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=list(UNSIGNED_FILES), ignore_git_paths=True)


def sign_folder(folder: Path, private_key: Path) -> Path:
    """Signs every file of `folder` (but `UNSIGNED_FILES`) with the PEM EC private key;
    returns the signature's path."""
    from model_signing import signing

    signature = folder / SIGNATURE_FILE
    (signing.Config().use_elliptic_key_signer(private_key=private_key)
     .set_hashing_config(_hashing()).sign(folder, signature))
    return signature


class Verifier:
    """Verifies version folders against the trusted public keys (PEM files)."""

    def __init__(self, trusted_keys: Sequence[Path], required: bool) -> None:
        if required and not trusted_keys:
            raise ValueError("signatures are required but no trusted public key is set")
        for key in trusted_keys:
            if not Path(key).is_file():
                raise FileNotFoundError(f"trusted model signing key {key} not found")
        self._keys = [Path(k) for k in trusted_keys]
        self.required = required

    @property
    def active(self) -> bool:
        return bool(self._keys)

    def verify(self, folder: Path) -> str | None:
        """The key file that verified `folder`'s signature; None when it is unsigned and
        signatures are not required (or no key is trusted). Raises `SignatureRefused`."""
        signature = folder / SIGNATURE_FILE
        if not signature.is_file() or signature.is_symlink():
            if self.required:
                raise SignatureRefused(f"no signature ({SIGNATURE_FILE}) and signatures are "
                                       "required")
            return None
        if not self._keys:
            return None
        from model_signing import verifying

        failures = []
        for key in self._keys:
            try:
                (verifying.Config().use_elliptic_key_verifier(public_key=key)
                 .set_hashing_config(_hashing()).verify(folder, signature))
            except Exception as error:  # noqa: BLE001 - the library raises several types
                failures.append(f"{key.name}: {str(error).splitlines()[0][:200]}")
                continue
            return key.name
        raise SignatureRefused("the signature does not verify against a trusted key ("
                               + "; ".join(failures) + ")")
