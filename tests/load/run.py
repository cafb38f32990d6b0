#!/usr/bin/env python3
"""Load and faults: nginx serving a registryfs mount under 256 connections while tags move.

    python3 tests/load/run.py [--registryfs target/debug/registryfs] [--duration 60] [--quick] [--keep]

What it does (everything on 127.0.0.1, Python stdlib plus wrk):
  1. starts Debian's docker-registry 2.8.2 with the oracle's fixed signing key and pushes,
     by raw HTTP, two images A and B (schema2, sharing a 256 KiB layer) and two manifest
     lists LA and LB (linux/amd64 + linux/arm64/v8); the tags load/app:moving and
     load/list:moving end on A and LA;
  2. mounts the registry's store with `registryfs mount` (same key) and starts nginx with
     the njs variant of `registryfs httpd-config nginx --full` (as tests/httpd does);
     the expected bodies are the registry's (stored manifests, blobs, tags/list, the
     404) and registryfs's own schema1 for each version (`registryfs cat`, checked with
     libtrust-verify against the registry's payload digest);
  3. load, DURATION seconds: wrk, 256 connections, tests/load/mix.lua: GET by tag with no
     Accept (schema1), with the schema2 Accept, with Docker's Accept lines, with the list
     Accept on the list tag, by digest, blobs whole and with three kinds of Range, tags/list
     and an unknown tag (the only 404 asked for); mix.lua compares every body with the
     allowed ones. Meanwhile three checker threads make the same requests and judge each
     answer against its request (one of the two versions of the tag, whole; by digest:
     hashes to it and Docker-Content-Digest says so; Content-Length = body length), a pusher
     moves both tags to the other version every 0.5 s (PUT of the manifest by tag at the
     registry), and the daemon's VmRSS is sampled every second;
  4. kill: the same load; after 3 s the daemon gets SIGKILL; nginx must serve errors but
     nothing wrong; a new `registryfs mount` on the same mount point must clear the stale
     mount and serve; measured: how long until every request is answered right again,
     with nginx running (and whether that needs `nginx -s reload`);
  5. sigterm: the same load; after 3 s the daemon gets SIGTERM: it must unmount and exit 0
     (within its 5 s grace for open files), and nothing wrong is served meanwhile;
  6. prints ok/FAIL per check, the numbers as '#' lines, and "load: N passed, M failed".

Every process started here is stopped by PID in a finally block (also on SIGTERM,
SIGINT, SIGHUP and the --timeout alarm), every mount is unmounted; every wait and every
request loop is bounded in time and count.
"""

import argparse
import errno
import gzip
import hashlib
import http.client
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "oracle"))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "httpd"))

from harness import SetupError, ensure_verifier, libtrust_verify, finish, stop_cleanly_on_signals  # noqa: E402
import fixtures  # noqa: E402
from registry import (  # noqa: E402
    MT_LIST,
    MT_OCI,
    MT_OCI_INDEX,
    MT_SCHEMA1_SIGNED,
    MT_SCHEMA2,
    SIGNING_KEY_KID,
    Registry,
    RegistryError,
    sha256_digest,
)
from servers import Mount, Nginx, ServerError, stop_process, tail  # noqa: E402

LUA = os.path.join(HERE, "mix.lua")
MT_OCTET = "application/octet-stream"
JSON_UTF8 = "application/json; charset=utf-8"
APP, LIST, TAG = "load/app", "load/list", "moving"
CONNECTIONS = 256
CHECKER_THREADS = 3
PUSH_INTERVAL = 0.5
SETTLE_EVERY = 9  # rounds; odd, so that the settled version alternates
SETTLE_HOLD = 4.0  # seconds a version then stays
STALE_LIMIT = 3.0  # seconds a tag answer may lag behind the registry (tag TTL 1 s + nginx's 1 s + slack)
RSS_LIMIT_MIB = 256
BIG_LAYER = 256 * 1024
FAULT_LEAD = 3.0  # seconds of load before a fault
RECOVERY_WINDOW = 10.0  # seconds to wait for correct answers after the new mount (and after a reload)
DOCKER_ACCEPT = [MT_SCHEMA1_SIGNED, "application/json", MT_SCHEMA2, MT_LIST, MT_OCI, MT_OCI_INDEX]


# ---------------------------------------------------------------------------
# report


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, what, problems):
        problems = [p for p in problems if p]
        if problems:
            self.failed += 1
            self.failures.append(what)
            print(f"FAIL {what}: " + "; ".join(" ".join(str(p).split()) for p in problems), flush=True)
        else:
            self.passed += 1
            print(f"ok {what}", flush=True)


def note(text):
    print("# " + text, flush=True)


# ---------------------------------------------------------------------------
# images


def pseudo_random(seed, size):
    """Incompressible, reproducible bytes."""
    out = bytearray()
    h = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:size])


class DataLayer:
    """A gzip'd tar layer holding one file of given bytes (fixtures.Layer's shape)."""

    descriptor = fixtures.Layer.descriptor

    def __init__(self, seed, payload):
        raw = fixtures._tar({f"layer/{seed}.bin": payload})
        self.seed = seed
        self.diff_id = sha256_digest(raw)
        self.data = gzip.compress(raw, compresslevel=1, mtime=0)
        self.digest = sha256_digest(self.data)
        self.size = len(self.data)
        self.foreign_urls = None
        self.media_type = fixtures.MT_LAYER


def make_images():
    big = DataLayer("load-big", pseudo_random("load-big", BIG_LAYER))

    def image(name, created):
        layers = [big, fixtures.Layer(f"load-{name}")]
        hist = [("/bin/sh -c #(nop) ADD file:big in / ", False), (f"/bin/sh -c echo {name} > /version", False),
                ('/bin/sh -c #(nop)  CMD ["sh"]', True)]
        return fixtures.Image(fixtures.simple_config("amd64", layers, hist, created=created), layers)

    def index(name):
        return fixtures.Index([
            fixtures._platform_image(f"load-list-{name}-arm64", "arm64", variant="v8"),
            fixtures._platform_image(f"load-list-{name}-amd64", "amd64"),
        ])

    return big, image("a", "2024-03-01T00:00:00Z"), image("b", "2024-03-02T00:00:00Z"), index("a"), index("b")


def amd64_child(idx):
    return [c for c in idx.children() if c.platform == {"architecture": "amd64", "os": "linux"}][0]


# ---------------------------------------------------------------------------
# requests and what may come back


