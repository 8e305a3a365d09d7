"""clinagent.auth: CDS Hooks client JWTs (ES384/RS384 only), REST bearer tokens, loopback checks.

Every key here is generated at test time and lives only in memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from clinagent.auth import (
    AuthConfig,
    AuthError,
    hash_rest_token,
    is_loopback,
    verify_cds_jwt,
    verify_rest_token,
)
from clinagent.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "fixtures" / "auth" / "cds-clients.example.json"

ISS_A = "https://ehr-a.example.org/"  # two EC P-384 keys: kid required
ISS_B = "https://ehr-b.example.org"  # one RSA key, with kid
ISS_C = "https://ehr-c.example.org"  # one EC P-384 key without kid
AUD = "https://cds.example.org/cds-services/clinagent-review"
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
T = int(NOW.timestamp())
REST_TOKEN = "rest-token-for-tests-0123456789abcdef"
DROP = object()  # marks a claim or header field to leave out


def _pem(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(public_key, kid: str | None, alg: str) -> dict:
    algo = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
    d = algo.to_jwk(public_key, as_dict=True)
    d.update({"use": "sig", "alg": alg})
    if kid is not None:
        d["kid"] = kid
    return d


@dataclass
class Kit:
    a1: Any
    a2: Any
    b: Any
    c: Any
    attacker: Any
    p256: Any
    config: AuthConfig
    jwks: dict[str, dict] = field(default_factory=dict)

    def claims(self, **over) -> dict:
        c = {"iss": ISS_A, "aud": AUD, "exp": T + 120, "iat": T - 5, "jti": str(uuid.uuid4()), "tenant": "t-1"}
        for k, v in over.items():
            if v is DROP:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def token(self, key=None, alg="ES384", kid: Any = "a-ec-1", headers: dict | None = None, **claims) -> str:
        h = {} if kid is DROP else {"kid": kid}
        h.update(headers or {})
        return jwt.encode(self.claims(**claims), self.a1 if key is None else key, algorithm=alg, headers=h)

    def bearer(self, *a, **kw) -> str:
        return "Bearer " + self.token(*a, **kw)


def _raw_token(header: dict, payload: dict, sign) -> str:
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    return signing_input + "." + _b64(sign(signing_input.encode()))


@pytest.fixture(scope="module")
def kit() -> Kit:
    a1 = ec.generate_private_key(ec.SECP384R1())
    a2 = ec.generate_private_key(ec.SECP384R1())
    b = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    c = ec.generate_private_key(ec.SECP384R1())
    jwks = {
        ISS_A: {"keys": [_jwk(a1.public_key(), "a-ec-1", "ES384"), _jwk(a2.public_key(), "a-ec-2", "ES384")]},
        ISS_B: {"keys": [_jwk(b.public_key(), "b-rsa", "RS384")]},
        ISS_C: {"keys": [_jwk(c.public_key(), None, "ES384")]},
    }
    config = AuthConfig(
        issuers={iss: {"jwks": s} for iss, s in jwks.items()},
        rest_tokens={hashlib.sha256(REST_TOKEN.encode()).hexdigest(): "integrator-1"},
    )
    return Kit(
        a1=a1,
        a2=a2,
        b=b,
        c=c,
        attacker=ec.generate_private_key(ec.SECP384R1()),
        p256=ec.generate_private_key(ec.SECP256R1()),
        config=config,
        jwks=jwks,
    )


class FakeSeen:
    """The store's replay check, as a set: True when (iss, jti) is new."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, str, datetime]] = []

    def __call__(self, iss: str, jti: str, forget_after: datetime) -> bool:
        self.calls.append((iss, jti, forget_after))
        if (iss, jti) in self.seen:
            return False
        self.seen.add((iss, jti))
        return True


# --------------------------------------------------------------------------- bad tokens


