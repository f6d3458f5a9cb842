#!/usr/bin/env python3
"""Every PromQL expression of the dashboard and of the alert rules, against real data.

Starts the service (target/debug/flashsale) and a real Prometheus (Debian's) scraping it
every second with the alert rules loaded, puts it through a short load that touches every
metric (purchases created and sold out, the fast path, rate limits, payments, cancels,
expiries the relay delivers, a live viewer, a sale rebuilt after its keys vanish), then
evaluates each expression through Prometheus's HTTP API. An expression passes when it
parses and returns at least one sample that is a number. For an alert, its condition is
evaluated without its threshold (`a / b > 0.05` as `a / b`): the alert need not fire, its
query must see data. Run by scripts/check-observability.sh.
"""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = "observability-admin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, body=None, token=None, timeout=10, headers=None):
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, parsed(response.read())
    except urllib.error.HTTPError as e:
        return e.code, parsed(e.read())


def parsed(body):
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode(errors="replace")


def wait_until(what, ready, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"check-observability: {what} not ready within {seconds} s")


def expressions():
    """(where, expression) of every dashboard target and alert rule."""
    found = []
    with open(os.path.join(ROOT, "deploy/grafana/flashsale.json")) as f:
        for panel in json.load(f)["panels"]:
            for target in panel["targets"]:
                found.append((f"dashboard: {panel['title']}", target["expr"]))
    with open(os.path.join(ROOT, "deploy/prometheus/alerts.yml")) as f:
        for group in yaml.safe_load(f)["groups"]:
            for rule in group["rules"]:
                condition = rule["expr"].strip()
                query = re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.]+$", "", condition)
                found.append((f"alert: {rule['alert']}", query))
    return found