class Probe:
    """One kind of request, and every answer it may get.

    bodies: {bytes: label}; digest: the body must hash to it and Docker-Content-Digest
    must say it; content_range: the expected Content-Range header."""

    def __init__(self, name, path, accept=(), rng=None, status=200, ctype=None, bodies=None, digest=None,
                 content_range=None, weight=1, moving=None):
        self.name, self.path, self.accept, self.rng = name, path, list(accept), rng
        self.status, self.ctype, self.bodies, self.digest = status, ctype, bodies or {}, digest
        self.content_range, self.weight = content_range, weight
        self.moving = moving  # the repository whose tag moves (bodies labelled "A"/"B")

    def headers(self):
        h = [("Accept", a) for a in self.accept]
        if self.rng:
            h.append(("Range", self.rng))
        return h

    def raw(self, port):
        lines = [f"GET {self.path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{k}: {v}" for k, v in self.headers()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def judge(probe, status, headers, body):
    """(outcome, label, problem): outcome is "ok", "wrong" (a 2xx whose body must not
    be served), "digest" (a body or header that contradicts a digest) or "error" (any
    other status than the one asked for)."""
    if status != probe.status:
        return "error", None, f"status {status}"
    ctype = headers.get("content-type")
    if ctype != probe.ctype:
        return "wrong", None, f"Content-Type {ctype!r}"
    cl = headers.get("content-length")
    if cl is not None and cl != str(len(body)):
        return "wrong", None, f"Content-Length {cl} for {len(body)} bytes"
    if probe.digest:
        if sha256_digest(body) != probe.digest:
            return "digest", None, f"body ({len(body)} bytes) hashes to {sha256_digest(body)}"
        if headers.get("docker-content-digest") != probe.digest:
            return "digest", None, f"Docker-Content-Digest {headers.get('docker-content-digest')}"
    if probe.content_range and headers.get("content-range") != probe.content_range:
        return "wrong", None, f"Content-Range {headers.get('content-range')!r}, want {probe.content_range!r}"
    label = probe.bodies.get(body)
    if label is None:
        return "wrong", None, f"{len(body)}-byte body is none of the known versions"
    return "ok", label, None


def make_probes(ctx):
    big, a, b, la, lb = ctx.images
    lac, lbc = amd64_child(la), amd64_child(lb)
    s1 = ctx.schema1
    size = len(big.data)
    a_cfg = sha256_digest(a.config)
    man = f"/v2/{APP}/manifests"
    lman = f"/v2/{LIST}/manifests"
    blob = f"/v2/{APP}/blobs/{big.digest}"

    def rng(name, spec, start, end):
        return Probe(name, blob, rng=f"bytes={spec}", status=206, ctype=MT_OCTET,
                     bodies={big.data[start:end + 1]: "slice"}, content_range=f"bytes {start}-{end}/{size}")

    return [
        Probe("tag no Accept (schema1)", f"{man}/{TAG}", ctype=MT_SCHEMA1_SIGNED,
              bodies={s1[("app", "A")]: "A", s1[("app", "B")]: "B"}, weight=3, moving=APP),
        Probe("tag schema2 Accept", f"{man}/{TAG}", [MT_SCHEMA2], ctype=MT_SCHEMA2,
              bodies={a.manifest: "A", b.manifest: "B"}, weight=3, moving=APP),
        Probe("tag Docker Accept lines", f"{man}/{TAG}", DOCKER_ACCEPT, ctype=MT_SCHEMA2,
              bodies={a.manifest: "A", b.manifest: "B"}, moving=APP),
        Probe("list tag list Accept", f"{lman}/{TAG}", [MT_LIST], ctype=MT_LIST,
              bodies={la.manifest: "A", lb.manifest: "B"}, weight=2, moving=LIST),
        Probe("list tag no Accept (schema1 of amd64)", f"{lman}/{TAG}", ctype=MT_SCHEMA1_SIGNED,
              bodies={s1[("list", "A")]: "A", s1[("list", "B")]: "B"}, moving=LIST),
        Probe("list tag schema2 Accept (amd64)", f"{lman}/{TAG}", [MT_SCHEMA2], ctype=MT_SCHEMA2,
              bodies={lac.manifest: "A", lbc.manifest: "B"}, moving=LIST),
        Probe("digest A schema2 Accept", f"{man}/{a.digest}", [MT_SCHEMA2], ctype=MT_SCHEMA2,
              bodies={a.manifest: "A"}, digest=a.digest),
        Probe("digest B no Accept", f"{man}/{b.digest}", ctype=MT_SCHEMA2, bodies={b.manifest: "B"}, digest=b.digest),
        Probe("digest LA list Accept", f"{lman}/{la.digest}", [MT_LIST], ctype=MT_LIST,
              bodies={la.manifest: "A"}, digest=la.digest),
        Probe("blob 256 KiB layer", blob, ctype=MT_OCTET, bodies={big.data: "blob"}, digest=big.digest),
        rng("blob Range bytes=0-1023", "0-1023", 0, 1023),
        rng("blob Range bytes=100000-163839", "100000-163839", 100000, 163839),
        rng("blob Range bytes=-4096", "-4096", size - 4096, size - 1),
        Probe("blob config A", f"/v2/{APP}/blobs/{a_cfg}", ctype=MT_OCTET, bodies={a.config: "blob"}, digest=a_cfg),
        Probe("tags/list", f"/v2/{APP}/tags/list", ctype=JSON_UTF8, bodies={ctx.tags_list: "tags"}),
        Probe("unknown tag (404 asked for)", f"{man}/no-such-tag", status=404, ctype=JSON_UTF8,
              bodies={ctx.not_found: "404"}),
    ]


# ---------------------------------------------------------------------------
# HTTP


def get(port, probe, conn=None, timeout=10):
    """One GET; returns (status, headers{lower: value}, body, conn to reuse or None)."""
    if conn is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("GET", probe.path)
        for k, v in probe.headers():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if resp.will_close:
            conn.close()
            conn = None
        return resp.status, headers, body, conn
    except BaseException:
        conn.close()
        raise




# ---------------------------------------------------------------------------
# the background workers


class Stats:
    """What the checker threads saw, by outcome; thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {"ok": 0, "wrong": 0, "digest": 0, "error": 0, "conn": 0}
        self.statuses = {}
        self.samples = []
        self.labels = {}  # probe name -> {label: count}
        self.switches = 0
        self.last_error = None  # monotonic time of the last error/conn failure
        self.stale = {}  # probe name -> max seconds behind the registry

    def add(self, probe, outcome, label, problem, t):
        with self.lock:
            self.counts[outcome] += 1
            if label is not None:
                d = self.labels.setdefault(probe.name, {})
                d[label] = d.get(label, 0) + 1
            if outcome in ("error", "conn"):
                self.last_error = t
            if outcome != "ok":
                key = f"{probe.name}: {problem}"
                self.statuses[key] = self.statuses.get(key, 0) + 1
                if outcome in ("wrong", "digest"):
                    if len(self.samples) < 10:
                        self.samples.append(key)

    def errors_after(self, t):
        return self.last_error is not None and self.last_error >= t


class Checker(threading.Thread):
    """Makes the mix's requests over one keep-alive connection and judges every answer."""

    def __init__(self, port, probes, stats, stop, deadline, seed, pusher, diagnose, max_requests=1_000_000):
        super().__init__(daemon=True)
        self.port, self.probes, self.stats, self.stop, self.pusher = port, probes, stats, stop, pusher
        self.diagnose = diagnose
        self.deadline, self.max_requests = deadline, max_requests
        self.rng = random.Random(seed)
        self.requests = 0

    def run(self):
        conn = None
        last_label = {}
        while not self.stop.is_set() and time.monotonic() < self.deadline and self.requests < self.max_requests:
            probe = self.rng.choice(self.probes)
            self.requests += 1
            t_send = time.monotonic()
            try:
                status, headers, body, conn = get(self.port, probe, conn)
            except (OSError, http.client.HTTPException) as e:
                conn = None
                self.stats.add(probe, "conn", None, type(e).__name__, time.monotonic())
                self.stop.wait(0.01)
                continue
            t_recv = time.monotonic()
            outcome, label, problem = judge(probe, status, headers, body)
            if outcome == "wrong" and probe.ctype == MT_SCHEMA1_SIGNED:
                problem += self.diagnose(body)
            self.stats.add(probe, outcome, label, problem, t_recv)
            if probe.moving and label is not None:
                lag = self.pusher.staleness(probe.moving, label, t_send, t_recv)
                with self.stats.lock:
                    self.stats.stale[probe.name] = max(self.stats.stale.get(probe.name, 0.0), lag)
                if last_label.get(probe.name, label) != label:
                    with self.stats.lock:
                        self.stats.switches += 1
                last_label[probe.name] = label
        if conn is not None:
            conn.close()


def other(label):
    return "B" if label == "A" else "A"


class Pusher(threading.Thread):
    """Moves both tags to the other version every PUSH_INTERVAL seconds, +-40% at random
    (a fixed period would alias with the mount's and nginx's 1 s caches: a reader that
    refreshes every second could see the same version all the time), and every
    SETTLE_EVERY moves leaves the tags alone for SETTLE_HOLD seconds, so that a reader
    stuck on the old version shows up as staleness. Keeps each tag's history to judge
    how far behind an answer is."""

    def __init__(self, reg, moves, stop, deadline, seed, current, max_rounds=100_000):
        super().__init__(daemon=True)
        self.reg, self.moves, self.stop, self.deadline, self.max_rounds = reg, moves, stop, deadline, max_rounds
        self.pushes = 0
        self.errors = []
        self.rng = random.Random(seed)
        self.current = dict(current)  # repo -> "A"/"B", the version its tag is at
        # repo -> [(monotonic time the push returned, "A"/"B")]
        now = time.monotonic()
        self.history = {repo: [(-1e9, other(v)), (now, v)] for repo, v in self.current.items()}

    def run(self):
        rounds = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline and rounds < self.max_rounds:
            for repo, versions in self.moves:
                label = other(self.current[repo])
                mt, body, digest = versions["AB".index(label)]
                try:
                    got = self.reg.push_manifest(repo, TAG, mt, body)
                    if got != digest:
                        self.errors.append(f"{repo}:{TAG} stored as {got}, pushed {digest}")
                    self.pushes += 1
                    self.current[repo] = label
                    self.history[repo].append((time.monotonic(), label))
                except (RegistryError, OSError, http.client.HTTPException) as e:
                    self.errors.append(f"{repo}:{TAG}: {e}")
            rounds += 1
            hold = SETTLE_HOLD if rounds % SETTLE_EVERY == 0 else PUSH_INTERVAL * self.rng.uniform(0.6, 1.4)
            self.stop.wait(hold)

    def staleness(self, repo, label, t_send, t_recv):
        """How long before the request the answered version stopped being the tag's (0 if
        it was the tag's at some point while the request ran)."""
        h = list(self.history[repo])
        i = max(k for k, (t, _) in enumerate(h) if t <= t_send)
        if h[i][1] == label or any(t_send <= t <= t_recv and lab == label for t, lab in h[i + 1:]):
            return 0.0
        j = i
        while j >= 0 and h[j][1] != label:
            j -= 1
        return t_send - h[j + 1][0]


class RssSampler(threading.Thread):
    """VmRSS of the current daemon (self.pid) every second; the maximum per PID."""

    def __init__(self, stop, deadline):
        super().__init__(daemon=True)
        self.stop, self.deadline = stop, deadline
        self.pid = None
        self.max_kib = {}
        self.samples = {}

    def sample(self):
        pid = self.pid
        if pid is None:
            return
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kib = int(line.split()[1])
                        self.max_kib[pid] = max(self.max_kib.get(pid, 0), kib)
                        self.samples[pid] = self.samples.get(pid, 0) + 1
        except (OSError, ValueError):
            pass

    def run(self):
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            self.sample()
            self.stop.wait(1.0)


class Wrk:
    """wrk with mix.lua, output to a file; stopped by SIGINT (it then prints its results)."""

    def __init__(self, port, wrkdir, duration, log_path, connections=CONNECTIONS, threads=2):
        self.log_path = log_path
        self.duration = duration
        self.connections = connections
        self.cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", LUA,
                    f"http://127.0.0.1:{port}", "--", wrkdir]
        self.proc = None
        self._log = None

    def start(self):
        self._log = open(self.log_path, "wb")
        if self.connections == 0:
            # No wrk (--connections 0): only the checkers; sleep for its duration instead.
            self.cmd = ["sleep", str(self.duration)]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def finish(self, interrupt=False):
        """Waits (bounded) for wrk's results; with interrupt, SIGINT first."""
        if self.proc is None:
            return {}
        if interrupt and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=(15 if interrupt else self.duration + 30))
        except subprocess.TimeoutExpired:
            stop_process(self.proc, signal.SIGKILL, timeout=5)
        self.proc = None
        self._log.close()
        return self.results()

    def kill(self):
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL, timeout=5)
            self.proc = None
        if self._log:
            self._log.close()

    def results(self):
        out = {"bad_kinds": [], "text": ""}
        with open(self.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        out["text"] = text
        for line in text.splitlines():
            if not line.startswith("wrk-result "):
                continue
            _, rest = line.split(" ", 1)
            if rest.startswith("bad_kind "):
                _, n, kind = rest.split(" ", 2)
                out["bad_kinds"].append((int(n), kind))
                continue
            k, v = rest.split(" ", 1)
            try:
                out[k] = float(v) if "." in v else int(v)
            except ValueError:
                out[k] = v
        return out


def wrk_kinds(w, cls):
    """mix.lua's tally of the answers of one class ("wrong", "err", "stitched")."""
    return ", ".join(f"{n}x {k[len(cls) + 1:]}" for n, k in sorted(w.get("bad_kinds", []), reverse=True)
                     if k.startswith(cls + " "))


def wrk_socket_errors(w):
    return sum(w.get(f"errors_{k}", 0) for k in ("connect", "read", "write", "timeout"))


def wrk_summary(w):
    if "requests" not in w:
        return "no wrk results"
    secs = w["duration_us"] / 1e6
    return (f"{w['requests']} requests in {secs:.1f} s = {w['requests'] / secs:.0f} req/s, "
            f"{w['bytes'] / secs / 1e6:.1f} MB/s; latency p50 {w['latency_p50_us'] / 1000:.2f} ms, "
            f"p90 {w['latency_p90_us'] / 1000:.2f} ms, p99 {w['latency_p99_us'] / 1000:.2f} ms, "
            f"p99.9 {w['latency_p99.9_us'] / 1000:.2f} ms, max {w['latency_max_us'] / 1000:.1f} ms; "
            f"statuses " + ", ".join(f"{k[7:]}: {v}" for k, v in sorted(w.items()) if k.startswith("status_")) +
            f"; socket errors connect {w.get('errors_connect', 0)} read {w.get('errors_read', 0)} "
            f"write {w.get('errors_write', 0)} timeout {w.get('errors_timeout', 0)}; mix.lua: ok {w.get('ok', 0)}, "
            f"error answers {w.get('err', 0)}, wrong {w.get('wrong', 0)}, stitched by wrk {w.get('stitched', 0)}")


# ---------------------------------------------------------------------------
# mount helpers


def mount_ids(mp):
    """IDs of the mounts at mp (/proc/self/mountinfo)."""
    ids = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4 and fields[4] == mp:
                ids.append(fields[0])
    return ids


def mounts_at(mp):
    return len(mount_ids(mp))


def stat_errno(path):
    try:
        os.stat(path)
        return 0
    except OSError as e:
        return e.errno


def wait_until(limit, cond, step=0.02):
    deadline = time.monotonic() + limit
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def nginx_log_problems(path, since):
    """[crit]/[alert]/[emerg] lines of nginx's error log written after byte `since`."""
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if re.search(r"\[(crit|alert|emerg)\]", line)]


