"""The ``clinagent`` command line. Each subcommand imports only what it needs."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

EXIT_OK, EXIT_BLOCKED, EXIT_INPUT = 0, 1, 2


def _as_of(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--as-of must be YYYY-MM-DD, got {value!r}") from None


def cmd_check(args: argparse.Namespace) -> int:
    from guardrails import gate, load_knowledge
    from guardrails.sources import display_name

    from .record import Staleness, load_orders, load_record  # noqa: F811

    rec = load_record(args.patient, args.patient_id)
    orders = load_orders(args.order)
    staleness = Staleness(
        weight_days=args.weight_max_age,
        child_weight_days=args.child_weight_max_age,
        renal_days=args.renal_max_age,
        lab_days=args.lab_max_age,
    )
    facts = rec.facts(args.as_of, staleness)
    kb = load_knowledge()
    pending = tuple(o for _, o in orders)  # orders in one Bundle are screened against each other
    verdicts = [gate(o, facts, kb, pending) for _, o in orders]
    single = len(verdicts) == 1 and _is_single_resource(args.order)
    if args.json:
        payload = verdicts[0].as_dict() if single else [v.as_dict() for v in verdicts]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        for (_, order), v in zip(orders, verdicts, strict=True):
            _print_verdict(display_name(order.text, order.codes, "?"), v, facts)
    return EXIT_OK if all(v.allowed for v in verdicts) else EXIT_BLOCKED


def _is_single_resource(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return json.load(f).get("resourceType") != "Bundle"
    except Exception:
        return True


def _print_verdict(name: str, v, facts) -> None:
    status = "ALLOWED" if v.allowed else "BLOCKED"
    print(f"{status}  {name}  (patient {facts.patient_ref}, as of {facts.as_of}, knowledge {v.knowledge_version[:12]})")
    if not v.findings:
        print("  no findings")
    width = max((len(f.category) for f in v.findings), default=0)
    for f in v.findings:
        print(f"  {f.severity.upper():5}  {f.category:{width}}  {f.message}")
        for e in f.evidence:
            src = "; ".join(label for label, _ in e.sources)
            print(f"         - {e.ref}: {e.value}" + (f" [{src}]" if src else ""))
    print()


def cmd_review(args: argparse.Namespace) -> int:
    from .record import load_record
    from .review import run_review, to_fhir

    rec = load_record(args.bundle, args.patient_id)
    review = run_review(rec, model=args.model, as_of=args.as_of)
    if args.fhir_out:
        from pathlib import Path

        out = Path(args.fhir_out)
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"review-{review.run_id}.json"
        target.write_text(json.dumps(to_fhir(review), indent=2))
        print(f"FHIR bundle written to {target}", file=sys.stderr)
    if args.json:
        sys.stdout.write(review.model_dump_json(indent=2) + "\n")
    else:
        _print_review(review)
    return EXIT_OK if not review.error else EXIT_BLOCKED


def _print_review(r) -> None:
    print(f"Review of {r.patient} as of {r.as_of}")
    print(f"Model: {r.model} ({r.model_kind}); knowledge {r.knowledge_version[:12]}; run {r.run_id}")
    if r.notice:
        print(f"NOTICE: {r.notice}")
    if r.error:
        print(f"ERROR: {r.error} (nothing is shown as actionable)")
    for title, items in (
        ("Suggestions", r.shown),
        ("Blocked by the safety gates (not actionable)", r.blocked),
        ("Withheld (the run did not finish)", r.withheld),
    ):
        if not items:
            continue
        print(f"\n{title}:")
        for s in items:
            print(f"  - {s.title}")
            print(f"      why: {s.rationale}")
            for c in s.cites:
                print(f"      cites {c['reference']}: {c['value']}")
            for f in s.findings:
                print(f"      {f['severity'].upper()} {f['category']}: {f['message']}")
    if not (r.shown or r.blocked or r.withheld or r.notice):
        print("\nNo suggestions.")
    for st in r.stale_data:
        print(f"STALE: relied on {st['fact']} from {st['reference']} ({st['date']}), older than its staleness limit")
    if r.usage:
        print(
            f"\n{r.usage.get('requests')} model requests, {r.usage.get('input_tokens')} input / "
            f"{r.usage.get('output_tokens')} output tokens"
        )


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import confusion, format_confusion, junit, load_patient_cases, replay_case

    outcomes = []
    for case in load_patient_cases(args.directory):
        o = replay_case(case, model=args.model)
        outcomes.append(o)
        status = "SKIP" if o.skipped else ("ok" if o.passed else "FAIL")
        print(f"{status:4}  {case.id}" + (f"  ({o.skipped})" if o.skipped else ""))
        for p in o.problems:
            print(f"        {p}")
    print()
    print(format_confusion(confusion(outcomes)))
    ran = [o for o in outcomes if not o.skipped]
    failed = [o for o in ran if not o.passed]
    print(
        f"\n{len(ran) - len(failed)} passed, {len(failed)} failed"
        + (f", {len(outcomes) - len(ran)} skipped" if len(ran) < len(outcomes) else "")
    )
    if args.junit:
        junit(outcomes, args.junit)
    skipped = len(outcomes) - len(ran)
    if skipped and not args.allow_missing:
        print(
            f"{skipped} case(s) could not run (bundle missing): not a pass; use --allow-missing to accept that",
            file=sys.stderr,
        )
        return EXIT_BLOCKED
    return EXIT_BLOCKED if failed else EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from .auth import is_loopback
    from .errors import ConfigError

    auth_config = args.auth_config or os.environ.get("CLINAGENT_AUTH_CONFIG")
    if args.no_auth and not is_loopback(args.host):
        raise ConfigError(f"--no-auth is refused on {args.host}: bind a loopback address (127.0.0.1, ::1) to use it")
    if not args.no_auth and not auth_config:
        raise ConfigError("give --auth-config FILE (or CLINAGENT_AUTH_CONFIG); --no-auth only for local development")
    import uvicorn

    from .api import Settings, create_app

    app = create_app(
        Settings(
            database_url=args.database_url,
            auth_config=auth_config,
            no_auth=args.no_auth,
            model=args.model,
            public_base_url=args.public_url or f"http://{args.host}:{args.port}",
        )
    )
    # access_log off: paths and headers never reach a log (no PHI, no tokens)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    """Start the clinician app (Streamlit) on loopback."""
    import os
    from pathlib import Path

    app = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.headless",
        "true",
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--browser.gatherUsageStats",
        "false",
    ]
    env = dict(os.environ)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    print(f"clinagent app on http://{args.host}:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    sys.stderr.flush()
    os.execve(sys.executable, cmd, env)  # become Streamlit: signals (Ctrl-C, SIGTERM) reach the server directly
    return EXIT_OK  # not reached


def cmd_knowledge(args: argparse.Namespace) -> int:
    from guardrails import load_knowledge

    kb = load_knowledge(use_cache=not args.no_cache)
    out = {"knowledge_version": kb.version, **kb.stats}
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return EXIT_OK


def _store_url(args: argparse.Namespace) -> str:
    from .store import default_url

    return args.database_url or default_url()


def cmd_audit_verify(args: argparse.Namespace) -> int:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from .errors import ConfigError
    from .store import Store

    url = _store_url(args)
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        from pathlib import Path

        if not Path(u.database).exists():  # verifying must not create an empty database
            raise ConfigError(f"no database at {u.database}")
    store = Store(url, migrate=False)
    try:
        if not sa.inspect(store.engine).has_table("audit_log"):
            raise ConfigError("no audit log in this database (create it with `clinagent db upgrade`)")
        report = store.verify_audit()
    except sa.exc.SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or type(e).__name__).splitlines()[0]
        raise ConfigError(f"cannot read the audit log: {reason}") from None
    finally:
        store.close()
    print(report.message if report.ok else f"FAILED: {report.message} ({report.rows} rows read)")
    return EXIT_OK if report.ok else EXIT_BLOCKED


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from .store import Store, current_revision

    store = Store(_store_url(args))  # opening a Store runs `alembic upgrade head`
    try:
        print(f"database schema at revision {current_revision(store.engine)} ({store.backend})")
    finally:
        store.close()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from .record import Staleness

    p = argparse.ArgumentParser(
        prog="clinagent", description="Clinical decision support behind deterministic safety gates."
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="screen medication orders for one patient with the safety gates")
    c.add_argument("--patient", required=True, help="FHIR R4 Bundle (JSON) or NDJSON file/directory")
    c.add_argument("--order", required=True, help="a MedicationRequest JSON, or a Bundle of them")
    c.add_argument("--json", action="store_true", help="print the Verdict as JSON (a list for a Bundle of orders)")
    c.add_argument("--as-of", type=_as_of, default=None, help="reason as of this date (YYYY-MM-DD; default today)")
    c.add_argument("--patient-id", default=None, help="which patient, when the input holds several")
    d = Staleness()
    c.add_argument(
        "--weight-max-age",
        type=int,
        default=d.weight_days,
        metavar="DAYS",
        help=f"an adult weight older than this is stale (default {d.weight_days})",
    )
    c.add_argument(
        "--child-weight-max-age",
        type=int,
        default=d.child_weight_days,
        metavar="DAYS",
        help=f"a weight of a patient under 18 older than this is stale (default {d.child_weight_days})",
    )
    c.add_argument(
        "--renal-max-age",
        type=int,
        default=d.renal_days,
        metavar="DAYS",
        help=f"creatinine/eGFR older than this is stale (default {d.renal_days})",
    )
    c.add_argument(
        "--lab-max-age",
        type=int,
        default=d.lab_days,
        metavar="DAYS",
        help=f"other labs (potassium, INR, ...) older than this are stale (default {d.lab_days})",
    )
    c.set_defaults(func=cmd_check)
    r = sub.add_parser("review", help="run the agent over one patient; every suggestion passes the gates first")
    r.add_argument("bundle", help="FHIR R4 Bundle (JSON) or NDJSON file/directory")
    r.add_argument("--json", action="store_true", help="print the Review as JSON")
    r.add_argument("--model", default=None, help="offline (default; CLINAGENT_MODEL) or a pydantic-ai model name")
    r.add_argument("--fhir-out", default=None, metavar="DIR", help="also write the review as a FHIR R4 Bundle here")
    r.add_argument("--as-of", type=_as_of, default=None, help="reason as of this date (YYYY-MM-DD; default today)")
    r.add_argument("--patient-id", default=None, help="which patient, when the input holds several")
    r.set_defaults(func=cmd_review)
    p2 = sub.add_parser("replay", help="replay patient fixtures with expected outcomes; exit 1 on any mismatch")
    p2.add_argument("directory", help="a directory of patient cases (e.g. fixtures/patients)")
    p2.add_argument("--junit", default=None, metavar="FILE", help="write a JUnit XML report")
    p2.add_argument("--model", default=None, help="override each case's model")
    p2.add_argument("--allow-missing", action="store_true", help="cases whose bundle is absent do not fail the run")
    p2.set_defaults(func=cmd_replay)
    sv = sub.add_parser("serve", help="serve CDS Hooks 2.0 and the REST API (OpenAPI at /docs)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--auth-config", default=None, help="JSON file: CDS clients (iss -> JWKS) and REST tokens")
    sv.add_argument("--no-auth", action="store_true", help="no authentication (local development; loopback only)")
    sv.add_argument("--database-url", default=None, help="store URL (default $DATABASE_URL or sqlite:///clinagent.db)")
    sv.add_argument("--model", default=None, help="model for patient-view reviews (default offline)")
    sv.add_argument("--public-url", default=None, help="the base URL clients call (JWT aud); default http://HOST:PORT")
    sv.set_defaults(func=cmd_serve)
    u = sub.add_parser("ui", help="start the clinician app (Streamlit)")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=8501)
    u.add_argument("--database-url", default=None, help="store URL (default $DATABASE_URL or sqlite:///clinagent.db)")
    u.set_defaults(func=cmd_ui)
    k = sub.add_parser("knowledge", help="compile the knowledge base and print its version and counts")
    k.add_argument("--no-cache", action="store_true", help="compile from the Turtle even if a cache exists")
    k.set_defaults(func=cmd_knowledge)
    url_help = "the store (default $DATABASE_URL, else sqlite:///clinagent.db in the working directory)"
    au = sub.add_parser("audit", help="the audit log").add_subparsers(dest="audit_command", required=True)
    av = au.add_parser("verify", help="check the audit log's hash chain; exit 1 at the first bad row")
    av.add_argument("--database-url", default=None, metavar="URL", help=url_help)
    av.set_defaults(func=cmd_audit_verify)
    db = sub.add_parser("db", help="the store's schema").add_subparsers(dest="db_command", required=True)
    du = db.add_parser("upgrade", help="create or upgrade the store's schema (alembic upgrade head)")
    du.add_argument("--database-url", default=None, metavar="URL", help=url_help)
    du.set_defaults(func=cmd_db_upgrade)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import ClinAgentError, ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ClinAgentError, ConfigError) as e:
        print(f"clinagent: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
