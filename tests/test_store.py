"""The store on SQLite and PostgreSQL: every method, decisions, jti replay, the audit chain under concurrency, tampering
and a killed writer, migrations from empty, and the `clinagent audit verify` / `db upgrade` commands.

PostgreSQL runs when TEST_DATABASE_URL is set (.ci/run sets it); each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from clinagent.store import GENESIS, SQLModel, Store, canonical_json, default_url, make_engine

from . import _bundles as B

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("TEST_DATABASE_URL")
TABLES = {"reviews", "suggestions", "findings", "decisions", "hook_calls", "feedback", "jti_seen", "audit_log"}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL is not set: PostgreSQL store tests skipped (.ci/run sets it)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as c:
        c.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield (
            make_url(admin.url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.begin() as c:
            c.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def store(url):
    s = Store(url)
    yield s
    s.close()


@pytest.fixture(scope="module")
def review():
    """A real review (offline planner): one suggestion shown, two blocked, with findings and a message history."""
    from clinagent.record import record_from_bundle
    from clinagent.review import run_review

    r = run_review(record_from_bundle(B.strep_penicillin_allergy()), as_of=date(2026, 11, 1))
    assert r.shown and r.blocked and r.message_history
    return r


def fresh(review):
    return review.model_copy(update={"run_id": str(uuid.uuid4())})


def sql(store: Store, statement: str, **params):
    with store.engine.begin() as c:
        result = c.execute(sa.text(statement), params)
        return result.all() if result.returns_rows else None


def seqs(store: Store) -> list[int]:
    return [r["seq"] for r in store.audit_rows()]


# ---- schema --------------------------------------------------------------------------------------------------


def test_migrations_create_the_schema_from_empty(url):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from clinagent.store import MIGRATIONS, current_revision, upgrade

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    s = Store(url)
    try:
        assert TABLES <= set(sa.inspect(s.engine).get_table_names())
        assert current_revision(s.engine) == head
        with s.engine.connect() as c:  # the migration builds exactly what the models describe
            assert compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), SQLModel.metadata) == []
        s.audit("test", "x/1", {"n": 1})
        Store(url).close()  # reopening at head changes nothing
        assert s.verify_audit().rows == 1
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with s.engine.begin() as c:
            cfg.attributes["connection"] = c
            command.downgrade(cfg, "base")
        assert not TABLES & set(sa.inspect(s.engine).get_table_names())
        upgrade(s.engine)
        assert TABLES <= set(sa.inspect(s.engine).get_table_names()) and s.verify_audit().rows == 0
    finally:
        s.close()


def test_sqlite_wal_foreign_keys_and_full_sync(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'a.db'}")
    with s.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    s.audit("test", "x/1", {})
    assert (tmp_path / "a.db-wal").exists()
    with pytest.raises(sa.exc.IntegrityError):  # foreign keys are enforced
        sql(
            s,
            "INSERT INTO suggestions (review_id, suggestion_id, kind, title, status, attempt, data) "
            "VALUES ('nope', 's', 'k', 't', 'shown', 1, '{}')",
        )
    s.close()


def test_default_url_and_postgres_scheme(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert default_url() == "sqlite:///clinagent.db"
    monkeypatch.chdir(tmp_path)
    Store().close()
    assert (tmp_path / "clinagent.db").exists()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    Store().close()
    assert (tmp_path / "env.db").exists()
    assert make_engine("postgresql://u:p@127.0.0.1/db").dialect.driver == "psycopg"
    assert make_engine("postgres://u:p@127.0.0.1/db").dialect.driver == "psycopg"


# ---- reviews and decisions -----------------------------------------------------------------------------------


def test_save_and_get_review(store, review):
    r = fresh(review)
    assert store.save_review(r) == r.run_id
    got = store.get_review(r.run_id)
    assert got == {**r.model_dump(mode="json"), "decisions": []}
    assert store.get_review("no-such-review") is None
    n_sug = len(r.shown) + len(r.blocked) + len(r.withheld)
    n_find = sum(len(s.findings) for s in r.shown + r.blocked + r.withheld)
    assert sql(store, "SELECT count(*) FROM suggestions WHERE review_id = :r", r=r.run_id)[0][0] == n_sug
    assert sql(store, "SELECT count(*) FROM findings WHERE review_id = :r", r=r.run_id)[0][0] == n_find > 0
    (history,) = sql(store, "SELECT message_history FROM reviews WHERE run_id = :r", r=r.run_id)[0]
    assert hashlib.sha256(history.encode()).hexdigest() == r.message_history_sha256  # the provenance hash checks out
    (row,) = store.audit_rows(kind="review")
    assert row["ref"] == f"review/{r.run_id}"
    assert row["payload"]["suggestions"]["shown"] == [s.id for s in r.shown]
    assert row["payload"]["review_sha256"] == hashlib.sha256(canonical_json(r.model_dump(mode="json"))).hexdigest()
    assert r.patient not in json.dumps(store.audit_rows())  # no patient reference in the audit log
    with pytest.raises(ValueError, match="already stored"):
        store.save_review(r)
    assert store.verify_audit().rows == 1


def test_decisions_are_stored_audited_and_listed(store, review):
    r = fresh(review)
    store.save_review(r)
    shown, blocked = r.shown[0].id, r.blocked[0].id
    a = store.add_decision(r.run_id, shown, "accept", None, None, None, "Practitioner/dr-a")
    assert a["action"] == "accept" and a["suggestion_id"] == shown and a["actor"] == "Practitioner/dr-a"
    assert a["review_id"] == r.run_id and isinstance(a["id"], int) and a["created_at"].endswith("+00:00")
    phi = "Pt Jane Roe says the rash came back"
    o = store.add_decision(r.run_id, shown, "override", "patient-preference", "Patient preference", phi, "dr-b")
    j = store.add_decision(r.run_id, blocked, "reject", None, None, None, "dr-a")  # rejecting a blocked one is fine
    got = store.get_review(r.run_id)["decisions"]
    assert [d["id"] for d in got] == [a["id"], o["id"], j["id"]]
    assert got[1] == o and got[1]["comment"] == phi and got[1]["reason_code"] == "patient-preference"
    rows = store.audit_rows(kind="decision")
    assert [x["ref"] for x in rows] == [f"decision/{d['id']}" for d in (a, o, j)]
    assert rows[1]["payload"]["reason_code"] == "patient-preference" and rows[1]["payload"]["comment_sha256"]
    assert phi not in json.dumps(store.audit_rows())
    assert store.verify_audit().ok


def test_decision_validation(store, review):
    r = fresh(review)
    store.save_review(r)
    shown, blocked = r.shown[0].id, r.blocked[0].id
    before = store.verify_audit().rows
    with pytest.raises(ValueError, match="action"):
        store.add_decision(r.run_id, shown, "approve", None, None, None, "dr")
    for code in (None, "", "  "):
        with pytest.raises(ValueError, match="reason code"):
            store.add_decision(r.run_id, shown, "override", code, "why", None, "dr")
    with pytest.raises(ValueError, match="actor"):
        store.add_decision(r.run_id, shown, "accept", None, None, None, "")
    with pytest.raises(KeyError):
        store.add_decision("no-such-review", shown, "accept", None, None, None, "dr")
    with pytest.raises(KeyError):
        store.add_decision(r.run_id, "no-such-suggestion", "accept", None, None, None, "dr")
    for action, code in (("accept", None), ("override", "clinical-judgement")):  # blocked is never actionable
        with pytest.raises(ValueError, match="blocked"):
            store.add_decision(r.run_id, blocked, action, code, None, None, "dr")
    assert store.get_review(r.run_id)["decisions"] == []
    assert store.verify_audit().rows == before


# ---- CDS Hooks calls, feedback, jti --------------------------------------------------------------------------


def test_hook_calls_and_feedback(store):
    h = store.record_hook_call("med-safety", "order-select", "inst-1", 200, 2, 12.34567, "https://ehr.example")
    h2 = store.record_hook_call("med-safety", "order-sign", "inst-2", 401, 0, 0.5, None)
    f = store.record_feedback(
        "med-safety", "card-1", "overridden", "patient-preference", "free text", "2026-11-27T01:00:00Z"
    )
    assert h2 > h and isinstance(f, int)
    rows = store.audit_rows()
    assert [(x["kind"], x["ref"]) for x in rows] == [
        ("hook_call", f"hook_call/{h}"),
        ("hook_call", f"hook_call/{h2}"),
        ("feedback", f"feedback/{f}"),
    ]
    assert rows[0]["payload"] | {} == {
        "id": h,
        "service_id": "med-safety",
        "hook": "order-select",
        "hook_instance": "inst-1",
        "status_code": 200,
        "cards": 2,
        "duration_ms": 12.346,
        "issuer": "https://ehr.example",
    }
    assert rows[2]["payload"]["override_code"] == "patient-preference" and "free text" not in json.dumps(rows)
    assert sql(store, "SELECT outcome, comment FROM feedback WHERE id = :i", i=f) == [("overridden", "free text")]
    assert rows[0]["prev_hash"] == GENESIS and rows[1]["prev_hash"] == rows[0]["hash"]
    assert store.verify_audit().ok


def test_a_write_and_its_audit_row_commit_together(store, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("audit append failed")

    monkeypatch.setattr(store, "_append", boom)
    with pytest.raises(RuntimeError):
        store.record_hook_call("svc", "order-select", "inst", 200, 0, 1.0, None)
    with pytest.raises(RuntimeError):
        store.record_feedback("svc", "card", "accepted", None, None, None)
    assert sql(store, "SELECT count(*) FROM hook_calls")[0][0] == 0
    assert sql(store, "SELECT count(*) FROM feedback")[0][0] == 0


def test_jti_replay(store):
    exp = datetime.now(UTC) + timedelta(minutes=5)
    assert store.seen_jti("https://ehr.example", "jti-1", exp) is True
    assert store.seen_jti("https://ehr.example", "jti-1", exp) is False
    assert store.seen_jti("https://other.example", "jti-1", exp) is True  # per issuer
    assert store.seen_jti("https://ehr.example", "x" * 5000, exp) is True  # long ids are keyed by their hash
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def race():
        barrier.wait()
        results.append(store.seen_jti("https://ehr.example", "jti-race", exp))

    threads = [threading.Thread(target=race) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]
    assert "jti-1" not in json.dumps(sql(store, "SELECT * FROM jti_seen"), default=str)  # only hashes are kept
    assert store.prune_jti(datetime.now(UTC) + timedelta(hours=1)) == 4
    assert store.seen_jti("https://ehr.example", "jti-1", exp) is True


# ---- the audit chain -----------------------------------------------------------------------------------------


def test_concurrent_appends_chain_without_gaps(url, review):
    stores = [Store(url) for _ in range(3)]  # three engines: like three API workers
    r = fresh(review)
    stores[0].save_review(r)
    errors: list[BaseException] = []
    n_threads, per_thread = 12, 15

    def work(i: int) -> None:
        s = stores[i % len(stores)]
        try:
            for k in range(per_thread):
                match k % 4:
                    case 0:
                        s.record_hook_call("svc", "order-select", f"i{i}-{k}", 200, 1, 3.5, "iss")
                    case 1:
                        s.record_feedback("svc", f"c{i}-{k}", "accepted", None, None, None)
                    case 2:
                        s.add_decision(r.run_id, r.shown[0].id, "reject", None, None, None, f"dr{i}")
                    case _:
                        s.audit("test", f"t/{i}/{k}", {"i": i, "k": k})
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    report = stores[1].verify_audit()
    total = 1 + n_threads * per_thread
    assert report.ok and report.rows == total, report
    assert seqs(stores[2]) == list(range(1, total + 1))
    assert len(stores[0].get_review(r.run_id)["decisions"]) == n_threads * ((per_thread + 1) // 4)
    for s in stores:
        s.close()


def _drop_append_only_triggers(store: Store) -> None:
    if store.backend == "postgresql":
        sql(store, "DROP TRIGGER audit_log_no_change ON audit_log")
    else:
        sql(store, "DROP TRIGGER audit_log_no_update")
        sql(store, "DROP TRIGGER audit_log_no_delete")


@pytest.mark.parametrize(
    ("tamper", "first_bad", "why"),
    [
        ("UPDATE audit_log SET ref = 'decision/999' WHERE seq = 3", 3, "hash does not match"),
        ("UPDATE audit_log SET payload = :p WHERE seq = 3", 3, "payload"),
        ("UPDATE audit_log SET hash = :h WHERE seq = 3", 3, "hash does not match"),
        ("UPDATE audit_log SET created_at = created_at + interval '1 second' WHERE seq = 3", 3, "hash does not match"),
        ("DELETE FROM audit_log WHERE seq = 3", 4, "expected seq 3"),
    ],
    ids=["ref", "payload", "hash", "created_at", "deleted-row"],
)
def test_tampering_is_detected_at_the_row(store, tamper, first_bad, why):
    for i in range(6):
        store.audit("test", f"t/{i}", {"i": i})
    assert store.verify_audit().ok
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):  # the triggers refuse edits ...
        sql(store, "UPDATE audit_log SET ref = 'x' WHERE seq = 2")
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        sql(store, "DELETE FROM audit_log WHERE seq = 6")
    _drop_append_only_triggers(store)  # ... and someone who drops them is still caught by the chain
    if "interval" in tamper and store.backend == "sqlite":
        tamper = "UPDATE audit_log SET created_at = datetime(created_at, '+1 second') WHERE seq = 3"
    params = {"p": json.dumps({"i": 99}), "h": "f" * 64}
    with store.engine.begin() as c:
        c.execute(sa.text(tamper), {k: v for k, v in params.items() if f":{k}" in tamper})
    report = store.verify_audit()
    assert not report.ok and report.first_bad == first_bad and why in report.message, report
    assert f"seq {first_bad}" in report.message


def test_an_unreadable_row_is_reported_not_raised(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'a.db'}")
    for i in range(4):
        s.audit("test", f"t/{i}", {"i": i})
    _drop_append_only_triggers(s)
    sql(s, "UPDATE audit_log SET payload = 'not json' WHERE seq = 3")
    report = s.verify_audit()
    assert not report.ok and report.first_bad == 3 and "unreadable" in report.message, report
    s.close()


CRASH_WRITER = """
import sys
from clinagent.store import Store
s = Store(sys.argv[1])
for i in range(100000):
    rid = s.record_hook_call("svc", "order-select", f"inst-{i}", 200, 1, 1.0, "iss")
    print(rid, flush=True)  # acknowledged only after the commit returned