def _es384_raw(k: Kit, header: dict, claims: dict) -> str:
    """Signed with issuer A's first key, bypassing PyJWT's encode-side checks on header and claims."""
    signer = ECAlgorithm(ECAlgorithm.SHA384)
    return "Bearer " + _raw_token({"alg": "ES384", **header}, claims, lambda m: signer.sign(m, k.a1))


def _alg_none(k: Kit, s: FakeSeen) -> str:
    return "Bearer " + _raw_token({"alg": "none", "typ": "JWT", "kid": "a-ec-1"}, k.claims(), lambda _: b"")


def _hmac_with_public_pem(digest, alg):
    def build(k: Kit, s: FakeSeen) -> str:
        secret = _pem(k.a1.public_key())
        header = {"alg": alg, "typ": "JWT", "kid": "a-ec-1"}
        return "Bearer " + _raw_token(header, k.claims(), lambda m: hmac.new(secret, m, digest).digest())

    return build


def _tampered(k: Kit, s: FakeSeen) -> str:
    h, _, sig = k.token().split(".")
    forged = _b64(json.dumps(k.claims(tenant="someone-else")).encode())
    return f"Bearer {h}.{forged}.{sig}"


def _sig_stripped(k: Kit, s: FakeSeen) -> str:
    h, p, _ = k.token().split(".")
    return f"Bearer {h}.{p}."


def _replayed(k: Kit, s: FakeSeen) -> str:
    s.seen.add((ISS_A, "jti-used-before"))
    return k.bearer(jti="jti-used-before")


