"""Authentication for the HTTP service: CDS Hooks client JWTs and REST bearer tokens.

CDS Hooks 2.0 ("Trusting CDS Clients"): every call, discovery included, carries
``Authorization: Bearer <JWT>`` signed by the CDS Client with an asymmetric key. Here:

- the signing algorithm is ES384 or RS384 and nothing else (never ``none``, never HMAC);
- ``iss`` must be on the allowlist in the config file, and the public keys (a JWK Set) come
  from that file only. The ``jku`` header is ignored: keys are never fetched from a token;
- the key is chosen by ``(iss, kid)``, and the algorithm used to verify is the one that key's
  type implies. The header's ``alg`` must agree with it, but never selects a key;
- ``aud`` is the exact URL called (a string, or a list of exactly that one string);
- ``exp``, ``iat`` and ``jti`` are required; ``iat`` may be no older than ``max_token_age_s``;
  a ``jti`` seen before from the same issuer is a replay.

Signatures are checked by PyJWT. Every failure raises :class:`AuthError`, whose message is a
reason for the server log; it never contains the token. The HTTP layer answers a bare 401.

REST (``/v1``) uses opaque bearer tokens; the config holds only their SHA-256 digests.

The config file (JSON)::

    {
      "issuers": {
        "https://ehr.example.org/": {"jwks": {"keys": [...]}},
        "https://other.example.org/": {"jwks_path": "keys/other.jwks.json"}
      },
      "rest_tokens": {"<sha256 hex of the token>": "actor-name"},
      "leeway_s": 30,
      "max_token_age_s": 300
    }

``jwks_path`` is relative to the config file. Top-level keys starting with ``_`` are comments.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import ConfigError

__all__ = [
    "ALLOWED_ALGS",
    "AuthConfig",
    "AuthError",
    "is_loopback",
    "verify_cds_jwt",
    "verify_rest_token",
]

#: The only JWS algorithms a CDS Client may sign with.
ALLOWED_ALGS = frozenset({"ES384", "RS384"})
MIN_RSA_BITS = 2048
MAX_HEADER_CHARS = 8192  # a longer Authorization header is refused before any parsing

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_CONFIG_KEYS = {"issuers", "rest_tokens", "leeway_s", "max_token_age_s"}
_ISSUER_KEYS = {"jwks", "jwks_path"}
_SRC = "auth config"
_PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


class AuthError(Exception):
    """Authentication failed. ``reason`` is for the server log (never the token); clients get a bare 401."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class _Key:
    kid: str | None
    alg: str  # "ES384" or "RS384", implied by the key type
    key: Any  # a cryptography public key object