def mount_log_problems(path, since):
    """WARN/ERROR lines of the daemon's log written after byte `since`."""
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if re.search(r"\b(WARN|ERROR)\b", line)]


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ---------------------------------------------------------------------------


class Context:
    pass


def setup(ctx, report):
    reg, tmp = ctx.reg, ctx.tmp
    ctx.images = big, a, b, la, lb = make_images()
    # B first, then A: the tags end on A (and LA), the state the pusher starts from.
    ctx.schema1 = {}
    ctx.payloads = {}  # payload digest of each schema1 -> "repo version"
    problems = []
    for label, img, idx in (("B", b, lb), ("A", a, la)):
        fixtures.push(reg, fixtures.Push(APP, TAG, img), os.path.join(tmp, "layouts", f"app-{label}"))
        fixtures.push(reg, fixtures.Push(LIST, TAG, idx), os.path.join(tmp, "layouts", f"list-{label}"))
        for key, repo in (("app", APP), ("list", LIST)):
            doc = subprocess.run([ctx.binary, "--signing-key", reg.keyfile, "cat", reg.root,
                                  f"{repo}/manifests/{TAG}/schema1"], capture_output=True, timeout=60)
            if doc.returncode != 0:
                raise SetupError(f"registryfs cat {repo} schema1: {doc.stderr.decode('utf-8', 'replace')}")
            ctx.schema1[(key, label)] = doc.stdout
            want = reg.request("GET", f"/v2/{repo}/manifests/{TAG}")
            ok, dgst, kids, err = libtrust_verify(ctx.verifier, doc.stdout)
            ctx.payloads[dgst] = f"{repo} {label}"
            if want.status != 200 or want.header("content-type") != MT_SCHEMA1_SIGNED:
                problems.append(f"registry {repo}:{TAG} ({label}) no Accept: {want.status}")
            elif not ok:
                problems.append(f"libtrust-verify rejects {repo} schema1 of {label}: {err}")
            elif dgst != want.header("docker-content-digest") or kids != [SIGNING_KEY_KID]:
                problems.append(f"{repo} schema1 of {label}: payload {dgst} signed by {kids}, "
                                f"registry payload {want.header('docker-content-digest')}")
    if len(set(ctx.schema1.values())) != 4:
        problems.append("the four schema1 documents are not all different")
    r = reg.request("GET", f"/v2/{APP}/tags/list")
    ctx.tags_list = r.body
    r404 = reg.request("GET", f"/v2/{APP}/manifests/no-such-tag")
    ctx.not_found = r404.body
    if r404.status != 404 or b"MANIFEST_UNKNOWN" not in r404.body:
        problems.append(f"registry answers {r404.status} for an unknown tag")
    lac, lbc = amd64_child(la), amd64_child(lb)
    ctx.tag_state = {APP: "A", LIST: "A"}
    ctx.moves = [
        (APP, [(MT_SCHEMA2, a.manifest, a.digest), (MT_SCHEMA2, b.manifest, b.digest)]),
        (LIST, [(MT_LIST, la.manifest, la.digest), (MT_LIST, lb.manifest, lb.digest)]),
    ]
    note(f"images: A {a.digest[:19]} B {b.digest[:19]} (schema2, {len(big.data)}-byte shared layer), "
         f"LA {la.digest[:19]} LB {lb.digest[:19]} (lists; amd64 {lac.digest[:19]} / {lbc.digest[:19]})")
    return problems