"""


def test_a_killed_writer_loses_no_acknowledged_row(url):
    Store(url).close()  # migrate first, so the writer starts appending at once
    procs = [
        subprocess.Popen([sys.executable, "-c", CRASH_WRITER, url], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(2)
    ]
    acked: list[int] = []
    for p in procs:
        for _ in range(40):
            line = p.stdout.readline()
            assert line, "writer died early"
            acked.append(int(line))
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()
        acked += [int(x) for x in p.stdout.read().split()]  # whatever it acknowledged before dying
    s = Store(url)
    try:
        stored = {row[0] for row in sql(s, "SELECT id FROM hook_calls")}
        assert set(acked) <= stored
        audited = {int(r["ref"].split("/")[1]) for r in s.audit_rows(kind="hook_call")}
        assert stored == audited  # every stored call has its audit row
        report = s.verify_audit()
        assert report.ok and report.rows == len(stored), report
        s.audit("test", "after-crash", {})  # the chain continues
        assert s.verify_audit().ok
    finally:
        s.close()


# ---- the commands --------------------------------------------------------------------------------------------


def clinagent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clinagent.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_db_upgrade_and_audit_verify(url):
    r = clinagent("db", "upgrade", "--database-url", url)
    assert r.returncode == 0, r.stderr
    s = Store(url)
    for i in range(3):
        s.audit("test", f"t/{i}", {"i": i})
    r = clinagent("audit", "verify", "--database-url", url)
    assert r.returncode == 0 and "3 rows" in r.stdout and "OK" in r.stdout, r.stdout + r.stderr
    _drop_append_only_triggers(s)
    sql(s, "UPDATE audit_log SET kind = 'other' WHERE seq = 2")
    r = clinagent("audit", "verify", "--database-url", url)
    assert r.returncode == 1 and "seq 2" in r.stdout, r.stdout + r.stderr
    password = make_url(url).password
    assert not password or password not in r.stdout + r.stderr
    s.close()


def test_cli_audit_verify_without_a_database(tmp_path):
    missing = tmp_path / "missing.db"
    r = clinagent("audit", "verify", "--database-url", f"sqlite:///{missing}")
    assert r.returncode == 2 and "no database" in r.stderr and not missing.exists()


def test_list_reviews_newest_first(tmp_path):
    from datetime import date

    from clinagent.record import record_from_bundle
    from clinagent.review import run_review
    from clinagent.store import Store

    from . import _bundles as B

    st = Store(f"sqlite:///{tmp_path / 'l.db'}")
    a = run_review(record_from_bundle(B.strep_penicillin_allergy()), as_of=date(2026, 11, 1))
    b = run_review(record_from_bundle(B.heart_failure_low_egfr()), as_of=date(2026, 11, 1))
    st.save_review(a)
    st.save_review(b)
    rows = st.list_reviews()
    assert [r["run_id"] for r in rows] == [b.run_id, a.run_id]
    assert next(r for r in st.list_reviews(patient=a.patient) if r["run_id"] == a.run_id)["shown"] == len(a.shown)
    assert st.list_reviews(patient="Patient/nobody") == []
    st.add_decision(a.run_id, a.shown[0].id, "accept", None, None, None, "dr-x")
    assert next(r for r in st.list_reviews() if r["run_id"] == a.run_id)["decisions"] == 1


def test_expired_jtis_are_pruned_as_new_ones_arrive(tmp_path):
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from clinagent.store import Store

    st = Store(f"sqlite:///{tmp_path / 'j.db'}")
    past = datetime.now(UTC) - timedelta(hours=1)
    future = datetime.now(UTC) + timedelta(minutes=5)
    assert st.seen_jti("iss", "old", past)
    for i in range(499):
        assert st.seen_jti("iss", f"new-{i}", future)
    with st.engine.connect() as c:
        n = c.execute(sa.text("select count(*) from jti_seen")).scalar()
    assert n == 499  # the expired one went at the 500th insert; the live ones stay
    assert not st.seen_jti("iss", "new-0", future)  # replay still refused
