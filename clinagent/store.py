"""The store: reviews, suggestions, findings, decisions, CDS Hooks calls and feedback, and a hash-chained audit log.

SQLite by default (a file in the working directory, WAL, synchronous FULL); PostgreSQL through ``DATABASE_URL``.
The schema is created and upgraded by Alembic (``migrations/``) whenever a ``Store`` opens.

Every write and its audit row commit in one transaction, so an acknowledged write always has its row. Audit appends
are serialised (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``pg_advisory_xact_lock``), so ``seq`` has no gaps and each
row holds the hash of the one before it. Audit payloads hold references, ids, codes and hashes only, never free text.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

if TYPE_CHECKING:
    from .review import Review

__all__ = ["AuditReport", "Store", "default_url", "make_engine"]

DEFAULT_URL = "sqlite:///clinagent.db"
GENESIS = "0" * 64
ACTIONS = frozenset({"accept", "reject", "override"})
# pg_advisory_xact_lock keys (any fixed int64): one for audit appends, one for migrations
AUDIT_LOCK = 0x636C696E61756474  # "clinaudt"
MIGRATE_LOCK = 0x636C696E6D696772  # "clinmigr"
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def default_url() -> str:
    """``$DATABASE_URL``, else a SQLite file ``clinagent.db`` in the working directory."""
    return os.environ.get("DATABASE_URL") or DEFAULT_URL


def _normalise(url: str) -> str:
    # psycopg 3 is the installed driver; a bare postgresql:// would make SQLAlchemy look for psycopg2
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class UTCDateTime(sa.TypeDecorator):
    """A timezone-aware UTC datetime on both backends (SQLite keeps naive UTC text; PostgreSQL timestamptz)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store keeps timezone-aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# ---- tables (the migration in migrations/versions/ creates exactly these) --------------------------------------


class ReviewRow(SQLModel, table=True):
    __tablename__ = "reviews"

    run_id: str = Field(primary_key=True, sa_type=sa.String(64))
    patient: str = Field(index=True, sa_type=sa.String(256))
    as_of: str = Field(sa_type=sa.String(32))
    model: str = Field(sa_type=sa.String(256))
    model_kind: str = Field(sa_type=sa.String(64))
    knowledge_version: str = Field(sa_type=sa.String(128))
    started_at: str = Field(sa_type=sa.String(64))
    stored_at: datetime = Field(sa_type=UTCDateTime)
    review_sha256: str = Field(sa_type=sa.String(64))
    message_history_sha256: str = Field(sa_type=sa.String(64))
    data: dict = Field(sa_type=sa.JSON)  # Review.model_dump(mode="json")
    message_history: str | None = Field(default=None, sa_type=sa.Text)  # the run, as hashed into the provenance


class SuggestionRow(SQLModel, table=True):
    __tablename__ = "suggestions"
    __table_args__ = (sa.UniqueConstraint("review_id", "suggestion_id", name="uq_suggestions_review_suggestion"),)

    id: int | None = Field(default=None, primary_key=True)
    review_id: str = Field(foreign_key="reviews.run_id", index=True, sa_type=sa.String(64))
    suggestion_id: str = Field(sa_type=sa.String(128))
    kind: str = Field(sa_type=sa.String(64))
    title: str = Field(sa_type=sa.Text)
    status: str = Field(sa_type=sa.String(16))  # shown | blocked | withheld
    attempt: int
    data: dict = Field(sa_type=sa.JSON)


class FindingRow(SQLModel, table=True):
    __tablename__ = "findings"

    id: int | None = Field(default=None, primary_key=True)
    review_id: str = Field(foreign_key="reviews.run_id", index=True, sa_type=sa.String(64))
    suggestion_pk: int = Field(foreign_key="suggestions.id", index=True)
    rule_id: str = Field(sa_type=sa.String(128))
    category: str = Field(sa_type=sa.String(64))
    severity: str = Field(sa_type=sa.String(16))
    message: str = Field(sa_type=sa.Text)
    data: dict = Field(sa_type=sa.JSON)


class DecisionRow(SQLModel, table=True):
    __tablename__ = "decisions"

    id: int | None = Field(default=None, primary_key=True)
    review_id: str = Field(foreign_key="reviews.run_id", index=True, sa_type=sa.String(64))
    suggestion_pk: int = Field(foreign_key="suggestions.id", index=True)
    suggestion_id: str = Field(sa_type=sa.String(128))
    action: str = Field(sa_type=sa.String(16))
    reason_code: str | None = Field(default=None, sa_type=sa.String(128))
    reason_display: str | None = Field(default=None, sa_type=sa.Text)
    comment: str | None = Field(default=None, sa_type=sa.Text)
    actor: str = Field(sa_type=sa.String(256))
    created_at: datetime = Field(sa_type=UTCDateTime)