BAD: dict[str, Any] = {
    # algorithms
    "alg_none": _alg_none,
    "hs256_signed_with_public_key_pem": _hmac_with_public_pem(hashlib.sha256, "HS256"),
    "hs384_signed_with_public_key_pem": _hmac_with_public_pem(hashlib.sha384, "HS384"),
    "rs256": lambda k, s: k.bearer(key=k.b, alg="RS256", kid="b-rsa", iss=ISS_B),
    "es256": lambda k, s: k.bearer(key=k.p256, alg="ES256"),
    "es512_header": lambda k, s: (
        "Bearer " + _raw_token({"alg": "ES512", "kid": "a-ec-1"}, k.claims(), lambda m: b"x" * 132)
    ),
    "es384_header_on_rsa_kid": lambda k, s: k.bearer(kid="b-rsa", iss=ISS_B),
    "rs384_header_on_ec_kid": lambda k, s: k.bearer(key=k.b, alg="RS384", kid="a-ec-1"),
    # keys
    "unknown_kid": lambda k, s: k.bearer(kid="a-ec-9"),
    "no_kid_with_several_keys": lambda k, s: k.bearer(kid=DROP),
    "kid_not_string": lambda k, s: _es384_raw(k, {"kid": 7}, k.claims()),
    "key_of_another_issuer_same_kid": lambda k, s: k.bearer(key=k.c, kid="a-ec-1"),
    "kid_of_another_issuer": lambda k, s: k.bearer(key=k.b, alg="RS384", kid="b-rsa"),
    "jku_to_attacker_keys": lambda k, s: k.bearer(
        key=k.attacker, kid="attacker", headers={"jku": "https://attacker.example/jwks"}
    ),
    "jku_to_attacker_keys_known_kid": lambda k, s: k.bearer(
        key=k.attacker, headers={"jku": "https://attacker.example/jwks"}
    ),
    "embedded_jwk_header": lambda k, s: k.bearer(
        key=k.attacker, kid="attacker", headers={"jwk": _jwk(k.attacker.public_key(), "attacker", "ES384")}
    ),
    "crit_header": lambda k, s: k.bearer(headers={"crit": ["exp"]}),
    # issuer
    "wrong_iss": lambda k, s: k.bearer(iss="https://evil.example.org/"),
    "iss_without_trailing_slash": lambda k, s: k.bearer(iss=ISS_A.rstrip("/")),
    "iss_missing": lambda k, s: k.bearer(iss=DROP),
    "iss_not_string": lambda k, s: _es384_raw(k, {"kid": "a-ec-1"}, k.claims(iss=[ISS_A])),
    # audience
    "wrong_aud": lambda k, s: k.bearer(aud="https://cds.example.org/cds-services/other-service"),
    "aud_discovery_url": lambda k, s: k.bearer(aud="https://cds.example.org/cds-services"),
    "aud_trailing_slash": lambda k, s: k.bearer(aud=AUD + "/"),
    "aud_http_not_https": lambda k, s: k.bearer(aud=AUD.replace("https:", "http:")),
    "aud_list_two_values": lambda k, s: k.bearer(aud=[AUD, "https://other.example.org/"]),
    "aud_empty_list": lambda k, s: k.bearer(aud=[]),
    "aud_missing": lambda k, s: k.bearer(aud=DROP),
    # times
    "expired": lambda k, s: k.bearer(exp=T - 31, iat=T - 100),
    "iat_in_future": lambda k, s: k.bearer(iat=T + 60, exp=T + 200),
    "iat_too_old": lambda k, s: k.bearer(iat=T - 331, exp=T + 100),
    "nbf_in_future": lambda k, s: k.bearer(nbf=T + 120),
    "exp_missing": lambda k, s: k.bearer(exp=DROP),
    "iat_missing": lambda k, s: k.bearer(iat=DROP),
    "exp_not_number": lambda k, s: k.bearer(exp=str(T + 120)),
    "iat_bool": lambda k, s: k.bearer(iat=True),
    # other claims
    "jti_missing": lambda k, s: k.bearer(jti=DROP),
    "jti_empty": lambda k, s: k.bearer(jti=""),
    "jti_not_string": lambda k, s: k.bearer(jti=12345),
    "sub_not_string": lambda k, s: k.bearer(sub=42),
    "replayed_jti": _replayed,
    # signature
    "bad_signature_tampered_payload": _tampered,
    "signature_stripped": _sig_stripped,
    # header shape
    "malformed_jwt": lambda k, s: "Bearer not.a.jwt",
    "one_segment": lambda k, s: "Bearer abcdef",
    "header_not_json": lambda k, s: "Bearer " + _b64(b"{nope") + "." + _b64(b"{}") + ".c2ln",
    "basic_scheme": lambda k, s: "Basic " + base64.b64encode(b"user:pass").decode(),
    "bearer_without_token": lambda k, s: "Bearer ",
    "bearer_two_spaces": lambda k, s: "Bearer  " + k.token(),
    "token_without_scheme": lambda k, s: k.token(),
    "empty": lambda k, s: "",
    "none": lambda k, s: None,
    "huge_header": lambda k, s: "Bearer " + "a" * 10000,
}