@dataclass(frozen=True)
class AuthConfig:
    """Trusted CDS Clients and REST tokens. Validated on construction (``ConfigError``)."""

    issuers: dict[str, dict]  # iss -> {"jwks": {...}} or {"jwks_path": "..."}
    rest_tokens: dict[str, str]  # sha256 hex of a bearer token -> actor name
    leeway_s: int = 30
    max_token_age_s: int = 300
    _keys: dict[str, tuple[_Key, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        src = _SRC
        if not isinstance(self.issuers, Mapping):
            raise ConfigError(f"{src}: 'issuers' must be an object (iss -> {{jwks|jwks_path}})")
        if not isinstance(self.rest_tokens, Mapping):
            raise ConfigError(f"{src}: 'rest_tokens' must be an object (sha256 hex -> actor)")
        for name in ("leeway_s", "max_token_age_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{src}: '{name}' must be a non-negative integer (seconds), got {v!r}")
        if self.max_token_age_s == 0:
            raise ConfigError(f"{src}: 'max_token_age_s' must be positive")
        for digest, actor in self.rest_tokens.items():
            if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
                raise ConfigError(
                    f"{src}: rest_tokens keys must be the SHA-256 hex digest (64 lowercase hex characters) "
                    f"of a token, never the token itself; got a key of length {len(str(digest))}"
                )
            if not isinstance(actor, str) or not actor.strip():
                raise ConfigError(f"{src}: rest_tokens[{digest[:8]}...] must name an actor (non-empty string)")
        keys: dict[str, tuple[_Key, ...]] = {}
        for iss, entry in self.issuers.items():
            if not isinstance(iss, str) or not iss:
                raise ConfigError(f"{src}: issuers: an issuer must be a non-empty string")
            keys[iss] = _load_issuer_keys(iss, entry, src)
        object.__setattr__(self, "_keys", keys)

    @classmethod
    def load(cls, path: str | Path) -> AuthConfig:
        """Read a JSON config file. ``jwks_path`` entries are resolved relative to the file."""
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: auth config file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: cannot read auth config: {e}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the auth config must be a JSON object")
        unknown = sorted(k for k in raw if k not in _CONFIG_KEYS and not str(k).startswith("_"))
        if unknown:
            raise ConfigError(f"{p}: unknown field(s) {unknown}; expected {sorted(_CONFIG_KEYS)}")
        issuers = raw.get("issuers")
        if issuers is None:
            raise ConfigError(f"{p}: missing field 'issuers'")
        if not isinstance(issuers, dict):
            raise ConfigError(f"{p}: 'issuers' must be an object (iss -> {{jwks|jwks_path}})")
        resolved: dict[str, dict] = {}
        for iss, entry in issuers.items():
            if isinstance(entry, dict) and "jwks_path" in entry and isinstance(entry["jwks_path"], str):
                jp = Path(entry["jwks_path"])
                entry = {**entry, "jwks_path": str(jp if jp.is_absolute() else (p.parent / jp))}
            resolved[iss] = entry
        kwargs: dict[str, Any] = {"issuers": resolved, "rest_tokens": raw.get("rest_tokens", {})}
        for name in ("leeway_s", "max_token_age_s"):
            if name in raw:
                kwargs[name] = raw[name]
        try:
            return cls(**kwargs)
        except ConfigError as e:  # name the file instead of the generic source
            msg = str(e)
            if msg.startswith(_SRC + ":"):
                msg = f"{p}:" + msg[len(_SRC) + 1 :]
            raise ConfigError(msg) from None


def _load_issuer_keys(iss: str, entry: Any, src: str) -> tuple[_Key, ...]:
    where = f"{src}: issuers[{iss!r}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be an object with 'jwks' or 'jwks_path'")
    unknown = sorted(k for k in entry if k not in _ISSUER_KEYS and not str(k).startswith("_"))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; expected 'jwks' or 'jwks_path'")
    if ("jwks" in entry) == ("jwks_path" in entry):
        raise ConfigError(f"{where} needs exactly one of 'jwks' (inline JWK Set) or 'jwks_path'")
    if "jwks" in entry:
        jwks = entry["jwks"]
    else:
        jp = entry["jwks_path"]
        if not isinstance(jp, str) or not jp:
            raise ConfigError(f"{where}.jwks_path must be a path string")
        try:
            jwks = json.loads(Path(jp).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where}.jwks_path: file not found: {jp}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}.jwks_path: cannot read {jp}: {e}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}.jwks_path: {jp} is not valid JSON (line {e.lineno}): {e.msg}") from None
        where = f"{where}.jwks_path ({jp})"
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ConfigError(f"{where}: a JWK Set must be an object with a non-empty 'keys' list")
    out: list[_Key] = []
    for i, jwk in enumerate(jwks["keys"]):
        out.append(_load_jwk(jwk, f"{where}.keys[{i}]"))
    kids = [k.kid for k in out]
    if len(out) > 1 and any(k is None for k in kids):
        raise ConfigError(f"{where}: with several keys, every key needs a 'kid'")
    dup = sorted({k for k in kids if k is not None and kids.count(k) > 1})
    if dup:
        raise ConfigError(f"{where}: duplicate kid(s) {dup}")
    return tuple(out)