def wave(base, namespace, run, wave):
    """Touches every metric the expressions read. Run twice, seconds apart: a series that
    appears with its first burst shows no rate until the next one."""
    window, small = f"obs-window-{run}-{wave}", f"obs-small-{run}-{wave}"
    assert call("PUT", f"{base}/v1/sales/{window}", {"stock": 400, "payment_timeout_secs": 1}, ADMIN)[0] == 201
    assert call("PUT", f"{base}/v1/sales/{small}", {"stock": 5}, ADMIN)[0] == 201
    orders = {window: [], small: []}
    lock = threading.Lock()

    def buy(sku, user):
        status, order = call("POST", f"{base}/v1/sales/{sku}/orders", {"user_id": user})
        if status in (201, 202):
            with lock:
                orders[sku].append(order["order_id"])

    threads = [threading.Thread(target=buy, args=(window, f"b{i}")) for i in range(120)]
    threads += [threading.Thread(target=buy, args=(small, f"s{i}")) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # One buyer over the buyer limit (FLASHSALE_BUYER_RATE=5).
    for _ in range(20):
        call("POST", f"{base}/v1/sales/{small}/orders", {"user_id": "eager"})
    # Some paid, some cancelled; the rest of the window's expire after their second.
    window_orders = orders[window]
    assert len(window_orders) == 120 and len(orders[small]) == 5, {k: len(v) for k, v in orders.items()}
    for order in window_orders[:20]:
        call("POST", f"{base}/v1/orders/{order}/pay", {"payment_ref": f"ref-{order}"}, ADMIN)
    for order in window_orders[20:40]:
        call("POST", f"{base}/v1/orders/{order}/cancel", None, ADMIN)
    # The small sale's keys vanish: it is rebuilt from JetStream on its next read.
    time.sleep(0.5)
    keys = subprocess.run(["redis-cli", "--scan", "--pattern", f"{namespace}:{{{small}}}:*"],
                          capture_output=True, text=True, check=True).stdout.split()
    for key in keys:
        subprocess.run(["redis-cli", "unlink", key], capture_output=True, check=True)
    assert call("GET", f"{base}/v1/sales/{small}")[0] == 200, "the sale is rebuilt"
    # A waiting room: joins, a buyer not admitted yet (one place a second).
    queued = f"obs-queue-{run}-{wave}"
    body = {"stock": 5, "queue": {"admit_per_sec": 1, "admission_secs": 60}}
    assert call("PUT", f"{base}/v1/sales/{queued}", body, ADMIN)[0] == 201
    places = [call("POST", f"{base}/v1/sales/{queued}/queue", {"user_id": f"q{i}"})[1]
              for i in range(10)]
    assert all(place["position"] for place in places), places
    last = places[-1]["token"]
    status, _ = call("POST", f"{base}/v1/sales/{queued}/orders", {"user_id": "q9"},
                     headers={"Queue-Token": last})
    assert status == 409, status
    return window


def delete_streams(nats_url, names):
    """Deletes JetStream streams through the NATS protocol itself (no client library here)."""
    host, port = urllib.parse.urlparse(nats_url).hostname, urllib.parse.urlparse(nats_url).port
    with socket.create_connection((host, port or 4222), timeout=5) as s:
        s.recv(4096)  # INFO
        s.sendall(b'CONNECT {"verbose":false}\r\nSUB _INBOX.obs 1\r\n')
        for name in names:
            s.sendall(f"PUB $JS.API.STREAM.DELETE.{name} _INBOX.obs 0\r\n\r\n".encode())
        s.sendall(b"PING\r\n")
        answer = b""
        while b"PONG" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk


def main():
    run = f"{os.getpid()}"
    work = tempfile.mkdtemp(prefix="flashsale-observability-")
    service_port, prometheus_port = free_port(), free_port()
    base = f"http://127.0.0.1:{service_port}"
    namespace = f"fsobs-{run}"
    env = dict(os.environ,
               FLASHSALE_BIND=f"127.0.0.1:{service_port}", FLASHSALE_NAMESPACE=namespace,
               FLASHSALE_STREAM=f"FSOBS_{run}", FLASHSALE_SUBJECT_PREFIX=f"fsobs-{run}",
               FLASHSALE_ADMIN_TOKEN=ADMIN, FLASHSALE_BUYER_RATE="5",
               FLASHSALE_QUEUE_KEY="observability-queue-key")
    env.setdefault("FLASHSALE_NATS_URL", "nats://127.0.0.1:4225")
    processes = []
    try:
        processes.append(subprocess.Popen([os.path.join(ROOT, "target/debug/flashsale")], env=env, cwd=work,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until("the service", lambda: call("GET", f"{base}/readyz")[0] == 200)
        shutil.copy(os.path.join(ROOT, "deploy/prometheus/alerts.yml"), work)
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                    "rule_files: [alerts.yml]\n"
                    "scrape_configs:\n"
                    "  - job_name: flashsale\n"
                    f"    static_configs: [{{targets: ['127.0.0.1:{service_port}']}}]\n")
        processes.append(subprocess.Popen(
            ["prometheus", f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/data",
             f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "prometheus.log"), "w")))
        prometheus = f"http://127.0.0.1:{prometheus_port}"
        wait_until("prometheus", lambda: call("GET", f"{prometheus}/-/ready")[0] == 200)
        time.sleep(3)  # a few scrapes before the load: rates need two samples

        window = wave(base, namespace, run, 1)
        # A live viewer for the rest of the run.
        processes.append(subprocess.Popen(["curl", "-sN", f"{base}/v1/sales/{window}/live"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(4)  # the first wave's expiries, and scrapes of every new series
        wave(base, namespace, run, 2)
        time.sleep(6)  # the second wave's expiries (1 s window, the sweeper, the relay), scrapes

        failures = []
        checked = expressions()
        for where, expr in checked:
            query = urllib.parse.urlencode({"query": expr})
            status, answer = call("GET", f"{prometheus}/api/v1/query?{query}")
            samples = (answer or {}).get("data", {}).get("result", []) if status == 200 else []
            numbers = [float(s["value"][1]) for s in samples]
            if status != 200:
                failures.append(f"{where}: does not parse: {(answer or {}).get('error')}\n    {expr}")
            elif not any(not math.isnan(n) for n in numbers):
                failures.append(f"{where}: no data ({len(samples)} series, all NaN or none)\n    {expr}")
        status, rules = call("GET", f"{prometheus}/api/v1/rules")
        loaded = sum(len(g["rules"]) for g in rules["data"]["groups"]) if status == 200 else 0
        alerts = sum(1 for w, _ in checked if w.startswith("alert:"))
        if loaded != alerts:
            failures.append(f"prometheus loaded {loaded} alert rules of {alerts}")
        if failures:
            print("check-observability: FAILED\n  " + "\n  ".join(failures))
            sys.exit(1)
        print(f"check-observability: {len(checked)} expressions evaluated against a real Prometheus, "
              f"each with data; {loaded} alert rules loaded")
    finally:
        for process in processes:
            process.kill()
        for key in subprocess.run(["redis-cli", "--scan", "--pattern", f"{namespace}:*"],
                                  capture_output=True, text=True).stdout.split():
            subprocess.run(["redis-cli", "unlink", key], capture_output=True)
        try:
            delete_streams(env["FLASHSALE_NATS_URL"], [f"FSOBS_{run}", f"KV_FSOBS_{run}_SALES"])
        except OSError as e:
            print(f"check-observability: streams FSOBS_{run} left behind: {e}")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
