"""The HTTP service: CDS Hooks 2.0 (`/cds-services`) and a small REST API (`/v1`), every decision stored and audited.

Built by `create_app(Settings)`; `clinagent serve` runs it with uvicorn. Endpoints are plain (sync) functions:
FastAPI runs them in its thread pool, and the gate is CPU-bound anyway.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from .cdshooks import SERVICES, HookRequest, discovery, operation_outcome, order_cards, review_cards
from .errors import ConfigError, RecordError

log = logging.getLogger("clinagent.api")


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    auth_config: str | None = None  # path of the JSON auth config; None only with no_auth
    no_auth: bool = False
    model: str | None = None  # for patient-view reviews (default: offline)
    max_body_bytes: int = 5_000_000
    fhir_timeout_s: float = 10.0
    public_base_url: str | None = None  # the URL clients call (behind a proxy); JWT aud is checked against it


class Problem(Exception):
    """An HTTP error with a JSON body (and, for FHIR-shaped errors, an OperationOutcome)."""

    def __init__(self, status: int, message: str, pointer: str | None = None, outcome: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.pointer, self.outcome = status, message, pointer, outcome

    def response(self) -> JSONResponse:
        if self.outcome:
            code = {412: "incomplete", 413: "too-long", 422: "invalid", 404: "not-found"}.get(self.status, "exception")
            return JSONResponse(operation_outcome(self.message, code, self.pointer), status_code=self.status)
        body: dict[str, Any] = {"detail": self.message}
        if self.pointer is not None:
            body["pointer"] = self.pointer
        return JSONResponse(body, status_code=self.status)


def create_app(settings: Settings) -> FastAPI:
    from guardrails import load_knowledge

    from .store import Store

    if not settings.no_auth and not settings.auth_config:
        raise ConfigError("the service needs an auth config (--auth-config / CLINAGENT_AUTH_CONFIG) or --no-auth")
    auth = None
    if not settings.no_auth:
        from .auth import AuthConfig

        if not settings.public_base_url:
            raise ConfigError(
                "with authentication on, the service needs its public base URL (--public-url): the JWT "
                "aud is checked against it, never against the client's Host header"
            )
        auth = AuthConfig.load(settings.auth_config)
    store = Store(settings.database_url)
    kb = load_knowledge()
    app = FastAPI(
        title="clinagent",
        version="0.1.0",
        description="Clinical decision support behind deterministic safety gates: CDS Hooks 2.0 and REST.",
    )
    app.state.store, app.state.kb, app.state.settings = store, kb, settings

    @app.exception_handler(Problem)
    def _problem(_: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(Exception)
    def _internal(request: Request, exc: Exception) -> JSONResponse:  # never 200 with an empty card list
        log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return JSONResponse(operation_outcome(f"internal error ({type(exc).__name__})"), status_code=500)

    # ---- auth -------------------------------------------------------------------------------------------------

    def cds_auth(request: Request) -> str | None:
        if auth is None:
            return None
        from .auth import AuthError, verify_cds_jwt

        audience = settings.public_base_url.rstrip("/") + request.url.path  # never from the client's Host header
        try:
            claims = verify_cds_jwt(request.headers.get("authorization"), audience, auth, store.seen_jti)
        except AuthError as e:
            log.info("CDS Hooks call rejected: %s", e)  # the reason, never the token
            raise HTTPException(401) from None
        return claims.get("iss")

    def rest_auth(request: Request) -> str:
        if auth is None:
            return "anonymous (no-auth)"
        from .auth import AuthError, verify_rest_token

        try:
            return verify_rest_token(request.headers.get("authorization"), auth)
        except AuthError as e:
            log.info("REST call rejected: %s", e)
            raise Problem(401, "a valid bearer token is required") from None

    @app.exception_handler(HTTPException)
    def _http(_: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401:
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})  # a bare 401
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    async def body_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise Problem(413, f"request body larger than {settings.max_body_bytes} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > settings.max_body_bytes:
                raise Problem(413, f"request body larger than {settings.max_body_bytes} bytes")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise Problem(422, f"malformed JSON: {getattr(e, 'msg', str(e))}", "/") from None

    # ---- CDS Hooks --------------------------------------------------------------------------------------------

    @app.get("/cds-services")
    def cds_discovery(request: Request) -> dict:
        cds_auth(request)
        return discovery()

    @app.post("/cds-services/{service_id}")
    async def cds_call(service_id: str, request: Request) -> JSONResponse:
        if service_id not in SERVICES:
            raise Problem(404, f"no CDS service {service_id!r}")
        issuer = cds_auth(request)
        payload = await body_json(request)
        started = time.perf_counter()
        hook = SERVICES[service_id]["hook"]
        instance = str(payload.get("hookInstance", "")) if isinstance(payload, dict) else ""
        from starlette.concurrency import run_in_threadpool

        try:
            cards = await run_in_threadpool(_handle_hook, service_id, hook, payload, settings, app)
        except Problem as p:
            store.record_hook_call(service_id, hook, instance, p.status, 0, _ms(started), issuer)
            raise
        except Exception:
            store.record_hook_call(service_id, hook, instance, 500, 0, _ms(started), issuer)
            raise
        store.record_hook_call(service_id, hook, instance, 200, len(cards), _ms(started), issuer)
        return JSONResponse({"cards": cards})

    @app.post("/cds-services/{service_id}/feedback")
    async def cds_feedback(service_id: str, request: Request) -> Response:
        if service_id not in SERVICES:
            raise Problem(404, f"no CDS service {service_id!r}")
        cds_auth(request)
        payload = await body_json(request)
        items = payload.get("feedback") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not items:
            raise Problem(422, "feedback must be a non-empty list", "/feedback")
        for i, fb in enumerate(items):
            if not isinstance(fb, dict) or not fb.get("card") or fb.get("outcome") not in ("accepted", "overridden"):
                raise Problem(
                    422, "each feedback needs a card uuid and an outcome of accepted or overridden", f"/feedback/{i}"
                )
            reason = (fb.get("overrideReason") or {}).get("reason") or {}
            store.record_feedback(
                service_id,
                str(fb["card"]),
                fb["outcome"],
                reason.get("code"),
                (fb.get("overrideReason") or {}).get("userComment"),
                fb.get("outcomeTimestamp"),
            )
        return Response(status_code=200)

    # ---- REST ----------------------------------------------------------------------------------------------

    @app.post("/v1/check")
    async def rest_check(request: Request) -> JSONResponse:
        rest_auth(request)
        payload = await body_json(request)
        from starlette.concurrency import run_in_threadpool

        return JSONResponse(await run_in_threadpool(_check, payload, app))

    @app.post("/v1/reviews", status_code=201)
    async def rest_review(request: Request) -> JSONResponse:
        actor = rest_auth(request)
        payload = await body_json(request)
        from starlette.concurrency import run_in_threadpool

        review = await run_in_threadpool(_review, payload, settings, app)
        store.save_review(review)
        log.info("review %s stored for %s", review.run_id, actor)
        return JSONResponse(review.model_dump(mode="json"), status_code=201)

    @app.get("/v1/reviews/{review_id}")
    def rest_get_review(review_id: str, request: Request) -> dict:
        rest_auth(request)
        found = store.get_review(review_id)
        if found is None:
            raise Problem(404, f"no review {review_id}")
        return found

    @app.post("/v1/reviews/{review_id}/decisions", status_code=201)
    async def rest_decision(review_id: str, request: Request) -> JSONResponse:
        actor = rest_auth(request)
        payload = await body_json(request)
        if not isinstance(payload, dict):
            raise Problem(422, "the body must be a JSON object", "/")
        reason = payload.get("reason") or {}
        try:
            decision = store.add_decision(
                review_id,
                str(payload.get("suggestion_id", "")),
                str(payload.get("action", "")),
                reason.get("code"),
                reason.get("display"),
                payload.get("comment"),
                actor,
            )
        except KeyError as e:
            raise Problem(404, str(e).strip("'\"")) from None
        except ValueError as e:
            raise Problem(422, str(e), "/action") from None
        return JSONResponse(decision, status_code=201)

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok", "knowledge_version": kb.version}

    return app


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


# ---- request handling (run in the thread pool) ------------------------------------------------------------------


def _handle_hook(service_id: str, hook: str, payload: Any, settings: Settings, app: FastAPI) -> list[dict]:
    from pydantic import ValidationError

    try:
        req = HookRequest.model_validate(payload)
    except ValidationError as e:
        err = e.errors()[0]
        raise Problem(422, err["msg"], "/" + "/".join(str(x) for x in err["loc"])) from None
    if req.hook != hook:
        raise Problem(422, f"service {service_id} answers {hook}, not {req.hook}", "/hook")
    patient_id = req.context.get("patientId")
    if not isinstance(patient_id, str) or not patient_id:
        raise Problem(422, "context.patientId is required", "/context/patientId")
    record = _record(req, patient_id, settings)
    kb = app.state.kb
    if hook in ("order-select", "order-sign"):
        return _order_cards(req, record, kb)
    from .review import run_review

    review = run_review(record, model=settings.model, as_of=datetime.now(UTC).date(), kb=kb)
    app.state.store.save_review(review)
    return review_cards(review.model_dump(mode="json"))


def _record(req: HookRequest, patient_id: str, settings: Settings):
    """The patient's record from the prefetch, fetching what is missing from the FHIR server (412 if it cannot)."""
    from .record import record_from_resources

    items: list[tuple[str, dict, str]] = []
    prefetch = req.prefetch or {}
    template = SERVICES[next(s for s in SERVICES if SERVICES[s]["hook"] == req.hook)]["prefetch"]
    usable = {k: v for k, v in prefetch.items() if _complete(v)}
    for key, value in usable.items():  # what the client sent, under our keys or its own
        items += _resources(value, f"/prefetch/{key}")
    for key, query in template.items():
        # absent, null, an OperationOutcome (the client could not prefetch) or one page of several: fetch it, or 412
        if key not in usable:
            value = _fetch(req, query.replace("{{context.patientId}}", patient_id), key, settings)
            items += _resources(value, f"/prefetch/{key}")
    try:
        return record_from_resources(items, "prefetch", patient_id)
    except RecordError as e:
        status = 412 if "no Patient" in e.message else 422
        raise Problem(status, e.message, e.field or "/prefetch", outcome=True) from None