def _load_jwk(jwk: Any, where: str) -> _Key:
    if not isinstance(jwk, Mapping):
        raise ConfigError(f"{where} must be a JWK object")
    private = sorted(m for m in _PRIVATE_JWK_MEMBERS if m in jwk)
    if private:
        raise ConfigError(f"{where}: holds private or symmetric key material {private}; only public keys belong here")
    kty = jwk.get("kty")
    if kty == "EC":
        if jwk.get("crv") != "P-384":
            raise ConfigError(f"{where}: EC keys must be on curve P-384 (ES384), got crv={jwk.get('crv')!r}")
        alg = "ES384"
    elif kty == "RSA":
        alg = "RS384"
    else:
        raise ConfigError(f"{where}: kty must be 'EC' (P-384) or 'RSA', got {kty!r}")
    if "alg" in jwk and jwk["alg"] != alg:
        raise ConfigError(f"{where}: alg {jwk['alg']!r} does not fit the key type (expected {alg})")
    if "use" in jwk and jwk["use"] != "sig":
        raise ConfigError(f"{where}: use must be 'sig', got {jwk['use']!r}")
    if "key_ops" in jwk and "verify" not in (jwk["key_ops"] or []):
        raise ConfigError(f"{where}: key_ops does not include 'verify'")
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise ConfigError(f"{where}: kid must be a non-empty string")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{where}: not a usable {alg} public key: {e}") from None
    if alg == "ES384" and not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{where}: not an EC public key")
    if alg == "RS384":
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigError(f"{where}: not an RSA public key")
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{where}: RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} required")
    return _Key(kid=kid, alg=alg, key=key)


# --------------------------------------------------------------------------- helpers


def _bearer(authorization_header: str | None) -> str:
    if not authorization_header:
        raise AuthError("no Authorization header")
    if len(authorization_header) > MAX_HEADER_CHARS:
        raise AuthError("Authorization header too long")
    parts = authorization_header.split(" ")
    if len(parts) != 2 or parts[0].lower() != "bearer":
        scheme = parts[0][:20] if parts[0].isascii() and parts[0].isalpha() else "?"
        raise AuthError(f"Authorization scheme is not Bearer (got {scheme!r})")
    token = parts[1]
    if not token or not token.isascii() or any(c.isspace() for c in token):
        raise AuthError("malformed bearer token")
    return token


def _short(v: Any) -> str:
    """A log-safe rendering of an attacker-supplied value (never a token)."""
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _num(payload: dict, name: str) -> float:
    v = payload.get(name)
    if v is None:
        raise AuthError(f"claim {name} missing")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise AuthError(f"claim {name} is not a number")
    return float(v)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- CDS Hooks JWT


