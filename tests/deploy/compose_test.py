#!/usr/bin/env python3
"""The stack of deploy/compose.yaml from the image, end to end (./dev test-image).

Starts PostgreSQL, two schedulers, two workers and the gateway from the image; submits a job
through the gateway (POST /v1/jobs), reads it back (GET) and follows its event stream (SSE)
to the end; then keeps submitting jobs while one scheduler container is restarted (SIGTERM,
drain, start again) and checks that every job the gateway acknowledged SUCCEEDED; stops and
removes everything (containers, network, volumes), also when it fails.

Too slow for ./dev test (it needs the image, and minutes). Environment:
  ENGINE                 podman (default when installed) or docker
  AIJOBS_IMAGE           image to test (default aijobs:latest, what ./dev image tags)
  AIJOBS_POSTGRES_IMAGE  PostgreSQL image (default aijobs-postgres:15, built here from
                         deploy/compose/postgres on AIJOBS_BASE_IMAGE when missing)
  AIJOBS_BASE_IMAGE      base for that build (default localhost/debian:bookworm)
  AIJOBS_LOAD_SECONDS    how long jobs are submitted around the restart (default 40)
Exit status 0 only if every check passed; the stack's logs are printed when one fails.
"""

import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE_FILE = os.path.join(ROOT, "deploy", "compose.yaml")


def log(msg):
    print(f"compose_test: {msg}", file=sys.stderr, flush=True)


def run(cmd, check=True, capture=True, timeout=600, env=None):
    res = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout, env=env)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: "
                           f"{(res.stderr or '').strip()[-2000:]}")
    return res


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, engine):
        self.engine = engine
        if engine == "podman":
            self.compose = ["podman-compose"]
        elif shutil.which("docker-compose"):
            self.compose = ["docker-compose"]
        else:
            self.compose = ["docker", "compose"]
        self.project = f"aijobs-test-{os.getpid()}"
        self.port = free_port()
        self.env = dict(os.environ, AIJOBS_COMPOSE_PORT=str(self.port))
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = None

    def compose_cmd(self, *args):
        return self.compose + ["-p", self.project, "-f", COMPOSE_FILE] + list(args)

    def up(self):
        log(f"starting project {self.project} (gateway on {self.base})")
        run(self.compose_cmd("up", "-d"), env=self.env, timeout=900)

    def containers(self, service):
        res = run([self.engine, "ps", "-a", "-q", "--no-trunc",
                   "--filter", f"label=com.docker.compose.project={self.project}",
                   "--filter", f"label=com.docker.compose.service={service}"])
        ids = sorted(res.stdout.split())
        if not ids:
            raise RuntimeError(f"no container for service {service} in {self.project}")
        return ids

    def container(self, service):
        return self.containers(service)[0]

    def logs(self):
        for service in ["keys", "postgres", "scheduler", "worker", "gateway"]:
            try:
                ids = self.containers(service)
            except Exception as e:  # a service that never started has no container
                log(f"--- {service}: {e}")
                continue
            for i in ids:
                res = run([self.engine, "logs", "--tail", "40", i], check=False)
                log(f"--- {service} {i[:12]} (last 40 lines)\n{res.stdout}{res.stderr}")

    def down(self):
        log("stopping and removing the stack (containers, network, volumes)")
        run(self.compose_cmd("down", "-v"), check=False, env=self.env, timeout=300)
        # podman-compose 1.0.3 leaves the project's network behind.
        res = run([self.engine, "network", "ls", "-q", "--filter",
                   f"label=com.docker.compose.project={self.project}"], check=False)
        for net in res.stdout.split():
            run([self.engine, "network", "rm", net], check=False)

    def http(self, method, path, body=None, timeout=10):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                return res.status, res.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def wait(self, what, fn, seconds):
        deadline = time.monotonic() + seconds
        last = None
        while time.monotonic() < deadline:
            try:
                if fn():
                    return
            except Exception as e:  # not up yet
                last = e
            time.sleep(0.5)
        raise RuntimeError(f"{what} not within {seconds}s (last error: {last})")


def submit(stack, prompt, deadline_s=60):
    """Submits a chat job; retries (same idempotency key) while the answer is not definite."""
    key = str(uuid.uuid4())
    body = {"type": "chat", "idempotency_key": key,
            "input": {"messages": [{"role": "user", "content": prompt}]}}
    deadline = time.monotonic() + deadline_s
    tries = 0
    while True:
        tries += 1
        try:
            code, text = stack.http("POST", "/v1/jobs", body)
            if code in (200, 201, 202):
                return json.loads(text)["id"], tries
            if code < 500 and code != 429:
                raise RuntimeError(f"submit refused: {code} {text[:300]}")
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"submit not acknowledged within {deadline_s}s ({tries} tries)")
        time.sleep(0.2)


def wait_finished(stack, job_id, seconds=120):
    deadline = time.monotonic() + seconds
    job = None
    while time.monotonic() < deadline:
        try:
            code, text = stack.http("GET", f"/v1/jobs/{job_id}")
            if code == 200:
                job = json.loads(text)
                if job.get("state") in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    return job
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
            pass
        time.sleep(0.3)
    return job