class Diagnose:
    """What libtrust-verify says of a schema1 body that is none of the expected ones (at
    most `limit` times a run: each is a process)."""

    def __init__(self, verifier, payloads, limit=5):
        self.verifier, self.payloads, self.left = verifier, payloads, limit
        self.lock = threading.Lock()

    def __call__(self, body):
        with self.lock:
            if self.left <= 0:
                return ""
            self.left -= 1
        ok, dgst, kids, err = libtrust_verify(self.verifier, body)
        if not ok:
            return f" (libtrust-verify: {err})"
        return f" (verifies, signed by {kids}, payload {dgst}: {self.payloads.get(dgst, 'no known version')})"


def write_wrk_dir(ctx, probes):
    d = os.path.join(ctx.tmp, "wrk")
    os.makedirs(d, exist_ok=True)
    names = []
    allowed = {}
    for i, p in enumerate(probes):
        name = f"req-{i:02d}.http"
        with open(os.path.join(d, name), "wb") as f:
            f.write(p.raw(ctx.port))
        names += [name] * p.weight
        for body in p.bodies:
            allowed.setdefault((p.status, p.ctype, body), len(allowed))
    random.Random(1).shuffle(names)
    with open(os.path.join(d, "requests.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    with open(os.path.join(d, "allowed.txt"), "w") as f:
        for (status, ctype, body), n in allowed.items():
            fname = f"body-{n:02d}"
            with open(os.path.join(d, fname), "wb") as bf:
                bf.write(body)
            f.write(f"{status}\t{ctype}\t{fname}\n")
    return d


def saved_bad(wrkdir, cls, n=3):
    out = []
    for name in sorted(os.listdir(wrkdir)):
        if name.startswith(f"bad-{cls}-") and len(out) < n:
            with open(os.path.join(wrkdir, name), "rb") as f:
                data = f.read()
            out.append(f"{name}: {data[:160]!r}")
    return out


def clear_bad(wrkdir):
    for name in os.listdir(wrkdir):
        if name.startswith("bad-"):
            os.unlink(os.path.join(wrkdir, name))


class Load:
    """wrk, the checkers and the pusher for one phase."""

    def __init__(self, ctx, name, duration, seed):
        self.ctx, self.name = ctx, name
        self.stop = threading.Event()
        self.stats = Stats()
        self.deadline = time.monotonic() + duration + 60
        clear_bad(ctx.wrkdir)
        self.wrk = Wrk(ctx.port, ctx.wrkdir, duration, os.path.join(ctx.tmp, f"wrk-{name}.log"), ctx.connections)
        self.pusher = Pusher(ctx.reg, ctx.moves, self.stop, self.deadline, seed, ctx.tag_state)
        self.checkers = [Checker(ctx.port, ctx.probes, self.stats, self.stop, self.deadline, seed * 10 + i,
                                 self.pusher, ctx.diagnose) for i in range(CHECKER_THREADS)]
        ctx.loads.append(self)

    def start(self):
        self.wrk.start()
        for t in [self.pusher] + self.checkers:
            t.start()
        return self

    def finish(self, interrupt=False):
        w = self.wrk.finish(interrupt)
        self.stop.set()
        for t in self.checkers + [self.pusher]:
            t.join(timeout=15)
        self.ctx.tag_state = dict(self.pusher.current)
        return w

    def kill(self):
        self.stop.set()
        self.wrk.kill()
        for t in self.checkers + [self.pusher]:
            t.join(timeout=15)

    def requests(self):
        return sum(c.requests for c in self.checkers)


class LoadMount(Mount):
    """servers.Mount, but ready means: exactly one mount at the mount point, a new one,
    and it answers. (Mount.start's os.makedirs fails on a stale mount, which the kill
    phase leaves there on purpose, and a stat of it can still succeed from the kernel's
    attribute cache.)"""

    def __init__(self, binary, store, mountpoint, args, log_path, extra=()):
        super().__init__(binary, store, mountpoint, args, log_path)
        self.extra = list(extra)

    def start(self, timeout=20):
        self._log = open(self.log_path, "ab")
        before = set(mount_ids(self.mountpoint))
        cmd = [self.binary, *self.args, "mount", self.store, self.mountpoint, "--allow-other", *self.extra]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"registryfs mount exited with {self.proc.returncode}:\n" + tail(self.log_path))
            ids = mount_ids(self.mountpoint)
            if len(ids) == 1 and ids[0] not in before and stat_errno(self.mountpoint) == 0:
                return self
            time.sleep(0.02)
        raise ServerError(f"registryfs mount: not mounted in time ({len(mount_ids(self.mountpoint))} mounts at "
                          f"{self.mountpoint}, {len(before)} before):\n" + tail(self.log_path))


def mount_args(ctx):
    return ["--signing-key", ctx.reg.keyfile]


def check_wrk_load(ctx, report, w, duration, logs):
    problems = []
    if "requests" not in w:
        problems.append("wrk gave no results: " + w["text"][-500:])
    else:
        if wrk_socket_errors(w):
            problems.append(f"{wrk_socket_errors(w)} socket errors")
        if w["requests"] < 1000:
            problems.append(f"only {w['requests']} requests")
    report.check(f"load: wrk {ctx.connections} connections for {duration} s, no socket errors", problems)
    problems = []
    if "requests" in w:
        unexpected = w.get("errors_status", 0) - w.get("ok_status_404", 0)
        if unexpected or w.get("err", 0):
            problems.append(f"{max(unexpected, w.get('err', 0))} error statuses besides the asked-for 404s "
                            f"({w.get('ok_status_404', 0)}): " + wrk_kinds(w, "err"))
            problems += saved_bad(ctx.wrkdir, "err")
    problems += logs
    report.check("load: wrk saw no error status but the asked-for 404s; nginx and registryfs logged no error",
                 problems)
    problems = []
    if "requests" in w and w.get("wrong", 0):
        problems.append(f"{w['wrong']} 2xx answers with a body that is none of the allowed ones: " +
                        wrk_kinds(w, "wrong"))
        problems += saved_bad(ctx.wrkdir, "wrong")
    if "requests" in w and w.get("stitched", 0):
        problems.append(f"{w['stitched']} bodies stitched by wrk after read errors: " + wrk_kinds(w, "stitched"))
    judged = sum(w.get(k, 0) for k in ("ok", "wrong", "err", "stitched"))
    if "requests" in w and judged != w["requests"]:
        problems.append(f"judged {judged} of {w['requests']} answers")
    report.check(f"load: every wrk body is a whole known version ({w.get('ok', 0)} judged by mix.lua)", problems)


def phase_load(ctx, report, duration):
    note(f"load: {duration} s, {ctx.connections} connections (wrk), {CHECKER_THREADS} checker threads, "
         f"tags moved every {PUSH_INTERVAL} s (+-40%), held {SETTLE_HOLD:.0f} s after every {SETTLE_EVERY}th move")
    log_from = file_size(ctx.nginx.log_path)
    mount_log_from = file_size(ctx.mount.log_path)
    ctx.rss.pid = ctx.mount.proc.pid
    ctx.rss.sample()
    rss_start = ctx.rss.max_kib.get(ctx.rss.pid, 0)
    load = Load(ctx, "load", duration, 1).start()
    w = load.finish()
    st = load.stats
    crit = nginx_log_problems(ctx.nginx.log_path, log_from)
    warnings = mount_log_problems(ctx.mount.log_path, mount_log_from)
    note("wrk: " + wrk_summary(w))
    note(f"checkers: {load.requests()} requests, " + ", ".join(f"{k} {v}" for k, v in st.counts.items()) +
         f"; versions seen: " + "; ".join(f"{n} {sorted(d.items())}" for n, d in sorted(st.labels.items())
                                            if any(p.moving and p.name == n for p in ctx.probes)) +
         f"; {st.switches} version switches seen")
    note(f"pusher: {load.pusher.pushes} manifest PUTs, {len(load.pusher.errors)} errors")
    # 1. wrk
    logs = []
    if crit:
        logs.append(f"{len(crit)} crit/alert lines in nginx's error log, e.g. {crit[0][:300]}")
    if warnings:
        logs.append(f"{len(warnings)} WARN/ERROR lines in registryfs's log, e.g. {warnings[0][:400]}")
        if any('bad link: ""' in line for line in warnings):
            logs.append("an empty link was read: registry 2.8.2 rewrites links in place (truncate, then write), "
                        "see tests/load/link_race.py")
    if ctx.connections:
        check_wrk_load(ctx, report, w, duration, logs)
    else:
        report.check("load: nginx and registryfs logged no error", logs)
    # 2. checkers
    problems = []
    for k in ("wrong", "error", "conn"):
        if st.counts[k]:
            problems.append(f"{st.counts[k]} {k}")
    if problems:
        problems.append("; ".join(f"{v}x {k}" for k, v in sorted(st.statuses.items())[:8]))
    if load.requests() < 100:
        problems.append(f"only {load.requests()} requests")
    report.check(f"load: checkers: no torn, mixed or failed answer ({st.counts['ok']} requests judged)", problems)
    problems = [f"{st.counts['digest']} digest mismatches: " + "; ".join(st.samples[:5])] if st.counts["digest"] else []
    report.check("load: checkers: every by-digest manifest and blob hashes to its digest", problems)
    # 3. the tags moved, and the mount showed it
    problems = list(load.pusher.errors[:5])
    if load.pusher.pushes < 2 * 2:
        problems.append(f"only {load.pusher.pushes} pushes")
    for p in ctx.probes:
        if p.moving and set(st.labels.get(p.name, {})) != {"A", "B"}:
            problems.append(f"{p.name}: saw only {sorted(st.labels.get(p.name, {}))}")
        if st.stale.get(p.name, 0) > STALE_LIMIT:
            problems.append(f"{p.name}: an answer {st.stale[p.name]:.2f} s behind the registry")
    worst = max(st.stale.values(), default=0.0)
    ctx.results["stale"] = worst
    note("staleness (seconds an answer lagged behind the tag's move, max): " +
         ", ".join(f"{n} {v:.2f}" for n, v in sorted(st.stale.items())))
    report.check(f"load: {load.pusher.pushes} tag moves seen through nginx, both versions served, "
                 f"at most {worst:.2f} s behind (limit {STALE_LIMIT:.0f} s)", problems)
    # 4. memory
    ctx.rss.sample()
    pid = ctx.mount.proc.pid
    mx = ctx.rss.max_kib.get(pid, 0)
    ctx.results["rss"] = (rss_start, mx, ctx.rss.samples.get(pid, 0))
    note(f"daemon VmRSS: {rss_start / 1024:.1f} MiB before the load, max {mx / 1024:.1f} MiB "
         f"({ctx.rss.samples.get(pid, 0)} samples, 1/s)")
    report.check(f"load: daemon RSS max {mx / 1024:.1f} MiB <= {RSS_LIMIT_MIB} MiB",
                 [] if 0 < mx <= RSS_LIMIT_MIB * 1024 else [f"max VmRSS {mx} KiB"])
    ctx.results["load"] = (w, load)


def probe_round(ctx):
    """Every probe once, each on a new connection; the failures."""
    bad = []
    for p in ctx.probes:
        try:
            status, headers, body, conn = get(ctx.port, p, timeout=5)
            if conn is not None:
                conn.close()
            outcome, _, problem = judge(p, status, headers, body)
        except (OSError, http.client.HTTPException) as e:
            outcome, problem = "conn", type(e).__name__
        if outcome != "ok":
            bad.append((p.name, outcome, problem))
    return bad


def wait_recovery(ctx, window, streak=3, hold=2.0):
    """Rounds of probe_round until `streak` rounds in a row, spanning `hold` seconds,
    are right, or `window` seconds. (recovered after seconds or None, last failures)."""
    t0 = time.monotonic()
    first_ok = None
    ok_rounds = 0
    last_bad = []
    rounds = 0
    while time.monotonic() - t0 < window and rounds < 10_000:
        rounds += 1
        start = time.monotonic()
        bad = probe_round(ctx)
        if bad:
            first_ok, ok_rounds, last_bad = None, 0, bad
        else:
            if first_ok is None:
                first_ok = start
            ok_rounds += 1
            if ok_rounds >= streak and time.monotonic() - first_ok >= hold:
                return first_ok - t0, last_bad
        time.sleep(0.05)
    return None, last_bad


def summarize_bad(bad):
    kinds = {}
    for name, outcome, problem in bad:
        kinds.setdefault(f"{outcome} {problem}", []).append(name)
    return "; ".join(f"{k} ({', '.join(v)})" for k, v in kinds.items())


def phase_kill(ctx, report):
    note("kill: load, SIGKILL of the daemon, a new mount on the same mount point")
    load = Load(ctx, "kill", 120, 2).start()
    nginx_pid = ctx.nginx.proc.pid
    time.sleep(FAULT_LEAD)
    # Our own handles on the blobs, the same inodes nginx's workers hold open (open_file_cache):
    # once the daemon is dead their cached pages are dropped, as memory pressure would
    # drop a big blob's, so that nginx's handles have to read through the dead mount.
    evict = [os.open(os.path.join(ctx.mp, p.path[len("/v2/"):]), os.O_RDONLY) for p in ctx.probes
             if p.path.startswith(f"/v2/{APP}/blobs/") and p.rng is None]
    try:
        return kill_and_remount(ctx, report, load, nginx_pid, evict)
    finally:
        for fd in evict:
            os.close(fd)


def kill_and_remount(ctx, report, load, nginx_pid, evict):
    old = ctx.mount
    t_kill = time.monotonic()
    with load.stats.lock:
        counts_before = dict(load.stats.counts)
    os.kill(old.proc.pid, signal.SIGKILL)
    try:
        old.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    enotconn = wait_until(10, lambda: stat_errno(ctx.mp) == errno.ENOTCONN, step=0.05)
    t_enotconn = time.monotonic() - t_kill
    # Pages being sent right then are skipped by DONTNEED: drop them again and again.
    for _ in range(20):
        for fd in evict:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        time.sleep(0.1)
    errors_while_dead = load.stats.errors_after(t_kill)
    with load.stats.lock:
        dead_counts = {k: v - counts_before[k] for k, v in load.stats.counts.items()}
    t_dead = time.monotonic() - t_kill
    # A new mount on the same mount point.
    # The daemon is gone; not old.stop(): that would detach the stale mount itself.
    if old._log:
        old._log.close()
        old._log = None
    old.proc = None
    problems = []
    if not enotconn:
        problems.append(f"stat of the mount point never gave ENOTCONN (errno {stat_errno(ctx.mp)})")
    stale_entries = mounts_at(ctx.mp)
    new = LoadMount(ctx.binary, ctx.reg.root, ctx.mp, mount_args(ctx), os.path.join(ctx.tmp, "mount-2.log"),
                    ctx.mount_extra)
    ctx.mount = new
    t_start = time.monotonic()
    try:
        new.start()
        up = True
    except ServerError as e:
        problems.append(f"the new mount did not come up: {e}")
        up = False
    t_up = time.monotonic()
    ctx.rss.pid = new.proc.pid if new.proc else None
    log = tail(new.log_path, 50)
    if "stale FUSE mount" not in log:
        problems.append("the new daemon's log does not mention the stale mount: " + log[-300:])
    report.check(f"kill: a new mount clears the stale one (ENOTCONN {t_enotconn:.1f} s after SIGKILL, "
                 f"{stale_entries} mount entry before, ready {t_up - t_start:.2f} s after exec)", problems)
    # Right again? First without touching nginx, then (if needed) after a reload.
    recovered, bad = wait_recovery(ctx, RECOVERY_WINDOW)
    reload_needed = recovered is None
    recovered_reload, bad_reload = None, []
    t_reload = None
    if reload_needed:
        note(f"kill: after {RECOVERY_WINDOW:.0f} s on the new mount still failing: {summarize_bad(bad)}")
        t_reload = time.monotonic()
        os.kill(nginx_pid, signal.SIGHUP)  # nginx -s reload
        recovered_reload, bad_reload = wait_recovery(ctx, RECOVERY_WINDOW)
    t_end = time.monotonic()
    time.sleep(1.0)
    w = load.finish(interrupt=True)
    st = load.stats
    note("kill: wrk: " + wrk_summary(w))
    note(f"kill: checkers: {load.requests()} requests, " + ", ".join(f"{k} {v}" for k, v in st.counts.items()) +
         f"; in the {t_dead:.1f} s from SIGKILL to the new mount: " + ", ".join(f"{k} {v}" for k, v in dead_counts.items()))
    note("kill: failures seen: " + "; ".join(f"{v}x {k}" for k, v in sorted(st.statuses.items(), key=lambda kv: -kv[1])[:8]))
    # Nothing wrong, ever.
    problems = []
    if w.get("wrong", 0):
        problems.append(f"wrk: {w['wrong']} wrong 2xx bodies: " + wrk_kinds(w, "wrong"))
        problems += saved_bad(ctx.wrkdir, "wrong")
    if st.counts["wrong"] or st.counts["digest"]:
        problems.append(f"checkers: {st.counts['wrong']} wrong, {st.counts['digest']} digest mismatches: " +
                        "; ".join(st.samples[:5]))
    if not errors_while_dead:
        problems.append("no error at all while the daemon was dead (nginx served everything from its caches?)")
    report.check("kill: with the daemon dead nginx answers errors, never a wrong body "
                 f"(wrk: {w.get('err', 0)} error answers, {wrk_socket_errors(w)} socket errors)", problems)
    alive = ctx.nginx.proc.poll() is None and ctx.nginx.proc.pid == nginx_pid
    problems = [] if alive else ["nginx is not running"]
    if reload_needed:
        ctx.results["recovery"] = ("reload", recovered_reload, bad)
        if recovered_reload is None:
            problems.append(f"still wrong {RECOVERY_WINDOW:.0f} s after the new mount and "
                            f"{RECOVERY_WINDOW:.0f} s after an nginx reload: {summarize_bad(bad_reload)}")
            what = "kill: correct answers again: NOT within the windows"
        else:
            what = (f"kill: correct answers again {recovered_reload:.2f} s after an nginx reload "
                    f"(without it, still failing {RECOVERY_WINDOW:.0f} s after the new mount: {summarize_bad(bad)})")
    else:
        ctx.results["recovery"] = ("no reload", recovered, [])
        what = f"kill: correct answers again {recovered:.2f} s after the new mount, nginx untouched"
    report.check(what, problems)
    ctx.results["kill"] = (w, load, t_end - t_kill)


def phase_sigterm(ctx, report):
    note("sigterm: load, SIGTERM to the daemon")
    load = Load(ctx, "sigterm", 60, 3).start()
    time.sleep(FAULT_LEAD)
    m = ctx.mount
    t_term = time.monotonic()
    os.kill(m.proc.pid, signal.SIGTERM)
    detached = wait_until(10, lambda: mounts_at(ctx.mp) == 0, step=0.02)
    t_detach = time.monotonic() - t_term
    try:
        rc = m.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        rc = None
    t_exit = time.monotonic() - t_term
    time.sleep(1.0)
    w = load.finish(interrupt=True)
    st = load.stats
    note("sigterm: wrk: " + wrk_summary(w))
    note(f"sigterm: checkers: {load.requests()} requests, " + ", ".join(f"{k} {v}" for k, v in st.counts.items()))
    problems = []
    if rc != 0:
        problems.append(f"exit status {rc} after {t_exit:.1f} s: " + tail(m.log_path, 10))
    if not detached or mounts_at(ctx.mp):
        problems.append(f"still {mounts_at(ctx.mp)} mount(s) at the mount point")
    if w.get("wrong", 0) or st.counts["wrong"] or st.counts["digest"]:
        problems.append(f"wrong bodies: wrk {w.get('wrong', 0)}, checkers {st.counts['wrong']} "
                        f"(+{st.counts['digest']} digest): " + "; ".join(st.samples[:5]))
    ctx.results["sigterm"] = (t_detach, t_exit, rc)
    report.check(f"sigterm: under load the mount is gone after {t_detach:.2f} s, the daemon exits "
                 f"{rc} after {t_exit:.2f} s, nothing wrong served", problems)


def resolve_binary(arg):
    for c in [arg] if arg else [os.environ.get("REGISTRYFS_BIN") or "",
                                os.path.join(REPO_ROOT, "target", "debug", "registryfs")]:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    raise SetupError("registryfs binary not found: cargo build, or pass --registryfs PATH")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registryfs", help="registryfs binary (default: $REGISTRYFS_BIN, target/debug/registryfs)")
    ap.add_argument("--duration", type=int, default=60, help="seconds of load in the main phase (default 60)")
    ap.add_argument("--quick", action="store_true", help="10 s of load")
    ap.add_argument("--connections", type=int, default=CONNECTIONS,
                    help=f"wrk connections (default {CONNECTIONS}; 0: no wrk, only the checkers)")
    ap.add_argument("--no-faults", action="store_true", help="skip the SIGKILL and SIGTERM phases")
    ap.add_argument("--no-load", action="store_true", help="skip the main load phase")
    ap.add_argument("--mount-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for `registryfs mount` (repeat), e.g. --mount-arg=--no-passthrough")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--timeout", type=int, help="abort (and clean up) after this many seconds "
                    "(default: duration + 300)")
    args = ap.parse_args(argv)
    duration = 10 if args.quick else args.duration
    if duration < 1:
        ap.error("--duration must be at least 1")

    try:
        binary = resolve_binary(args.registryfs)
        verifier = ensure_verifier()
        if not shutil.which("wrk"):
            raise SetupError("wrk not found: scripts/install-deps.sh")
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    stop_cleanly_on_signals(args.timeout or duration + 300)

    report = Report()
    ctx = Context()
    ctx.binary, ctx.verifier = binary, verifier
    ctx.connections = args.connections
    ctx.mount_extra = args.mount_arg
    ctx.tmp = tempfile.mkdtemp(prefix="registryfs-load-")
    # nginx's workers (nobody) must reach the mount.
    os.chmod(ctx.tmp, 0o711)
    ctx.reg = Registry(ctx.tmp)
    ctx.mount = None
    ctx.nginx = None
    ctx.loads = []
    ctx.results = {}
    ctx.mp = os.path.join(ctx.tmp, "mnt")
    stop_all = threading.Event()
    ctx.rss = RssSampler(stop_all, time.monotonic() + duration + 600)
    t0 = time.monotonic()
    interrupted = False
    try:
        ctx.reg.start()
        problems = setup(ctx, report)
        os.makedirs(ctx.mp)
        ctx.mount = LoadMount(binary, ctx.reg.root, ctx.mp, mount_args(ctx), os.path.join(ctx.tmp, "mount-1.log"),
                              ctx.mount_extra).start()
        ctx.nginx = Nginx(binary, os.path.join(ctx.tmp, "nginx"), ctx.mp, njs=True)
        ctx.port = ctx.nginx.start().port
        note(f"registry pid {ctx.reg.proc.pid} on {ctx.reg.host}; registryfs pid {ctx.mount.proc.pid} on {ctx.mp}; "
             f"nginx (njs) pid {ctx.nginx.proc.pid} on 127.0.0.1:{ctx.port}; {binary}")
        ctx.probes = make_probes(ctx)
        ctx.diagnose = Diagnose(verifier, ctx.payloads)
        ctx.wrkdir = write_wrk_dir(ctx, ctx.probes)
        bad = probe_round(ctx)
        if bad:
            problems.append("before the load: " + summarize_bad(bad))
        report.check(f"setup: {len(ctx.probes)} kinds of request answered right through nginx; "
                     "schema1 of A, B and the lists' amd64 entries verify with libtrust, payloads as the registry's",
                     problems)
        if problems:
            raise SetupError("setup failed")
        ctx.rss.start()
        if not args.no_load:
            phase_load(ctx, report, duration)
        if not args.no_faults:
            phase_kill(ctx, report)
            phase_sigterm(ctx, report)
    except KeyboardInterrupt as e:
        interrupted = True
        report.check("harness", [f"interrupted: {e or 'SIGINT'}"])
    except (RegistryError, ServerError, SetupError, OSError, subprocess.SubprocessError) as e:
        report.check("harness", [f"{type(e).__name__}: {e}"])
    finally:
        signal.alarm(0)
        stop_all.set()
        for load in ctx.loads:
            load.kill()
        if ctx.nginx is not None:
            ctx.nginx.stop()
        if ctx.mount is not None:
            ctx.mount.stop()
        # A stale mount left by a failure in the kill phase.
        for _ in range(3):
            if not mounts_at(ctx.mp):
                break
            subprocess.run(["umount", "-l", ctx.mp], capture_output=True, timeout=10)
        ctx.reg.stop()
        if ctx.rss.is_alive():
            ctx.rss.join(timeout=5)
        if args.keep:
            print(f"# kept {ctx.tmp}")
        elif not mounts_at(ctx.mp):
            shutil.rmtree(ctx.tmp, ignore_errors=True)
        else:
            print(f"# {ctx.mp} is still mounted; left {ctx.tmp}")

    return finish("load", report, t0, interrupted)


if __name__ == "__main__":
    sys.exit(main())
