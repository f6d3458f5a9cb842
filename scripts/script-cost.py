#!/usr/bin/env python3
"""Redis CPU per purchase of lua/purchase.lua against an earlier version of it, in one run.

On a redis-server of its own (no persistence, nothing else in it), each script decides
batches of BATCH purchases of new buyers on a sale of endless stock, as group commit sends
them; the figure is `INFO commandstats` usec of EVALSHA divided by the purchases, and one
second over it is one sale's ceiling on one Redis core. Rounds alternate between the scripts,
so a noisy machine weighs on both alike.

    scripts/script-cost.py [REV]      # REV: the git revision to compare with (f43aac6)
    env: BATCH (54), CALLS (400), ROUNDS (3), REDIS_PORT (16411), PAYMENT (0: with a payment
         window of that many seconds)
"""
import os
import subprocess
import sys
import tempfile
import time

import redis

REV = sys.argv[1] if len(sys.argv) > 1 else "f43aac6"
BATCH = int(os.environ.get("BATCH", 54))
CALLS = int(os.environ.get("CALLS", 400))
ROUNDS = int(os.environ.get("ROUNDS", 3))
PORT = int(os.environ.get("REDIS_PORT", 16411))
PAYMENT = int(os.environ.get("PAYMENT", 0))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def script_at(rev):
    """purchase.lua as the service of `rev` loads it: since lua/prelude.lua, after the layout
    line and the prelude (src/store/mod.rs)."""
    def show(path):
        if rev is None:
            full = os.path.join(ROOT, path)
            return open(full).read() if os.path.exists(full) else None
        shown = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:{path}"],
                               capture_output=True, text=True)
        return shown.stdout if shown.returncode == 0 else None
    prelude = show("lua/prelude.lua")
    script = show("lua/purchase.lua")
    return script if prelude is None else f"local LAYOUT = '/2'\n{prelude}{script}"


scripts = {"new": script_at(None), REV: script_at(REV)}

work = tempfile.mkdtemp()
server = subprocess.Popen(["redis-server", "--port", str(PORT), "--save", "", "--appendonly", "no",
                           "--dir", work], stdout=subprocess.DEVNULL)
try:
    r = redis.Redis(port=PORT)
    for _ in range(50):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    replid = r.info("replication")["master_replid"]
    results = {name: [] for name in scripts}
    for round_ in range(ROUNDS):
        for name, text in scripts.items():
            stride = 4 if "(#ARGV - 1) / 4" in text else 3
            sku = f"{name}-{round_}"
            keys = [f"b:{{{sku}}}:{k}" for k in ("sale", "orders", "buyers", "outbox", "deadlines")]
            sale = {"stock": 10**12, "sold": 0, "price": 100, "oid": "0123456789abcdef-1",
                    "primary": replid + "/2", "seq": 0}
            if PAYMENT:
                sale["payment_timeout"] = PAYMENT
            r.hset(keys[0], mapping=sale)
            sha = r.script_load(text)
            r.config_resetstat()
            for call in range(CALLS):
                args = [600]
                for i in range(BATCH):
                    args += [f"u{call}-{i}", 1, ""] + (["1"] if stride == 4 else [])
                r.evalsha(sha, len(keys), *keys, *args)
            usec = r.info("commandstats")["cmdstat_evalsha"]["usec"]
            sold = int(r.hget(keys[0], "sold"))
            assert sold == CALLS * BATCH, (name, sold)
            results[name].append(usec / sold)
            r.delete(*keys)
    print(f"purchase.lua, batches of {BATCH} new buyers, {CALLS} calls a round"
          + (f", payment window {PAYMENT} s" if PAYMENT else ""))
    for name, costs in results.items():
        best = min(costs)
        print(f"  {name:>8}: " + ", ".join(f"{c:.2f}" for c in costs)
              + f" µs a purchase; best {best:.2f} µs = {1e6 / best:,.0f} purchases/s a core")
    new, old = min(results["new"]), min(results[REV])
    print(f"  new/{REV}: {new / old:.2f} of the CPU, {old / new:.1f}x the ceiling")
finally:
    server.terminate()
    server.wait()