def check_one_job(stack):
    job_id, _ = submit(stack, "What is polymorphism?")
    log(f"submitted {job_id}")
    code, text = stack.http("GET", f"/v1/jobs/{job_id}")
    if code != 200 or json.loads(text).get("id") != job_id:
        raise RuntimeError(f"GET /v1/jobs/{job_id}: {code} {text[:300]}")
    # The event stream (SSE) ends after the event with the terminal state.
    req = urllib.request.Request(f"{stack.base}/v1/jobs/{job_id}/events",
                                 headers={"Accept": "text/event-stream",
                                          "Authorization": f"Bearer {stack.token}"})
    events, text_out, final = 0, "", None
    with urllib.request.urlopen(req, timeout=60) as res:
        for raw in res:
            line = raw.decode().rstrip("\n")
            if not line.startswith("data:"):
                continue
            events += 1
            event = json.loads(line[5:])  # a JobEvent (proto JSON: camelCase names)
            delta = event.get("outputDelta") or event.get("output_delta") or {}
            text_out += delta.get("text", "")
            final = event.get("finalJob") or event.get("final_job") or final
    if final is None or final.get("state") != "SUCCEEDED":
        raise RuntimeError(f"event stream of {job_id} ended without SUCCEEDED: {final}")
    log(f"SSE: {events} events, {len(text_out)} characters of output, final state SUCCEEDED")


def restart_under_load(stack, seconds):
    stop = threading.Event()
    acked, errors, retried = [], [], [0]
    lock = threading.Lock()

    def submitter(n):
        i = 0
        while not stop.is_set():
            i += 1
            try:
                job_id, tries = submit(stack, f"load {n}-{i}")
                with lock:
                    acked.append(job_id)
                    retried[0] += tries > 1
            except Exception as e:
                with lock:
                    errors.append(str(e))
            time.sleep(0.05)

    threads = [threading.Thread(target=submitter, args=(n,), daemon=True) for n in range(6)]
    for t in threads:
        t.start()
    time.sleep(min(8, seconds / 4))
    schedulers = stack.containers("scheduler")
    if len(schedulers) != 2:
        raise RuntimeError(f"expected 2 scheduler containers, found {len(schedulers)}")
    victim = schedulers[0]
    before = len(acked)
    log(f"restarting one of the 2 schedulers ({victim[:12]}) with {before} jobs "
        "acknowledged so far")
    t0 = time.monotonic()
    run([stack.engine, "restart", "-t", "15", victim], timeout=120)
    log(f"scheduler restarted in {time.monotonic() - t0:.1f}s")
    # It was stopped by SIGTERM (through tini and the shell's exec) and drained, not killed.
    res = run([stack.engine, "logs", victim], check=False)
    drained = [l for l in (res.stdout + res.stderr).splitlines() if "shutting down" in l]
    if not drained:
        raise RuntimeError("the restarted scheduler logged no drain: SIGTERM did not reach it")
    log(f"its log: {drained[-1].strip()[-100:]}")
    time.sleep(max(0, seconds - (time.monotonic() - t0) - min(8, seconds / 4)))
    stop.set()
    for t in threads:
        t.join(timeout=90)
    log(f"{len(acked)} jobs acknowledged ({retried[0]} needed a resend), "
        f"{len(errors)} submits never acknowledged")
    if errors:
        raise RuntimeError(f"submits failed: {errors[:5]}")
    if len(acked) < 20:
        raise RuntimeError(f"only {len(acked)} jobs went through: the stack is not serving")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        jobs = list(pool.map(lambda j: (j, wait_finished(stack, j)), acked))
    states = {}
    bad = []
    for job_id, job in jobs:
        state = (job or {}).get("state", "UNKNOWN")
        states[state] = states.get(state, 0) + 1
        if state != "SUCCEEDED":
            bad.append((job_id, state, (job or {}).get("error")))
    log(f"final states: {states}")
    if bad:
        raise RuntimeError(f"{len(bad)} jobs did not succeed, e.g. {bad[:5]}")
    # The restarted replica serves again (its health and the gateway's readiness).
    stack.wait("gateway ready after the restart",
               lambda: stack.http("GET", "/readyz")[0] == 200, 60)


def ensure_postgres_image(engine):
    if os.environ.get("AIJOBS_POSTGRES_IMAGE"):
        return
    name = "aijobs-postgres:15"
    if run([engine, "image", "inspect", name], check=False).returncode == 0:
        return
    base = os.environ.get("AIJOBS_BASE_IMAGE", "localhost/debian:bookworm")
    log(f"building {name} from deploy/compose/postgres on {base}")
    run(["nice", "-n", "19", engine, "build", "--build-arg", f"BASE_IMAGE={base}", "-t", name,
         os.path.join(ROOT, "deploy", "compose", "postgres")], timeout=1200)


def main():
    engine = os.environ.get("ENGINE") or ("podman" if shutil.which("podman") else "docker")
    image = os.environ.get("AIJOBS_IMAGE", "aijobs:latest")
    if run([engine, "image", "inspect", image], check=False).returncode != 0:
        log(f"no image {image}: run ./dev image first")
        return 1
    ensure_postgres_image(engine)
    stack = Stack(engine)
    started = time.monotonic()
    ok = False
    try:
        stack.up()
        stack.wait("the admin token in the keys volume",
                   lambda: run([engine, "exec", stack.container("gateway"), "cat",
                                "/keys/admin-token"]).stdout.strip() != "", 120)
        stack.token = run([engine, "exec", stack.container("gateway"), "cat",
                           "/keys/admin-token"]).stdout.strip()
        stack.wait("gateway /healthz", lambda: stack.http("GET", "/healthz")[0] == 200, 120)
        stack.wait("gateway /readyz (a scheduler answers)",
                   lambda: stack.http("GET", "/readyz")[0] == 200, 180)
        log(f"stack ready after {time.monotonic() - started:.0f}s")
        check_one_job(stack)
        restart_under_load(stack, int(os.environ.get("AIJOBS_LOAD_SECONDS", "40")))
        ok = True
        log(f"PASS in {time.monotonic() - started:.0f}s")
    except Exception as e:
        log(f"FAIL: {e}")
        stack.logs()
    finally:
        stack.down()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