def _complete(value: Any) -> bool:
    if not isinstance(value, dict) or value.get("resourceType") == "OperationOutcome":
        return False
    return not any(link.get("relation") == "next" for link in value.get("link") or [] if isinstance(link, dict))


def _resources(value: Any, pointer: str) -> list[tuple[str, dict, str]]:
    if not isinstance(value, dict) or "resourceType" not in value:
        raise Problem(422, "a prefetch value must be a FHIR resource or Bundle", pointer, outcome=True)
    if value["resourceType"] != "Bundle":
        return [("", value, pointer)]
    out = []
    for i, e in enumerate(value.get("entry") or []):
        if isinstance(e, dict) and isinstance(e.get("resource"), dict):
            out.append((e.get("fullUrl") or "", e["resource"], f"{pointer}/entry/{i}/resource"))
    return out


def _fetch(req: HookRequest, query: str, key: str, settings: Settings) -> dict:
    """FHIR search against the client's server with its bearer token (never stored, never logged); 412 on failure."""
    from .fhirclient import FetchError, search

    if not req.fhirServer:
        raise Problem(
            412,
            f"prefetch '{key}' is missing and no fhirServer was given to fetch it",
            f"/prefetch/{key}",
            outcome=True,
        )
    token = req.fhirAuthorization.access_token if req.fhirAuthorization is not None else None
    try:
        return search(req.fhirServer, query, token, settings.fhir_timeout_s)
    except FetchError as e:
        log.info("FHIR fetch for prefetch %s failed: %s", key, e)
        raise Problem(
            412, f"could not fetch prefetch '{key}' from the FHIR server: {e}", f"/prefetch/{key}", outcome=True
        ) from None