# why each case must fail (a substring of AuthError.reason), so no case passes for an unintended reason
WHY = {
    "alg_none": "alg 'none' not allowed",
    "hs256_signed_with_public_key_pem": "alg 'HS256' not allowed",
    "hs384_signed_with_public_key_pem": "alg 'HS384' not allowed",
    "rs256": "alg 'RS256' not allowed",
    "es256": "alg 'ES256' not allowed",
    "es512_header": "alg 'ES512' not allowed",
    "es384_header_on_rsa_kid": "does not match the RS384 key",
    "rs384_header_on_ec_kid": "does not match the ES384 key",
    "unknown_kid": "unknown kid",
    "no_kid_with_several_keys": "no kid",
    "kid_not_string": "malformed JWT (header)",
    "key_of_another_issuer_same_kid": "signature invalid",
    "kid_of_another_issuer": "unknown kid 'b-rsa'",
    "jku_to_attacker_keys": "unknown kid 'attacker'",
    "jku_to_attacker_keys_known_kid": "signature invalid",
    "embedded_jwk_header": "unknown kid 'attacker'",
    "crit_header": "header",
    "wrong_iss": "not on the allowlist",
    "iss_without_trailing_slash": "not on the allowlist",
    "iss_missing": "iss missing",
    "iss_not_string": "not a string",
    "wrong_aud": "is not the URL called",
    "aud_discovery_url": "is not the URL called",
    "aud_trailing_slash": "is not the URL called",
    "aud_http_not_https": "is not the URL called",
    "aud_list_two_values": "exactly one audience",
    "aud_empty_list": "exactly one audience",
    "aud_missing": "aud missing",
    "expired": "expired",
    "iat_in_future": "iat is in the future",
    "iat_too_old": "too old",
    "nbf_in_future": "nbf",
    "exp_missing": "exp missing",
    "iat_missing": "iat missing",
    "exp_not_number": "exp is not a number",
    "iat_bool": "iat is not a number",
    "jti_missing": "jti missing",
    "jti_empty": "jti must be a non-empty string",
    "jti_not_string": "jti must be a non-empty string",
    "sub_not_string": "sub is not a string",
    "replayed_jti": "replayed",
    "bad_signature_tampered_payload": "signature invalid",
    "signature_stripped": "signature invalid",
    "malformed_jwt": "malformed JWT",
    "one_segment": "malformed JWT",
    "header_not_json": "malformed JWT",
    "basic_scheme": "not Bearer",
    "bearer_without_token": "malformed bearer token",
    "bearer_two_spaces": "not Bearer",
    "token_without_scheme": "not Bearer",
    "empty": "no Authorization header",
    "none": "no Authorization header",
    "huge_header": "too long",
}


def test_matrix_is_large_enough():
    assert len(BAD) >= 20
    assert sorted(WHY) == sorted(BAD)


def test_raw_signer_makes_valid_tokens(kit: Kit):
    """The hand-built tokens in the matrix fail for the intended reason, not because the builder is wrong."""
    header = _es384_raw(kit, {"kid": "a-ec-1"}, kit.claims())
    assert verify_cds_jwt(header, AUD, kit.config, FakeSeen(), now=NOW)["iss"] == ISS_A


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_token_rejected(kit: Kit, case: str):
    seen = FakeSeen()
    header = BAD[case](kit, seen)
    with pytest.raises(AuthError) as ei:
        verify_cds_jwt(header, AUD, kit.config, seen, now=NOW)
    reason = str(ei.value)
    assert ei.value.reason == reason
    assert WHY[case] in reason, f"{case} failed for another reason: {reason}"
    if header and header.startswith("Bearer "):  # the reason never carries the token
        for part in header[len("Bearer ") :].split("."):
            if len(part) > 16:
                assert part not in reason
    if case == "replayed_jti":
        assert len(seen.calls) == 1
    else:  # a token failing any other check never consumes its jti
        assert seen.calls == []


# --------------------------------------------------------------------------- good tokens


def test_es384_ok(kit: Kit):
    seen = FakeSeen()
    claims = verify_cds_jwt(kit.bearer(), AUD, kit.config, seen, now=NOW)
    assert claims["iss"] == ISS_A and claims["aud"] == AUD and claims["tenant"] == "t-1"
    assert len(seen.calls) == 1


def test_es384_second_key_of_issuer_ok(kit: Kit):
    claims = verify_cds_jwt(kit.bearer(key=kit.a2, kid="a-ec-2"), AUD, kit.config, FakeSeen(), now=NOW)
    assert claims["iss"] == ISS_A


def test_rs384_ok(kit: Kit):
    header = kit.bearer(key=kit.b, alg="RS384", kid="b-rsa", iss=ISS_B, sub="ehr-client-7")
    claims = verify_cds_jwt(header, AUD, kit.config, FakeSeen(), now=NOW)
    assert claims["iss"] == ISS_B and claims["sub"] == "ehr-client-7"


def test_single_key_issuer_without_kid_ok(kit: Kit):
    claims = verify_cds_jwt(kit.bearer(key=kit.c, kid=DROP, iss=ISS_C), AUD, kit.config, FakeSeen(), now=NOW)
    assert claims["iss"] == ISS_C