class HookCallRow(SQLModel, table=True):
    __tablename__ = "hook_calls"

    id: int | None = Field(default=None, primary_key=True)
    service_id: str = Field(sa_type=sa.String(128))
    hook: str = Field(sa_type=sa.String(128))
    hook_instance: str = Field(index=True, sa_type=sa.String(256))
    status_code: int
    cards: int
    duration_ms: float
    issuer: str | None = Field(default=None, sa_type=sa.String(512))
    created_at: datetime = Field(sa_type=UTCDateTime)


class FeedbackRow(SQLModel, table=True):
    __tablename__ = "feedback"

    id: int | None = Field(default=None, primary_key=True)
    service_id: str = Field(sa_type=sa.String(128))
    card_uuid: str = Field(index=True, sa_type=sa.String(128))
    outcome: str = Field(sa_type=sa.String(32))
    override_code: str | None = Field(default=None, sa_type=sa.String(128))
    comment: str | None = Field(default=None, sa_type=sa.Text)
    outcome_timestamp: str | None = Field(default=None, sa_type=sa.String(64))
    created_at: datetime = Field(sa_type=UTCDateTime)


class JtiRow(SQLModel, table=True):
    """A used JWT id. Keyed by sha256(issuer NUL jti): bounded length, and the raw jti is never stored."""

    __tablename__ = "jti_seen"

    key_sha256: str = Field(primary_key=True, sa_type=sa.String(64))
    issuer: str = Field(sa_type=sa.String(512))
    expires_at: datetime = Field(index=True, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)


class AuditRow(SQLModel, table=True):
    """One link of the chain. ``seq`` is assigned under the append lock (last + 1), so the log has no gaps."""

    __tablename__ = "audit_log"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    created_at: datetime = Field(sa_type=UTCDateTime)
    kind: str = Field(index=True, sa_type=sa.String(32))
    ref: str = Field(index=True, sa_type=sa.String(256))
    payload: dict = Field(sa_type=sa.JSON)
    payload_sha256: str = Field(sa_type=sa.String(64))
    prev_hash: str = Field(sa_type=sa.String(64))
    hash: str = Field(sa_type=sa.String(64))


TABLES = [
    t.__table__ for t in (ReviewRow, SuggestionRow, FindingRow, DecisionRow, HookCallRow, FeedbackRow, JtiRow, AuditRow)
]


# ---- hashing ---------------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: the bytes every payload hash is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def chain_hash(prev_hash: str, seq: int, created_at: datetime, kind: str, ref: str, payload_sha256: str) -> str:
    stamp = created_at.astimezone(UTC).isoformat(timespec="microseconds")
    return _sha256("|".join((prev_hash, str(seq), stamp, kind, ref, payload_sha256)))


@dataclass(frozen=True)
class AuditReport:
    ok: bool
    rows: int
    first_bad: int | None  # the seq of the first row that does not verify
    message: str