def verify_cds_jwt(
    authorization_header: str | None,
    audience_url: str,
    config: AuthConfig,
    seen_jti: Callable[[str, str, datetime], bool],
    now: datetime | None = None,
) -> dict:
    """Verify a CDS Client's JWT and return its claims; raise :class:`AuthError` on any failure.

    ``audience_url`` is the exact URL called (what ``aud`` must equal). ``seen_jti(iss, jti,
    forget_after)`` is called only once everything else has passed; it must atomically record the
    pair and return True if it was new, False if seen before (a replay). ``forget_after`` is an
    aware UTC datetime after which this token can no longer be accepted (``min(exp, iat +
    max_token_age_s) + leeway_s``), so the store may drop the pair after it.
    """
    token = _bearer(authorization_header)
    moment = _utc(now)
    ts = moment.timestamp()
    leeway = config.leeway_s

    # 1. header: only the algorithm and kid are read, and neither chooses a key on its own
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("malformed JWT (header)") from None
    alg = header.get("alg")
    if alg not in ALLOWED_ALGS:
        raise AuthError(f"JWT alg {_short(alg)} not allowed (ES384 or RS384 only)")
    if "crit" in header:
        raise AuthError("JWT header has crit extensions, none are supported")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AuthError("JWT kid is not a string")
    # header "jku" / "x5u" / "jwk" are deliberately ignored: keys come only from the config

    # 2. issuer from the (not yet verified) payload, only to find the allowlisted keys
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthError("malformed JWT (payload)") from None
    iss = unverified.get("iss")
    if not isinstance(iss, str) or not iss:
        raise AuthError("claim iss missing or not a string")
    keys = config._keys.get(iss)
    if keys is None:
        raise AuthError(f"issuer {_short(iss)} not on the allowlist")

    # 3. key by kid within that issuer's JWK Set
    if kid is None:
        if len(keys) != 1:
            raise AuthError(f"JWT has no kid and issuer {_short(iss)} has {len(keys)} keys")
        key = keys[0]
    else:
        matches = [k for k in keys if k.kid == kid]
        if not matches:
            raise AuthError(f"unknown kid {_short(kid)} for issuer {_short(iss)}")
        key = matches[0]
    if alg != key.alg:
        raise AuthError(f"JWT alg {alg} does not match the {key.alg} key {_short(kid)}")

    # 4. signature (PyJWT), algorithm fixed by the key; time and audience checked below against `now`
    try:
        claims = jwt.decode(
            token,
            key=key.key,
            algorithms=[key.alg],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,  # sub and jti are checked below, the same on every PyJWT version
                "verify_jti": False,
                "require": [],
            },
        )
    except jwt.InvalidSignatureError:
        raise AuthError("JWT signature invalid") from None
    except jwt.PyJWTError as e:
        raise AuthError(f"JWT rejected: {type(e).__name__}") from None
    if claims.get("iss") != iss:  # cannot differ (same bytes), kept as a guard
        raise AuthError("issuer changed between reads")

    # 5. audience: the exact URL called, as a string or a one-element list
    aud = claims.get("aud")
    if aud is None:
        raise AuthError("claim aud missing")
    if isinstance(aud, list):
        if len(aud) != 1:
            raise AuthError(f"claim aud must name exactly one audience, has {len(aud)}")
        aud = aud[0]
    if not isinstance(aud, str) or aud != audience_url:
        raise AuthError(f"claim aud {_short(aud)} is not the URL called {_short(audience_url)}")

    # 6. times
    exp = _num(claims, "exp")
    iat = _num(claims, "iat")
    if exp <= ts - leeway:
        raise AuthError("JWT expired")
    if iat > ts + leeway:
        raise AuthError("JWT iat is in the future")
    if ts - iat > config.max_token_age_s + leeway:
        raise AuthError(f"JWT too old (iat more than {config.max_token_age_s} s ago)")
    if exp < iat:
        raise AuthError("JWT exp before iat")
    if "nbf" in claims and _num(claims, "nbf") > ts + leeway:
        raise AuthError("JWT not yet valid (nbf)")

    # 7. other claims
    jti = claims.get("jti")
    if jti is None:
        raise AuthError("claim jti missing")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise AuthError("claim jti must be a non-empty string of at most 256 characters")
    if "sub" in claims and not isinstance(claims["sub"], str):
        raise AuthError("claim sub is not a string")

    # 8. replay, last, so a token that fails any other check never consumes its jti
    forget_after = datetime.fromtimestamp(min(exp, iat + config.max_token_age_s) + leeway, tz=UTC)
    try:
        fresh = seen_jti(iss, jti, forget_after)
    except Exception as e:  # the store failing must fail closed
        raise AuthError(f"replay check failed: {type(e).__name__}") from None
    if fresh is not True:
        raise AuthError(f"jti replayed for issuer {_short(iss)}")
    return claims


# --------------------------------------------------------------------------- REST tokens


def verify_rest_token(authorization_header: str | None, config: AuthConfig) -> str:
    """Return the actor name for a REST bearer token, or raise :class:`AuthError`."""
    token = _bearer(authorization_header)
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    actor = None
    for known, name in config.rest_tokens.items():  # compare every entry, in constant time each
        if hmac.compare_digest(known, digest):
            actor = name
    if actor is None:
        raise AuthError("unknown REST token")
    return actor


def hash_rest_token(token: str) -> str:
    """The SHA-256 hex digest to put in ``rest_tokens`` for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- binding


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (also bracketed or IPv4-mapped) and "localhost"; False otherwise."""
    if not isinstance(host, str):
        return False
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h.lower().rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