def test_aud_single_element_list_ok(kit: Kit):
    assert verify_cds_jwt(kit.bearer(aud=[AUD]), AUD, kit.config, FakeSeen(), now=NOW)["aud"] == [AUD]


def test_spec_shaped_header_with_jku_ok(kit: Kit):
    """The spec's example header carries jku; it is ignored and the configured key verifies."""
    header = kit.bearer(headers={"typ": "JWT", "jku": "https://attacker.example/jwks"})
    assert verify_cds_jwt(header, AUD, kit.config, FakeSeen(), now=NOW)["iss"] == ISS_A


def test_lowercase_bearer_scheme_ok(kit: Kit):
    assert verify_cds_jwt("bearer " + kit.token(), AUD, kit.config, FakeSeen(), now=NOW)["iss"] == ISS_A


def test_real_clock_when_now_omitted(kit: Kit):
    t = int(datetime.now(UTC).timestamp())
    header = kit.bearer(iat=t, exp=t + 300)
    assert verify_cds_jwt(header, AUD, kit.config, FakeSeen())["iss"] == ISS_A


@pytest.mark.parametrize(
    "claims",
    [
        {"iat": T + 25, "exp": T + 200},  # iat slightly ahead: inside leeway
        {"iat": T - 200, "exp": T - 25},  # just expired: inside leeway
        {"iat": T - 325, "exp": T + 60},  # max age + part of leeway
    ],
    ids=["iat_skew", "exp_skew", "age_skew"],
)
def test_leeway(kit: Kit, claims: dict):
    assert verify_cds_jwt(kit.bearer(**claims), AUD, kit.config, FakeSeen(), now=NOW)


def test_naive_now_is_utc(kit: Kit):
    naive = NOW.replace(tzinfo=None)
    assert verify_cds_jwt(kit.bearer(), AUD, kit.config, FakeSeen(), now=naive)


# --------------------------------------------------------------------------- replay


def test_replay_rejected_and_jti_scoped_by_issuer(kit: Kit):
    seen = FakeSeen()
    header = kit.bearer(jti="same-jti")
    verify_cds_jwt(header, AUD, kit.config, seen, now=NOW)
    with pytest.raises(AuthError, match="replay"):
        verify_cds_jwt(header, AUD, kit.config, seen, now=NOW)
    other = kit.bearer(key=kit.b, alg="RS384", kid="b-rsa", iss=ISS_B, jti="same-jti")
    verify_cds_jwt(other, AUD, kit.config, seen, now=NOW)
    assert seen.seen == {(ISS_A, "same-jti"), (ISS_B, "same-jti")}


def test_forget_after_passed_to_store(kit: Kit):
    seen = FakeSeen()
    verify_cds_jwt(kit.bearer(iat=T - 5, exp=T + 120), AUD, kit.config, seen, now=NOW)
    verify_cds_jwt(kit.bearer(iat=T - 5, exp=T + 3600), AUD, kit.config, seen, now=NOW)
    (_, _, f1), (_, _, f2) = seen.calls
    assert f1 == datetime.fromtimestamp(T + 120 + 30, tz=UTC)  # exp + leeway
    assert f2 == datetime.fromtimestamp(T - 5 + 300 + 30, tz=UTC)  # capped at iat + max age + leeway
    assert f1.tzinfo is not None


@pytest.mark.parametrize("answer", [False, None, 1, "yes"])
def test_store_answer_must_be_true(kit: Kit, answer):
    with pytest.raises(AuthError):
        verify_cds_jwt(kit.bearer(), AUD, kit.config, lambda *a: answer, now=NOW)


def test_store_failure_fails_closed(kit: Kit):
    def broken(*a):
        raise RuntimeError("database is locked")

    with pytest.raises(AuthError, match="replay check failed"):
        verify_cds_jwt(kit.bearer(), AUD, kit.config, broken, now=NOW)


