"""Bearer tokens and roles per method.

A caller sends ``authorization: Bearer <token>``. The token is either a static one, kept
hashed in the tokens file (a name, the sha256 of the token, roles), or a JWT signed by one of
the configured issuer keys (its ``sub`` is its name, its ``roles`` claim its roles). Every
method needs one role (`ROLES`); a method no table names needs ``admin`` (closed by default).
Health checks and reflection are never wrapped, so they stay open.

No token, or one that is unknown, expired or badly signed: UNAUTHENTICATED. A known token
without the method's role: PERMISSION_DENIED naming the role. Both are decided before the
request is even decoded, so a denial says nothing of whether a model or an entity exists.
Every denial is counted (`flywheel_grpc_denials_total`) and logged once, with the token's
name, never the token.

Static tokens are random strings of at least 128 bits (`flywheel up --secure` makes 256):
a plain sha256 is enough to keep them from being read off the file, with no slow KDF on the
path of every call.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import yaml
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from prometheus_client import Counter

from flywheel.common.settings import GrpcSecuritySettings

log = logging.getLogger("flywheel.auth")

AUTHORIZATION_KEY = "authorization"
ALL_ROLES = ("ingest", "predict", "feedback", "features-read", "features-write", "admin")

# Full method name -> role; a service name alone ("/pkg.Service/") covers all its methods.
ROLES: dict[str, str] = {
    "/flywheel.v1.IngestService/": "ingest",
    "/flywheel.v1.FeatureStoreService/GetOnlineFeatures": "features-read",
    "/flywheel.v1.FeatureStoreService/SearchSimilar": "features-read",
    "/flywheel.v1.FeatureStoreService/GetFeatureSchema": "features-read",
    "/flywheel.v1.FeatureStoreService/WriteFeatures": "features-write",
    "/flywheel.v1.PredictionService/": "predict",
    "/inference.GRPCInferenceService/": "predict",
    # The model repository extension changes what is served: an operator's call.
    "/inference.GRPCInferenceService/RepositoryIndex": "admin",
    "/inference.GRPCInferenceService/RepositoryModelLoad": "admin",
    "/inference.GRPCInferenceService/RepositoryModelUnload": "admin",
    "/flywheel.v1.FeedbackService/": "feedback",
    "/flywheel.v1.TrainingService/": "admin",
}

DENIALS = Counter(
    "flywheel_grpc_denials_total",
    "gRPC calls refused by authentication or authorization",
    ["method", "code"],
)

# Verified JWTs are remembered (up to this many) until they expire, so that a client
# reusing its token pays the signature check once, not on every call.
_JWT_CACHE_SIZE = 4096
_TOKENS_FILE_CHECK_S = 1.0


def role_of(method: str) -> str:
    role = ROLES.get(method)
    if role is None:
        role = ROLES.get(method[: method.rfind("/") + 1], "admin")
    return role


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]


class Unauthenticated(Exception):
    """The token is missing or not valid; the message says why, never the token. `name` is
    the name the token claims (a JWT's unverified ``sub``), for the log only."""

    def __init__(self, message: str, name: str = "(unknown token)") -> None:
        super().__init__(message)
        self.name = name


def _claimed_name(token: str) -> str:
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.PyJWTError:
        return "(unreadable token)"
    return f"{sub} (unverified)" if sub else "(unknown token)"


def load_tokens_file(path: Path) -> dict[str, Principal]:
    """sha256 hex digest -> principal, from ``tokens: [{name, sha256, roles}]``."""
    document = yaml.safe_load(path.read_text()) or {}
    entries = document.get("tokens") or []
    principals: dict[str, Principal] = {}
    for index, entry in enumerate(entries):
        try:
            name, digest, roles = entry["name"], entry["sha256"].lower(), entry["roles"]
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f"{path}: tokens[{index}] needs name, sha256 and roles") from None
        unknown = set(roles) - set(ALL_ROLES)
        if unknown:
            raise ValueError(f"{path}: token {name!r} has unknown roles {sorted(unknown)}")
        principals[digest] = Principal(str(name), frozenset(roles))
    return principals


