#!/usr/bin/env python3
"""Mutation testing of the consumer's SQL guard (src/events/consumer.rs): the upsert that lets
a row move only out of created / pending_payment, once, so a late or redelivered event
changes nothing. Each mutant below is written into the Rust source, the API tests are built
and the tests that run the consumer are run (stopping at the first failure), as
scripts/mutate-lua.py does for lua/; the source is put back after each.

    scripts/mutate-sql.py         # env: TIMEOUT, THREADS, NATS_PORT as mutate-lua.py;
                                  #      OUT (mutation/sql.md)
Needs the servers of scripts/services.sh.
"""
import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "src", "events", "consumer.rs")
OUT = os.environ.get("OUT", os.path.join(ROOT, "mutation", "sql.md"))

_spec = importlib.util.spec_from_file_location(
    "mutate_lua", os.path.join(ROOT, "scripts", "mutate-lua.py"))
lua = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lua)

# The tests that run the consumer against PostgreSQL.
TESTS = [
    "consumer::",
    "events::every_accepted_order_reaches_the_stream_and_postgres_once",
    "events::cancelling_returns_stock_exactly_once",
    "events::a_consumer_killed_mid_stream_leaves_an_exact_table",
    "lifecycle::a_thousand_orders_end_paid_or_expired_exactly_once",
    "lifecycle::the_consumer_migrates_a_first_version_table_in_place",
    "reliability::the_consumer_resumes_at_once_after_postgres_drops_its_connection",
]

GUARD = """         WHERE orders.status IN ('created', 'pending_payment')
           AND EXCLUDED.status NOT IN ('created', 'pending_payment')\""""

# (what the mutant does, the text it replaces, the text it writes)
MUTANTS = [
    ("no guard: every conflict updates", GUARD, '"'),
    ("the row's own status unchecked", GUARD,
     "         WHERE EXCLUDED.status NOT IN ('created', 'pending_payment')\""),
    ("the event's status unchecked", GUARD,
     "         WHERE orders.status IN ('created', 'pending_payment')\""),
    ("the row's status negated", "WHERE orders.status IN", "WHERE orders.status NOT IN"),
    ("the event's status negated", "AND EXCLUDED.status NOT IN", "AND EXCLUDED.status IN"),
    ("and -> or", "           AND EXCLUDED.status", "           OR EXCLUDED.status"),
    ("pending_payment rows treated as ended",
     "WHERE orders.status IN ('created', 'pending_payment')",
     "WHERE orders.status IN ('created')"),
    ("created rows treated as ended",
     "WHERE orders.status IN ('created', 'pending_payment')",
     "WHERE orders.status IN ('pending_payment')"),
    ("a pending_payment event moves a row",
     "AND EXCLUDED.status NOT IN ('created', 'pending_payment')",
     "AND EXCLUDED.status NOT IN ('created')"),
    ("a created event moves a row",
     "AND EXCLUDED.status NOT IN ('created', 'pending_payment')",
     "AND EXCLUDED.status NOT IN ('pending_payment')"),
    ("paid_at not written", "SET status = EXCLUDED.status, paid_at = EXCLUDED.paid_at,",
     "SET status = EXCLUDED.status,"),
    ("payment_ref not written", "payment_ref = EXCLUDED.payment_ref, updated_at = now()",
     "updated_at = now()"),
    ("updated_at not written", "payment_ref = EXCLUDED.payment_ref, updated_at = now()",
     "payment_ref = EXCLUDED.payment_ref"),
    ("status not written", "SET status = EXCLUDED.status, paid_at", "SET paid_at"),
]


def build():
    out = subprocess.run(
        ["cargo", "test", "--locked", "--test", "api", "--no-run", "--message-format", "json"],
        cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        return None
    for line in out.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "api" \
                and message.get("executable"):
            return message["executable"]
    return None


def main():
    original = open(SOURCE).read()
    nats = lua.Nats()
    nats.start()
    rows = []
    try:
        binary = build()
        if not binary:
            sys.exit("mutate-sql: the unmutated tests do not build")
        verdict, took = lua.run_tests(binary, TESTS)
        if verdict != "missed":
            sys.exit(f"mutate-sql: the consumer's tests do not pass unmutated ({verdict})")
        print(f"unmutated tests pass in {took:.0f} s", file=sys.stderr, flush=True)
        for i, (what, old, new) in enumerate(MUTANTS, 1):
            if original.count(old) != 1:
                sys.exit(f"mutate-sql: {what}: the text to replace is not in {SOURCE} once")
            with open(SOURCE, "w") as out:
                out.write(original.replace(old, new))
            binary = build()
            # (Every mutant is SQL inside a string: one that did not build would be a
            # mistake in this list, not a catch.)
            if not binary:
                sys.exit(f"mutate-sql: {what}: the mutant does not build")
            verdict, took = lua.run_tests(binary, TESTS)
            print(f"{i}/{len(MUTANTS)} {what}: {verdict} ({took:.0f} s)", file=sys.stderr,
                  flush=True)
            rows.append((what, verdict))
            nats.ran()
    finally:
        with open(SOURCE, "w") as out:
            out.write(original)
        nats.stop()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as out:
        counts = {v: sum(1 for _, r in rows if r == v) for v in ("caught", "missed", "timeout")}
        out.write("| mutants | caught | missed | timeout |\n| ---: | ---: | ---: | ---: |\n")
        out.write(f"| {len(rows)} | {counts['caught']} | {counts['missed']} | "
                  f"{counts['timeout']} |\n\n| mutant | verdict |\n| --- | --- |\n")
        for what, verdict in rows:
            out.write(f"| {what} | {verdict} |\n")
    print(open(OUT).read())


if __name__ == "__main__":
    main()
