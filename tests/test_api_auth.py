"""The service with authentication on: CDS Hooks JWTs (ES384/RS384) end to end, bare 401s, REST bearer tokens."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from clinagent.api import Settings, create_app
from clinagent.auth import hash_rest_token

ISS = "https://ehr.example.org"


def _jwk(public_key, kid: str, alg: str) -> dict:
    algo = ECAlgorithm if alg == "ES384" else RSAAlgorithm
    jwk = json.loads(algo.to_jwk(public_key))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture(scope="module")
def keys():
    return {
        "ec": ec.generate_private_key(ec.SECP384R1()),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


@pytest.fixture()
def client(tmp_path, keys):
    config = {
        "issuers": {
            ISS: {
                "jwks": {
                    "keys": [
                        _jwk(keys["ec"].public_key(), "ec1", "ES384"),
                        _jwk(keys["rsa"].public_key(), "rsa1", "RS384"),
                    ]
                }
            }
        },
        "rest_tokens": {hash_rest_token("s3cret-rest-token"): "dr-test"},
    }
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(config))
    app = create_app(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'a.db'}", auth_config=str(path), public_base_url="http://testserver"
        )
    )
    with TestClient(app) as c:
        yield c


def token(keys, aud: str, alg="ES384", kid="ec1", **over) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4()), "sub": "client"} | over
    key = keys["ec"] if alg == "ES384" else keys["rsa"]
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


@pytest.mark.parametrize("alg, kid", [("ES384", "ec1"), ("RS384", "rsa1")])
def test_valid_jwt_opens_discovery(client, keys, alg, kid):
    r = client.get(
        "/cds-services", headers={"Authorization": f"Bearer {token(keys, 'http://testserver/cds-services', alg, kid)}"}
    )
    assert r.status_code == 200 and r.json()["services"]


def test_every_failure_is_a_bare_401(client, keys):
    aud = "http://testserver/cds-services"
    replayed = token(keys, aud)
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {replayed}"}).status_code == 200
    bad = {
        "none": None,
        "replayed jti": replayed,
        "wrong aud (another service)": token(keys, "http://testserver/cds-services/clinagent-order-sign"),
        "expired": token(keys, aud, exp=int(time.time()) - 3600, iat=int(time.time()) - 3700),
        "HS256 with the public key": jwt.encode(
            {"iss": ISS, "aud": aud, "exp": int(time.time()) + 60, "iat": int(time.time()), "jti": "x"},
            "k" * 48,
            algorithm="HS256",
        ),
    }
    for name, tok in bad.items():
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        r = client.get("/cds-services", headers=headers)
        assert r.status_code == 401, name
        assert r.content == b"", name  # bare: nothing about why


def test_service_call_checks_aud_against_the_exact_url(client, keys):
    url = "http://testserver/cds-services/clinagent-order-sign"
    body = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "p", "draftOrders": {}}}
    r = client.post(
        "/cds-services/clinagent-order-sign",
        json=body,
        headers={"Authorization": f"Bearer {token(keys, 'http://testserver/cds-services')}"},
    )
    assert r.status_code == 401
    r = client.post(
        "/cds-services/clinagent-order-sign", json=body, headers={"Authorization": f"Bearer {token(keys, url)}"}
    )
    assert r.status_code == 412  # authenticated; the prefetch is missing and there is no FHIR server


def test_rest_needs_a_configured_bearer_token(client):
    assert client.get("/v1/reviews/x").status_code == 401
    assert client.get("/v1/reviews/x", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = client.get("/v1/reviews/x", headers={"Authorization": "Bearer s3cret-rest-token"})
    assert r.status_code == 404 and r.json()["detail"]


def test_no_auth_is_refused_off_loopback(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "clinagent.cli",
            "serve",
            "--no-auth",
            "--host",
            "0.0.0.0",
            "--database-url",
            f"sqlite:///{tmp_path / 'x.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "loopback" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "clinagent.cli", "serve", "--database-url", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in __import__("os").environ.items() if k != "CLINAGENT_AUTH_CONFIG"},
    )
    assert r.returncode == 2 and "--auth-config" in r.stderr


def test_aud_is_checked_against_the_public_url_not_the_host_header(client, keys):
    forged = token(keys, "http://evil.example/cds-services")
    r = client.get("/cds-services", headers={"Authorization": f"Bearer {forged}", "Host": "evil.example"})
    assert r.status_code == 401