def test_max_token_age_configurable(kit: Kit):
    strict = AuthConfig(issuers={ISS_A: {"jwks": kit.jwks[ISS_A]}}, rest_tokens={}, leeway_s=0, max_token_age_s=60)
    with pytest.raises(AuthError, match="too old"):
        verify_cds_jwt(kit.bearer(iat=T - 61), AUD, strict, FakeSeen(), now=NOW)
    assert verify_cds_jwt(kit.bearer(iat=T - 60), AUD, strict, FakeSeen(), now=NOW)


# --------------------------------------------------------------------------- config


def test_example_config_loads():
    cfg = AuthConfig.load(EXAMPLE_CONFIG)
    assert cfg.leeway_s == 30 and cfg.max_token_age_s == 300
    assert {k.alg for keys in cfg._keys.values() for k in keys} == {"ES384", "RS384"}
    assert all(len(d) == 64 for d in cfg.rest_tokens)


def test_example_config_does_not_trust_the_spec_example_key():
    """The CDS Hooks spec publishes the private key of its example; the example config must not trust it."""
    text = EXAMPLE_CONFIG.read_text()
    assert "46SDH7Znh821wblCBglA61sNE9ZrHYKKt3qRtRTmSXyOI_FIGBLWrWa0GPUkDCEk" not in text


def test_load_resolves_jwks_path_relative_to_config(tmp_path: Path, kit: Kit):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "b.json").write_text(json.dumps(kit.jwks[ISS_B]))
    cfg_file = tmp_path / "auth.json"
    cfg_file.write_text(json.dumps({"issuers": {ISS_B: {"jwks_path": "keys/b.json"}}, "rest_tokens": {}}))
    cfg = AuthConfig.load(cfg_file)
    header = kit.bearer(key=kit.b, alg="RS384", kid="b-rsa", iss=ISS_B)
    assert verify_cds_jwt(header, AUD, cfg, FakeSeen(), now=NOW)["iss"] == ISS_B


def test_load_copies_example_dir(tmp_path: Path):
    for f in EXAMPLE_CONFIG.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    assert AuthConfig.load(tmp_path / EXAMPLE_CONFIG.name).issuers


def _write(tmp_path: Path, obj: Any) -> Path:
    p = tmp_path / "cds-clients.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def _bad_configs(kit: Kit) -> dict[str, tuple[Any, str]]:
    ec_pub = kit.jwks[ISS_A]["keys"][0]
    p256 = _jwk(kit.p256.public_key(), "p256", "ES256")
    small_rsa = _jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(), "r", "RS384")
    private = ECAlgorithm.to_jwk(kit.a1, as_dict=True)
    return {
        "not_json": ("{issuers:", "not valid JSON"),
        "not_object": ([], "JSON object"),
        "issuers_missing": ({"rest_tokens": {}}, "issuers"),
        "unknown_field": ({"issuers": {}, "issuer": {}}, "unknown field"),
        "raw_rest_token": ({"issuers": {}, "rest_tokens": {REST_TOKEN: "x"}}, "rest_tokens"),
        "rest_actor_empty": ({"issuers": {}, "rest_tokens": {hash_rest_token("t"): ""}}, "actor"),
        "leeway_negative": ({"issuers": {}, "leeway_s": -1}, "leeway_s"),
        "max_age_string": ({"issuers": {}, "max_token_age_s": "300"}, "max_token_age_s"),
        "jwks_and_path": ({"issuers": {ISS_A: {"jwks": {"keys": [ec_pub]}, "jwks_path": "x"}}}, "exactly one"),
        "jwks_path_missing": ({"issuers": {ISS_A: {"jwks_path": "nope.json"}}}, "not found"),
        "jwks_empty": ({"issuers": {ISS_A: {"jwks": {"keys": []}}}}, "non-empty"),
        "private_key": ({"issuers": {ISS_A: {"jwks": {"keys": [private]}}}}, "private"),
        "oct_key": ({"issuers": {ISS_A: {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}}}, "private"),
        "p256_key": ({"issuers": {ISS_A: {"jwks": {"keys": [p256]}}}}, "P-384"),
        "small_rsa": ({"issuers": {ISS_A: {"jwks": {"keys": [small_rsa]}}}}, "2048"),
        "alg_mismatch": ({"issuers": {ISS_A: {"jwks": {"keys": [{**ec_pub, "alg": "RS384"}]}}}}, "alg"),
        "use_enc": ({"issuers": {ISS_A: {"jwks": {"keys": [{**ec_pub, "use": "enc"}]}}}}, "use"),
        "duplicate_kid": ({"issuers": {ISS_A: {"jwks": {"keys": [ec_pub, ec_pub]}}}}, "duplicate kid"),
        "several_keys_without_kid": (
            {"issuers": {ISS_A: {"jwks": {"keys": [{**ec_pub, "kid": None}, ec_pub]}}}},
            "kid",
        ),
        "bad_point": ({"issuers": {ISS_A: {"jwks": {"keys": [{**ec_pub, "x": ec_pub["y"]}]}}}}, "not a usable"),
    }