def _order_cards(req: HookRequest, record, kb) -> list[dict]:
    from guardrails import gate
    from guardrails.sources import display_name

    from .record import parse_order

    draft = req.context.get("draftOrders")
    if not isinstance(draft, dict) or draft.get("resourceType") != "Bundle":
        raise Problem(422, "context.draftOrders must be a Bundle", "/context/draftOrders")
    facts = record.facts(datetime.now(UTC).date())
    drafts: list[Any] = []
    for i, e in enumerate(draft.get("entry") or []):
        res = (e or {}).get("resource") or {}
        if res.get("resourceType") != "MedicationRequest":
            continue  # other draft orders (labs, imaging) are not screened by these gates
        pointer = f"/context/draftOrders/entry/{i}/resource"
        try:
            drafts.append(parse_order(res, "draftOrders", pointer, record))
        except RecordError as err:
            raise Problem(422, err.message, err.field or pointer, outcome=True) from None
    pending = tuple(drafts)  # orders signed together are screened against each other
    cards: list[dict] = []
    for order in pending:
        verdict = gate(order, facts, kb, pending).as_dict()
        cards += order_cards(order.ref, display_name(order.text, order.codes, "this medication"), verdict)
    return cards


def _check(payload: Any, app: FastAPI) -> Any:
    from guardrails import gate

    from .record import parse_order, record_from_bundle

    if not isinstance(payload, dict) or "patient" not in payload or "order" not in payload:
        raise Problem(422, "the body needs 'patient' (a Bundle) and 'order' (a MedicationRequest or Bundle)", "/")
    try:
        record = record_from_bundle(payload["patient"], "/patient", payload.get("patient_id"))
        as_of = date.fromisoformat(payload["as_of"]) if payload.get("as_of") else None
        facts = record.facts(as_of)
        order = payload["order"]
        if isinstance(order, dict) and order.get("resourceType") == "Bundle":
            return [
                gate(
                    parse_order(e["resource"], "/order", f"/order/entry/{i}/resource", record), facts, app.state.kb
                ).as_dict()
                for i, e in enumerate(order.get("entry") or [])
            ]
        return gate(parse_order(order, "/order", "/order", record), facts, app.state.kb).as_dict()
    except RecordError as e:
        raise Problem(422, e.message, e.field or e.where) from None
    except (ValueError, TypeError, KeyError) as e:
        raise Problem(422, f"invalid request: {e}", "/") from None


def _review(payload: Any, settings: Settings, app: FastAPI):
    from .record import record_from_bundle
    from .review import run_review

    if not isinstance(payload, dict) or "bundle" not in payload:
        raise Problem(422, "the body needs 'bundle' (the patient's FHIR Bundle)", "/bundle")
    try:
        record = record_from_bundle(payload["bundle"], "/bundle", payload.get("patient_id"))
        as_of = date.fromisoformat(payload["as_of"]) if payload.get("as_of") else None
        return run_review(record, model=payload.get("model") or settings.model, as_of=as_of, kb=app.state.kb)
    except RecordError as e:
        raise Problem(422, e.message, e.field or e.where) from None
    except ConfigError as e:
        raise Problem(422, str(e), "/model") from None
    except ValueError as e:
        raise Problem(422, f"invalid request: {e}", "/as_of") from None


__all__ = ["Settings", "create_app"]