def _audit_dict(row: AuditRow) -> dict:
    return {
        "seq": row.seq,
        "created_at": row.created_at.isoformat(timespec="microseconds"),
        "kind": row.kind,
        "ref": row.ref,
        "payload": row.payload,
        "payload_sha256": row.payload_sha256,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def _decision_dict(d: DecisionRow) -> dict:
    return {
        "id": d.id,
        "review_id": d.review_id,
        "suggestion_id": d.suggestion_id,
        "action": d.action,
        "reason_code": d.reason_code,
        "reason_display": d.reason_display,
        "comment": d.comment,
        "actor": d.actor,
        "created_at": d.created_at.isoformat(timespec="microseconds"),
    }


# ---- engine ----------------------------------------------------------------------------------------------------


def make_engine(url: str) -> Engine:
    """An engine with the store's connection settings.

    On SQLite: WAL, foreign keys, synchronous FULL, and ``BEGIN IMMEDIATE`` for every transaction except those
    opened with ``execution_options(sqlite_begin="DEFERRED")`` (reads)."""
    url = _normalise(url)
    if make_url(url).get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # the driver must not open transactions itself: "begin" below does
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # IMMEDIATE takes the write lock up front: writers queue (busy timeout) instead of failing on upgrade
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {'DEFERRED' if mode == 'DEFERRED' else 'IMMEDIATE'}")

    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run ``alembic upgrade`` over ``engine`` (its pragmas and locks apply to the migration too)."""
    from alembic import command
    from alembic.config import Config

    from .errors import ConfigError

    if not (MIGRATIONS / "env.py").exists():  # they live beside the package: an editable install (pip install -e .)
        raise ConfigError(f"the store's migrations are missing: {MIGRATIONS}")

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:  # one transaction: the migration commits whole or not at all
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# ---- the store -------------------------------------------------------------------------------------------------


class Store:
    """Persistence for the API and the UI. Thread-safe: each call opens its own session from a pooled engine."""

    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        self.url = _normalise(url or default_url())
        self.engine = make_engine(self.url)
        self.backend = self.engine.dialect.name
        self._reader = self.engine.execution_options(sqlite_begin="DEFERRED")  # reads do not take the write lock
        if migrate:
            upgrade(self.engine)

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- audit --

    def _append(self, session: Session, kind: str, ref: str, payload: dict) -> AuditRow:
        """Append one chained row inside the caller's transaction (which commits it with what it audits)."""
        if self.backend == "postgresql":
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK})
        # on SQLite the transaction began IMMEDIATE, so it already holds the database's single write lock
        last = session.execute(sa.select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)).first()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        created = _now()
        payload_sha = _sha256(canonical_json(payload))
        row = AuditRow(
            seq=seq,
            created_at=created,
            kind=kind,
            ref=ref,
            payload=payload,
            payload_sha256=payload_sha,
            prev_hash=prev,
            hash=chain_hash(prev, seq, created, kind, ref, payload_sha),
        )
        session.add(row)
        session.flush()
        return row

    def audit(self, kind: str, ref: str, payload: dict) -> dict:
        """Append one chained row on its own. No PHI in ``payload``: references, ids, codes and hashes only."""
        with Session(self.engine) as s:
            row = self._append(s, kind, ref, payload)
            out = _audit_dict(row)
            s.commit()
        return out

    def audit_rows(self, kind: str | None = None, after_seq: int = 0, limit: int | None = None) -> list[dict]:
        """Audit rows in chain order (for tests, the UI and exports)."""
        q = select(AuditRow).where(AuditRow.seq > after_seq).order_by(AuditRow.seq)
        if kind is not None:
            q = q.where(AuditRow.kind == kind)
        if limit is not None:
            q = q.limit(limit)
        with Session(self._reader) as s:
            return [_audit_dict(r) for r in s.exec(q)]

    def verify_audit(self) -> AuditReport:
        """Walk the chain from seq 1: contiguous seq, prev_hash links, payload hashes and row hashes."""
        prev, expected, n = GENESIS, 1, 0
        with self._reader.connect() as conn:
            result = conn.execution_options(yield_per=1000).execute(
                sa.select(AuditRow.__table__).order_by(AuditRow.__table__.c.seq)
            )
            rows = iter(result)
            while True:
                try:
                    r = next(rows, None)
                    if r is None:
                        break
                    n += 1
                    problem = None
                    if r.seq != expected:
                        problem = f"expected seq {expected}, found {r.seq} (rows missing)"
                    elif r.prev_hash != prev:
                        problem = "prev_hash does not match the previous row's hash"
                    elif _sha256(canonical_json(r.payload)) != r.payload_sha256:
                        problem = "payload does not match payload_sha256"
                    elif chain_hash(r.prev_hash, r.seq, r.created_at, r.kind, r.ref, r.payload_sha256) != r.hash:
                        problem = "hash does not match the row's contents"
                except (ValueError, TypeError, AttributeError) as e:  # a value edited into something unreadable
                    result.close()
                    return AuditReport(
                        False, n, expected, f"audit chain broken at seq {expected}: unreadable row ({type(e).__name__})"
                    )
                if problem:
                    result.close()
                    return AuditReport(False, n, r.seq, f"audit chain broken at seq {r.seq}: {problem}")
                prev, expected = r.hash, expected + 1
        return AuditReport(True, n, None, f"audit chain OK: {n} rows")

    # -- reviews and decisions --

    def save_review(self, review: Review) -> str:
        """Store a review, its suggestions and their findings, and audit it, in one transaction.

        Raises ValueError if a review with this run_id is already stored (reviews are immutable)."""
        data = review.model_dump(mode="json")
        history = None
        if review.message_history:
            from pydantic_ai.messages import ModelMessagesTypeAdapter

            history = ModelMessagesTypeAdapter.dump_json(review.message_history).decode()
        groups = {"shown": review.shown, "blocked": review.blocked, "withheld": review.withheld}
        review_sha = _sha256(canonical_json(data))
        try:
            with Session(self.engine) as s:
                s.add(
                    ReviewRow(
                        run_id=review.run_id,
                        patient=review.patient,
                        as_of=review.as_of,
                        model=review.model,
                        model_kind=review.model_kind,
                        knowledge_version=review.knowledge_version,
                        started_at=review.started_at,
                        stored_at=_now(),
                        review_sha256=review_sha,
                        message_history_sha256=review.message_history_sha256,
                        data=data,
                        message_history=history,
                    )
                )
                s.flush()
                for group in groups.values():
                    for sug in group:
                        srow = SuggestionRow(
                            review_id=review.run_id,
                            suggestion_id=sug.id,
                            kind=sug.kind,
                            title=sug.title,
                            status=sug.status,
                            attempt=sug.attempt,
                            data=sug.model_dump(mode="json"),
                        )
                        s.add(srow)
                        s.flush()
                        for f in sug.findings:
                            s.add(
                                FindingRow(
                                    review_id=review.run_id,
                                    suggestion_pk=srow.id,
                                    rule_id=f.get("rule_id") or "",
                                    category=f.get("category") or "",
                                    severity=f.get("severity") or "",
                                    message=f.get("message") or "",
                                    data=f,
                                )
                            )
                payload = {
                    "run_id": review.run_id,
                    "review_sha256": review_sha,
                    "message_history_sha256": review.message_history_sha256,
                    "knowledge_version": review.knowledge_version,
                    "model": review.model,
                    "model_kind": review.model_kind,
                    "error": bool(review.error),
                    "suggestions": {k: [x.id for x in v] for k, v in groups.items()},
                    "findings": sorted(
                        {f.get("rule_id") or "" for v in groups.values() for x in v for f in x.findings}
                    ),
                }
                self._append(s, "review", f"review/{review.run_id}", payload)
                s.commit()
        except IntegrityError as e:
            if self.get_review(review.run_id) is not None:
                raise ValueError(f"review {review.run_id} is already stored") from None
            raise e
        return review.run_id

    def get_review(self, review_id: str) -> dict | None:
        """The stored Review JSON plus ``decisions`` (oldest first), or None."""
        with Session(self._reader) as s:
            row = s.get(ReviewRow, review_id)
            if row is None:
                return None
            decisions = s.exec(
                select(DecisionRow).where(DecisionRow.review_id == review_id).order_by(DecisionRow.id)
            ).all()
            return {**row.data, "decisions": [_decision_dict(d) for d in decisions]}

    def list_reviews(self, patient: str | None = None, limit: int = 50) -> list[dict]:
        """Stored reviews, newest first: run id, patient, as-of, model, counts and the number of decisions."""
        with Session(self._reader) as s:
            q = select(ReviewRow).order_by(ReviewRow.stored_at.desc()).limit(limit)
            if patient is not None:
                q = q.where(ReviewRow.patient == patient)
            out = []
            for row in s.exec(q):
                n = len(s.exec(select(DecisionRow.id).where(DecisionRow.review_id == row.run_id)).all())
                out.append(
                    {
                        "run_id": row.run_id,
                        "patient": row.patient,
                        "as_of": row.as_of,
                        "model": row.model,
                        "stored_at": row.stored_at.isoformat(),
                        "shown": len(row.data.get("shown", [])),
                        "blocked": len(row.data.get("blocked", [])),
                        "decisions": n,
                    }
                )
            return out

    def add_decision(
        self,
        review_id: str,
        suggestion_id: str,
        action: str,
        reason_code: str | None,
        reason_display: str | None,
        comment: str | None,
        actor: str,
    ) -> dict:
        """Record a clinician's accept / reject / override of one suggestion, and audit it.

        KeyError: no such review or suggestion. ValueError: unknown action, an override without a reason code,
        no actor, or accept/override of a suggestion the gates blocked or withheld (never actionable)."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {sorted(ACTIONS)}, got {action!r}")
        if action == "override" and not (reason_code and reason_code.strip()):
            raise ValueError("an override needs a reason code")
        if not (actor and actor.strip()):
            raise ValueError("a decision needs an actor")
        with Session(self.engine) as s:
            if s.get(ReviewRow, review_id) is None:
                raise KeyError(f"no review {review_id}")
            sug = s.exec(
                select(SuggestionRow).where(
                    SuggestionRow.review_id == review_id, SuggestionRow.suggestion_id == suggestion_id
                )
            ).first()
            if sug is None:
                raise KeyError(f"no suggestion {suggestion_id} in review {review_id}")
            if action != "reject" and sug.status != "shown":
                raise ValueError(
                    f"suggestion {suggestion_id} is {sug.status}, never actionable: it can only be rejected"
                )
            d = DecisionRow(
                review_id=review_id,
                suggestion_pk=sug.id,
                suggestion_id=suggestion_id,
                action=action,
                reason_code=reason_code,
                reason_display=reason_display,
                comment=comment,
                actor=actor,
                created_at=_now(),
            )
            s.add(d)
            s.flush()
            payload = {
                "decision_id": d.id,
                "review_id": review_id,
                "suggestion_id": suggestion_id,
                "action": action,
                "reason_code": reason_code,
                "actor": actor,
                "comment_sha256": _sha256(comment) if comment else None,
            }
            self._append(s, "decision", f"decision/{d.id}", payload)
            out = _decision_dict(d)
            s.commit()
        return out

    # -- CDS Hooks --

    def record_hook_call(
        self,
        service_id: str,
        hook: str,
        hook_instance: str,
        status_code: int,
        cards: int,
        duration_ms: float,
        issuer: str | None,
    ) -> int:
        """One CDS Hooks service call (the request's outcome, not its context) with its audit row; returns its id."""
        with Session(self.engine) as s:
            row = HookCallRow(
                service_id=service_id,
                hook=hook,
                hook_instance=hook_instance,
                status_code=int(status_code),
                cards=int(cards),
                duration_ms=round(float(duration_ms), 3),
                issuer=issuer,
                created_at=_now(),
            )
            s.add(row)
            s.flush()
            rid = row.id
            payload = {
                "id": rid,
                "service_id": service_id,
                "hook": hook,
                "hook_instance": hook_instance,
                "status_code": row.status_code,
                "cards": row.cards,
                "duration_ms": row.duration_ms,
                "issuer": issuer,
            }
            self._append(s, "hook_call", f"hook_call/{rid}", payload)
            s.commit()
        return rid

    def record_feedback(
        self,
        service_id: str,
        card_uuid: str,
        outcome: str,
        override_code: str | None,
        comment: str | None,
        outcome_timestamp: str | None,
    ) -> int:
        """One CDS Hooks feedback item (a card accepted or overridden) with its audit row; returns its id."""
        with Session(self.engine) as s:
            row = FeedbackRow(
                service_id=service_id,
                card_uuid=card_uuid,
                outcome=outcome,
                override_code=override_code,
                comment=comment,
                outcome_timestamp=outcome_timestamp,
                created_at=_now(),
            )
            s.add(row)
            s.flush()
            rid = row.id
            payload = {
                "id": rid,
                "service_id": service_id,
                "card_uuid": card_uuid,
                "outcome": outcome,
                "override_code": override_code,
                "outcome_timestamp": outcome_timestamp,
                "comment_sha256": _sha256(comment) if comment else None,
            }
            self._append(s, "feedback", f"feedback/{rid}", payload)
            s.commit()
        return rid

    def seen_jti(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """Record a JWT id; True if it is new, False if it was used before (a replay).

        The primary key decides, so two concurrent requests with one jti cannot both get True."""
        if isinstance(expires_at, int | float):  # a JWT exp claim as it comes
            expires_at = datetime.fromtimestamp(expires_at, UTC)
        elif expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        key = _sha256(f"{issuer}\x00{jti}")
        try:
            with Session(self.engine) as s:
                s.add(JtiRow(key_sha256=key, issuer=issuer, expires_at=expires_at, created_at=_now()))
                s.commit()
        except IntegrityError:
            return False
        self._jti_inserts = getattr(self, "_jti_inserts", 0) + 1
        if self._jti_inserts % 500 == 0:  # keep the table small: a jti past its expiry can never be accepted again
            self.prune_jti(_now())
        return True

    def prune_jti(self, before: datetime) -> int:
        """Forget jtis that expired before ``before`` (choose it past any exp leeway); returns how many."""
        with Session(self.engine) as s:
            n = s.execute(sa.delete(JtiRow).where(JtiRow.expires_at < before)).rowcount
            s.commit()
        return n