class _StaticTokens:
    """The tokens file, re-read (at most once a second) when it changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp = self._current_stamp()
        self._by_digest = load_tokens_file(path)
        self._checked = time.monotonic()

    def _current_stamp(self) -> tuple[int, int]:
        stat = self._path.stat()
        return stat.st_mtime_ns, stat.st_size

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < _TOKENS_FILE_CHECK_S:
            return
        with self._lock:
            self._checked = now
            try:
                stamp = self._current_stamp()
                if stamp != self._stamp:
                    self._by_digest = load_tokens_file(self._path)
                    self._stamp = stamp
                    log.info("tokens file reloaded", extra={"path": str(self._path)})
            except (OSError, ValueError, yaml.YAMLError) as error:
                log.warning("tokens file not readable, keeping the tokens loaded: %s", error)

    def find(self, token: str) -> Principal | None:
        self._refresh()
        return self._by_digest.get(token_digest(token))


class _JwtVerifier:
    def __init__(self, security: GrpcSecuritySettings) -> None:
        self._keys = [load_pem_public_key(path.read_bytes()) for path in security.jwt_key_files]
        self._issuer = security.jwt_issuer or None
        self._audience = security.jwt_audience or None
        self._roles_claim = security.jwt_roles_claim
        self._cache: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        failure = "not a valid token"
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token, key, algorithms=["RS256", "ES256", "EdDSA"],
                    audience=self._audience, issuer=self._issuer,
                    options={"require": ["exp", "sub"]},
                )
            except jwt.InvalidSignatureError:
                failure = "the token's signature is not one of the trusted issuer keys"
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("the token has expired", _claimed_name(token)) from None
            except jwt.PyJWTError as error:
                raise Unauthenticated(f"the token is not valid: {error}",
                                      _claimed_name(token)) from None
            roles = claims.get(self._roles_claim) or []
            principal = Principal(str(claims["sub"]), frozenset(
                roles.split() if isinstance(roles, str) else map(str, roles)))
            if len(self._cache) >= _JWT_CACHE_SIZE:
                self._cache.clear()
            self._cache[token] = (principal, float(claims["exp"]))
            return principal
        raise Unauthenticated(failure, _claimed_name(token))


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class Authenticator:
    """Token -> principal, from the tokens file and the JWT keys in the settings."""

    def __init__(self, security: GrpcSecuritySettings) -> None:
        self._static = _StaticTokens(security.tokens_file) if security.tokens_file else None
        self._jwt = _JwtVerifier(security) if security.jwt_key_files else None

    def authenticate(self, token: str) -> Principal:
        if self._static is not None:
            principal = self._static.find(token)
            if principal is not None:
                return principal
        if self._jwt is not None and _looks_like_jwt(token):
            return self._jwt.verify(token)
        raise Unauthenticated("the token is not known")


def bearer_of(metadata: tuple | None) -> str:
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY:
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


class Guard:
    """The check every wrapped method runs first (see interceptors.py)."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator
        self._denials: dict[tuple[str, grpc.StatusCode], object] = {}

    def _denied(self, method: str, code: grpc.StatusCode, name: str, reason: str) -> str:
        counter = self._denials.get((method, code))
        if counter is None:
            counter = self._denials[(method, code)] = DENIALS.labels(method, code.name)
        counter.inc()
        log.warning("call denied", extra={"method": method, "code": code.name,
                                          "token_name": name, "reason": reason})
        return reason

    def check(self, method: str, role: str, metadata: tuple | None
              ) -> tuple[grpc.StatusCode, str] | None:
        """None when the call may go on; else the status and message to answer."""
        token = bearer_of(metadata)
        if not token:
            code = grpc.StatusCode.UNAUTHENTICATED
            return code, self._denied(method, code, "(none)", "a bearer token is required "
                                      "(metadata 'authorization: Bearer <token>')")
        try:
            principal = self._authenticator.authenticate(token)
        except Unauthenticated as error:
            code = grpc.StatusCode.UNAUTHENTICATED
            return code, self._denied(method, code, error.name, str(error))
        if role not in principal.roles:
            code = grpc.StatusCode.PERMISSION_DENIED
            return code, self._denied(method, code, principal.name,
                                      f"the token {principal.name!r} lacks the role {role!r}")
        return None


def guard_for(security: GrpcSecuritySettings) -> Guard | None:
    return Guard(Authenticator(security)) if security.auth_enabled else None
