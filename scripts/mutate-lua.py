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
    env: TIMEOUT (400), LIMIT (0 = every mutant), THREADS (4), OUT (mutation/lua.md),
         FLASHSALE_TEST_NATS_URL (as scripts/test.sh sets it: nats://127.0.0.1:4225)
Needs the servers of scripts/services.sh.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = int(os.environ.get("TIMEOUT", 400))
LIMIT = int(os.environ.get("LIMIT", 0))
THREADS = os.environ.get("THREADS", "4")
OUT = os.environ.get("OUT", os.path.join(ROOT, "mutation", "lua.md"))

# The API test modules that run each script's rules.
TESTS = {
    "purchase.lua": ["script::", "orders::", "seed::", "round_trips::", "lifecycle::",
                     "order_reads::", "upgrade::"],
    "transition.lua": ["lifecycle::", "events::cancelling", "recovery::", "order_reads::"],
    "order_moves.lua": ["lifecycle::", "events::", "recovery::", "upgrade::"],
    "restore.lua": ["recovery::", "reliability::", "upgrade::", "lifecycle::a_rebuilt"],
    "put_sale.lua": ["sales::", "operator::", "recovery::", "validation::"],
    "archive.lua": ["archive::"],
    "read_orders.lua": ["order_reads::", "seed::"],
    "relay_lease.lua": ["events::", "durable::"],
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
    """'caught', 'missed' or 'timeout', and the seconds the run took."""
    env = dict(os.environ)
    env.setdefault("FLASHSALE_TEST_NATS_URL", "nats://127.0.0.1:4225")
    started = time.time()
    process = subprocess.Popen([binary, "--test-threads", THREADS, *filters], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        status = process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return "timeout", time.time() - started
    return ("missed" if status == 0 else "caught"), time.time() - started


def main():
    files = sys.argv[1:] or list(TESTS)
    binary = build()
    rows, totals = [], {}
    for file in files:
        path = os.path.join(ROOT, "lua", file)
        original = open(path).read()
        filters = TESTS[file]
        verdict, took = run_tests(binary, filters)
        if verdict != "missed":
            sys.exit(f"mutate-lua: the tests of {file} do not pass unmutated ({verdict})")
        print(f"{file}: unmutated tests pass in {took:.0f} s", file=sys.stderr, flush=True)
        found = list(mutants(original))[: LIMIT or None]
        lines = original.split("\n")
        try:
            for i, (n, kind, new_line) in enumerate(found, 1):
                mutated = lines[:n] + [new_line] + lines[n + 1:]
                with open(path, "w") as out:
                    out.write("\n".join(mutated))
                verdict, took = run_tests(binary, filters)
                totals.setdefault(file, {"caught": 0, "missed": 0, "timeout": 0})[verdict] += 1
                print(f"{file} {i}/{len(found)} line {n + 1} {kind}: {verdict} ({took:.0f} s)",
                      file=sys.stderr, flush=True)
                if verdict != "caught":
                    rows.append((file, n + 1, kind, verdict, lines[n].strip()))
        finally:
            with open(path, "w") as out:
                out.write(original)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as out:
        out.write("| script | mutants | caught | missed | timeout |\n| --- | ---: | ---: | ---: | ---: |\n")
        for file, t in totals.items():
            out.write(f"| {file} | {sum(t.values())} | {t['caught']} | {t['missed']} | {t['timeout']} |\n")
        out.write("\n| script | line | mutation | verdict | the line |\n| --- | ---: | --- | --- | --- |\n")
        for file, line, kind, verdict, text in rows:
            text = text.replace("|", "\\|")
            out.write(f"| {file} | {line} | {kind} | {verdict} | `{text}` |\n")
    print(open(OUT).read())


if __name__ == "__main__":
    main()