BAD_CONFIG_NAMES = [
    "not_json",
    "not_object",
    "issuers_missing",
    "unknown_field",
    "raw_rest_token",
    "rest_actor_empty",
    "leeway_negative",
    "max_age_string",
    "jwks_and_path",
    "jwks_path_missing",
    "jwks_empty",
    "private_key",
    "oct_key",
    "p256_key",
    "small_rsa",
    "alg_mismatch",
    "use_enc",
    "duplicate_kid",
    "several_keys_without_kid",
    "bad_point",
]


@pytest.mark.parametrize("case", BAD_CONFIG_NAMES)
def test_bad_config_rejected_naming_file(tmp_path: Path, kit: Kit, case: str):
    obj, needle = _bad_configs(kit)[case]
    path = _write(tmp_path, obj)
    with pytest.raises(ConfigError) as ei:
        AuthConfig.load(path)
    msg = str(ei.value)
    assert str(path) in msg and needle in msg
    assert REST_TOKEN not in msg


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        AuthConfig.load(tmp_path / "absent.json")


def test_direct_construction_validates():
    with pytest.raises(ConfigError, match="auth config"):
        AuthConfig(issuers={ISS_A: {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}}, rest_tokens={})


# --------------------------------------------------------------------------- REST tokens


def test_rest_token_ok(kit: Kit):
    assert verify_rest_token("Bearer " + REST_TOKEN, kit.config) == "integrator-1"
    assert hash_rest_token(REST_TOKEN) in kit.config.rest_tokens


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer ",
        "Bearer wrong-token",
        "Bearer " + REST_TOKEN + "x",
        "Basic " + base64.b64encode(REST_TOKEN.encode()).decode(),
        REST_TOKEN,
        "Bearer " + hashlib.sha256(REST_TOKEN.encode()).hexdigest(),  # the digest is not the token
    ],
    ids=["none", "empty", "no_token", "unknown", "suffix", "basic", "no_scheme", "digest_as_token"],
)
def test_rest_token_rejected(kit: Kit, header):
    with pytest.raises(AuthError) as ei:
        verify_rest_token(header, kit.config)
    assert REST_TOKEN not in str(ei.value)


def test_cds_jwt_is_not_a_rest_token(kit: Kit):
    with pytest.raises(AuthError):
        verify_rest_token(kit.bearer(), kit.config)


# --------------------------------------------------------------------------- loopback


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"]
)
def test_is_loopback(host: str):
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "",
        "192.168.1.10",
        "10.0.0.1",
        "128.0.0.1",
        "::2",
        "example.org",
        "localhost.example.org",
        "127.0.0.1.nip.io",
        "::ffff:10.0.0.1",
    ],  # fmt: skip
)
def test_is_not_loopback(host: str):
    assert not is_loopback(host)


def test_bad_config_names_cover_cases(kit: Kit):
    assert sorted(BAD_CONFIG_NAMES) == sorted(_bad_configs(kit))
