#!/usr/bin/env python3
"""registryfs on an S3 store against its peers, in one run (scripts/bench.sh --s3).

    python3 scripts/bench/s3.py --registryfs target/release/registryfs [--garage PATH]

Starts one real Garage 2.5.0 (tests/s3/garage.py) and Debian's docker-registry 2.8.2
with its s3 driver on the bucket (tests/s3/s3registry.py), pushes through the registry
a 256 MiB blob, --repos small images `bench/rNNNNNN:latest` and the sample store's
images, then measures (docs/s3.md, "Figures"):

  blob    the blob read through a mount of the bucket (1 MiB reads) vs a direct
          download of the same object from the same Garage (SigV4 ranged GETs of
          8 MiB, two at a time on keep-alive connections, hashed as they arrive, into
          memory: no disk write, unlike the mount's cache file): cold (a fresh mount
          with an empty --cache-dir, every round), and warm (the blob in the cache
          folder and the page cache) vs reading that cache file directly;
  nginx   old-client GET by tag (no Accept: schema1) with wrk through nginx (config
          from `registryfs httpd-config nginx --full --njs`) on a mount of the bucket
          vs registry 2.8.2 serving the same bucket (req/s), and the first GET of a
          tag each server has never served (a fresh mount; one keep-alive connection);
  twin    two mounts of the bucket (own cache folders), each under its own nginx:
          every file under every tag folder has the same type, size, mtime, link
          target and bytes on both, and every manifest kind of every tag the same
          status, body, ETag and Last-Modified from both nginx.

Prints `# ` lines saying what was measured, then one `FIGURE` line per figure (the
format of scripts/bench/run.py). Everything binds to 127.0.0.1 and is stopped by PID
in a finally block (also on SIGTERM/SIGINT/SIGHUP and the --timeout alarm); every
mount is unmounted. Standard library only; needs root (mount(2)), wrk, nginx (njs),
docker-registry, and Garage (scripts/install-garage.sh).
"""

import argparse
import hashlib
import http.client
import importlib.util
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))

# scripts/bench/run.py under a name of its own: tests/oracle and tests/httpd have a
# run.py too.
_spec = importlib.util.spec_from_file_location("bench_run", os.path.join(HERE, "run.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "s3"))

import fixtures  # noqa: E402
from garage import Garage, GarageError, find_garage  # noqa: E402
from harness import SetupError, stop_cleanly_on_signals  # noqa: E402
from registry import RegistryError  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
from s3client import S3Error  # noqa: E402
from s3registry import S3Registry  # noqa: E402
from servers import ServerError, free_port  # noqa: E402

note, figure, fmt, CLEANUP = bench.note, bench.figure, bench.fmt, bench.CLEANUP
MIB = 1 << 20
BIG_REPO = "big"
# Accept for each manifest kind a tag folder may hold (the files nginx picks from).
KIND_ACCEPT = {
    "schema1": None,
    "schema2": "application/vnd.docker.distribution.manifest.v2+json",
    "list": "application/vnd.docker.distribution.manifest.list.v2+json",
    "oci": "application/vnd.oci.image.manifest.v1+json",
    "oci-index": "application/vnd.oci.image.index.v1+json",
}


def bench_repo(i):
    return f"bench/r{i:06d}"


def small_image(seed):
    layers = fixtures.L(seed)
    return fixtures.Image(fixtures.simple_config("amd64", layers, [(f"ADD {seed} /", False)]), layers)


# ---------------------------------------------------------------------------
# the bucket


def fill_bucket(args, reg, work):
    """Pushes through the registry: the big blob (a layer link of BIG_REPO), the bench
    images, the sample store. Returns (blob digest, its bytes' length, tags per repo)."""
    t0 = time.monotonic()
    chunk = os.urandom(MIB)
    # Vary each MiB so nothing deduplicates or compresses.
    data = b"".join(i.to_bytes(8, "little") + chunk[8:] for i in range(args.blob_mib))
    digest = reg.push_blob(BIG_REPO, data)
    size = len(data)
    del data
    note(f"bucket: pushed a {args.blob_mib} MiB blob {digest[:19]}… to {BIG_REPO} in {time.monotonic() - t0:.1f}s")
    t0 = time.monotonic()
    tags = {}
    pushes = [fixtures.Push(bench_repo(i), "latest", small_image(f"s3-bench-{i}")) for i in range(args.repos)]
    for fx in fixtures.sample_fixtures():
        pushes += fx.pushes
    for n, p in enumerate(pushes):
        fixtures.push(reg, p, os.path.join(work, "layouts", str(n)))
        tags.setdefault(p.repo, set()).add(p.tag)
    note(f"bucket: pushed {len(pushes)} images ({len(tags)} repositories) in {time.monotonic() - t0:.1f}s")
    return digest, size, {repo: sorted(t) for repo, t in tags.items()}


class MountSet:
    """Mounts of the bucket, each with a cache folder of its own under `work`."""

    def __init__(self, args, work, store):
        self.args, self.work, self.store = args, work, store
        self.count = 0

    def start(self, name, extra=(), cache_dir=None, env=None):
        """A mount with a new empty cache folder, or with `cache_dir` as it is."""
        self.count += 1
        if cache_dir is None:
            cache_dir = os.path.join(self.work, f"cache-{name}-{self.count}")
            os.makedirs(cache_dir)
        mp = os.path.join(self.work, f"mnt-{name}")
        m = bench.Mount(self.args.registryfs, self.store, mp,
                        ["--signing-key", self.args.key, "--cache-dir", cache_dir, *extra],
                        os.path.join(self.work, f"mount-{name}.log"), env=env).start()
        m.cache_dir = cache_dir
        return m


# ---------------------------------------------------------------------------
# blob: the mount vs a direct ranged-GET download


class RangedDownload:
    """A whole object by ranged GETs of `part` bytes, `concurrency` at a time (one
    keep-alive connection each), into memory; the parts are hashed in order as they
    arrive; with `dest`, each part is also written to that file where it belongs (as
    the mount writes its cache file). What a well-written S3 downloader does."""

    def __init__(self, client, bucket, key, part=8 * MIB, concurrency=2):
        self.client, self.path = client, f"/{bucket}/{key}"
        self.part, self.concurrency = part, concurrency

    def _connection(self):
        return http.client.HTTPConnection(self.client.host, self.client.port, timeout=self.client.timeout)

    def _get(self, conn, method, rng=None, into=None):
        headers = self.client.signed_headers(method, self.path, {})
        conn.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if rng:
            conn.putheader("range", "bytes=%d-%d" % rng)
        conn.endheaders()
        r = conn.getresponse()
        if into is None:
            body = r.read()
            if not 200 <= r.status < 300:
                raise S3Error(method, self.path, r.status, "", body[:200])
            return r
        want = len(into)
        if r.status != 206:
            raise S3Error(method, self.path, r.status, "", r.read()[:200])
        got = 0
        while got < want:
            n = r.readinto(into[got:])
            if not n:
                raise OSError(f"GET {self.path} bytes {rng}: {got} of {want} bytes, then the end")
            got += n
        r.read()
        return r

    def run(self, dest=None):
        """Returns (size, sha256 digest) of the object."""
        head_conn = self._connection()
        size = int(self._get(head_conn, "HEAD").getheader("content-length"))
        buf = bytearray(size)
        view = memoryview(buf)
        parts = [(off, min(off + self.part, size)) for off in range(0, size, self.part)]
        done = [threading.Event() for _ in parts]
        errors = []
        next_part = iter(range(len(parts)))
        lock = threading.Lock()

        def worker(conn):
            try:
                while not errors:
                    with lock:
                        i = next(next_part, None)
                    if i is None:
                        return
                    lo, hi = parts[i]
                    self._get(conn, "GET", (lo, hi - 1), view[lo:hi])
                    if fd is not None:
                        os.pwrite(fd, view[lo:hi], lo)
                    done[i].set()
            except BaseException as e:  # reported by run()
                errors.append(e)
                for d in done:
                    d.set()
            finally:
                conn.close()

        threads = [threading.Thread(target=worker, args=(head_conn if n == 0 else self._connection(),))
                   for n in range(self.concurrency)]
        fd = None if dest is None else os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for t in threads:
            t.start()
        h = hashlib.sha256()
        for (lo, hi), d in zip(parts, done):
            d.wait()
            if errors:
                break
            h.update(view[lo:hi])  # hashlib lets go of the GIL for big buffers
        for t in threads:
            t.join()
        if fd is not None:
            os.close(fd)
        if errors:
            raise errors[0]
        return size, "sha256:" + h.hexdigest()


def own_cpu_seconds():
    t = os.times()
    return t.user + t.system


def bench_blob(args, work, mounts, garage, reg, digest, size):
    hexd = digest.split(":", 1)[1]
    key = f"{reg.key_prefix}blobs/sha256/{hexd[:2]}/{hexd}/data"
    direct = RangedDownload(garage.client(timeout=60), garage.bucket, key)
    note(f"blob: {size // MIB} MiB blob {digest[:19]}… at s3://{garage.bucket}/{key}; "
         f"direct: ranged GETs of {direct.part // MIB} MiB, {direct.concurrency} at a time, sha256 in order, "
         f"into memory (and, for reference, also written to a file); mount: 1 MiB reads of "
         f"{BIG_REPO}/blobs/{digest[:19]}…")
    note("blob: cold = a fresh mount with an empty cache folder each round (Garage's own files stay in the "
         "page cache for all ways: this measures the clients, not the disk)")
    cold = {"mount": [], "direct": [], "direct to a file": []}
    # CPU seconds per cold read: Garage's, and the client's (the registryfs daemon and
    # the reader; this process for the direct download).
    cpu = {(way, who): [] for way in cold for who in ("garage", "client")}
    dest = os.path.join(work, "direct-download")
    m = None
    ways = list(cold)
    for r in range(args.blob_rounds):
        # Each round starts with another way, so no way always follows the same one.
        for way in ways[r % len(ways):] + ways[:r % len(ways)]:
            if way == "mount":
                if m is not None:
                    m.stop()
                    shutil.rmtree(m.cache_dir)
                m = mounts.start("blob")
                path = os.path.join(m.mountpoint, BIG_REPO, "blobs", digest)
            garage0, self0 = bench.cpu_seconds(garage.pid), own_cpu_seconds()
            daemon0 = bench.cpu_seconds(m.proc.pid) if way == "mount" else 0
            if way == "mount":
                got_size, secs = bench.read_all(path)
                assert got_size == size, (path, got_size)
            else:
                t0 = time.perf_counter()
                got_size, got_digest = direct.run(dest if way == "direct to a file" else None)
                secs = time.perf_counter() - t0
                assert (got_size, got_digest) == (size, digest), (got_size, got_digest)
            cold[way].append(secs)
            cpu[(way, "garage")].append(bench.cpu_seconds(garage.pid) - garage0)
            daemon = bench.cpu_seconds(m.proc.pid) - daemon0 if way == "mount" else 0
            cpu[(way, "client")].append(own_cpu_seconds() - self0 + daemon)
            if os.path.exists(dest):
                os.unlink(dest)
    cached = os.path.join(m.cache_dir, "blobs", "sha256", hexd)
    if not os.path.isfile(cached):
        raise ServerError(f"blob: {cached}: not in the cache folder after a complete read")
    # Warm: the blob in the cache folder, a fresh mount over it (the usual state of a
    # node after a restart), all of it in the page cache; the peer is the cache file.
    m.stop()
    m = mounts.start("blob", cache_dir=m.cache_dir)
    path = os.path.join(m.mountpoint, BIG_REPO, "blobs", digest)
    warm = {"mount": [], "local file": []}
    for p in (path, cached):
        bench.read_all(p)  # into the page cache (the mount's first open also checks the digest)
    daemon0 = bench.cpu_seconds(m.proc.pid)
    for r in range(args.warm_rounds):
        for way, p in (("mount", path), ("local file", cached))[::1 if r % 2 == 0 else -1]:
            got_size, secs = bench.read_all(p)
            assert got_size == size, (p, got_size)
            warm[way].append(secs)
    warm_daemon = (bench.cpu_seconds(m.proc.pid) - daemon0) / args.warm_rounds
    m.stop()
    shutil.rmtree(m.cache_dir, ignore_errors=True)

    def mbps(times):
        return size / statistics.median(times) / 1e6

    note("blob: MB/s per round (medians below): " + "; ".join(
        f"{temp} {way} " + " ".join(f"{size / s / 1e6:,.0f}" for s in runs[way])
        for temp, runs in (("cold", cold), ("warm", warm)) for way in runs))
    note("blob: cold, CPU seconds per read (medians): " + "; ".join(
        f"{way}: Garage {statistics.median(cpu[(way, 'garage')]):.2f}, client "
        f"{statistics.median(cpu[(way, 'client')]):.2f}" + (" (daemon + reader)" if way == "mount" else "")
        for way in cold) + f"; warm: registryfs daemon {warm_daemon:.2f} per read; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    ours, peer = mbps(cold["mount"]), mbps(cold["direct"])
    figure("s3 blob-read cold, mount vs direct ranged GETs", fmt(ours, 0), fmt(peer, 0) + " direct", "MB/s",
           ours / peer, ">= 0.9x", ours / peer >= 0.9)
    peer = mbps(cold["direct to a file"])
    figure("s3 blob-read cold, mount vs direct ranged GETs written to a file", fmt(ours, 0),
           fmt(peer, 0) + " direct to a file", "MB/s", ours / peer, "(none)", None)
    ours, peer = mbps(warm["mount"]), mbps(warm["local file"])
    figure("s3 blob-read warm (cache folder), mount vs the local file", fmt(ours, 0), fmt(peer, 0) + " local file",
           "MB/s", ours / peer, ">= 0.95x", ours / peer >= 0.95)


# ---------------------------------------------------------------------------
# nginx on a mount vs the registry on the bucket


def first_get(port, path):
    """Seconds to the whole answer of one GET on a new connection, and the answer."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        t0 = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return time.perf_counter() - t0, (r.status, r.getheader("Docker-Content-Digest"), body)
    finally:
        c.close()


def explain_first_get(args, mounts, garage, reg):
    """What a first GET costs: the S3 requests a fresh mount makes for one tag's schema1
    (counted by a pass-through proxy in front of Garage), and one request's round trip."""
    proxy = FaultProxy(int(garage.endpoint.rsplit(":", 1)[1])).start()
    CLEANUP.add("proxy", proxy.stop)
    m = mounts.start("count", ["--allow-other"], env=dict(os.environ, AWS_ENDPOINT_URL=proxy.endpoint))
    ng = bench.start_nginx(args.registryfs, os.path.join(mounts.work, "nginx-count"), m.mountpoint)
    try:
        tag_dir = os.path.join(m.mountpoint, bench_repo(args.cold_tags), "manifests", "latest")
        before = proxy.requests
        t0 = time.perf_counter()
        os.stat(tag_dir)
        with open(os.path.join(tag_dir, "schema1"), "rb") as f:
            f.read()
        direct_ms = (time.perf_counter() - t0) * 1e3
        direct = proxy.requests - before
        before, seen = proxy.requests, dict(proxy.by_path)
        nginx_ms = first_get(ng.port, f"/v2/{bench_repo(args.cold_tags + 1)}/manifests/latest")[0] * 1e3
        through_nginx = proxy.requests - before
        kinds = {}
        for (method, path), n in proxy.by_path.items():
            kind = "LIST" if "list-type" in path else method
            kinds[kind] = kinds.get(kind, 0) + n - seen.get((method, path), 0)
    finally:
        ng.stop()
        m.stop()
        proxy.stop()
        CLEANUP.remove(proxy.stop)
    client = garage.client()
    key = f"{reg.key_prefix}repositories/{bench_repo(0)}/_manifests/tags/latest/current/link"
    rtt, list_rtt = [], []
    for _ in range(10):
        t0 = time.perf_counter()
        client.get_object(garage.bucket, key)
        rtt.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.list_objects(garage.bucket, f"{reg.key_prefix}repositories/{bench_repo(0)}/_manifests/tags/", "/")
        list_rtt.append(time.perf_counter() - t0)
    by_kind = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()) if n)
    note(f"nginx: on a fresh mount (through a counting proxy: a new connection per request), a tag's first GET "
         f"through nginx asks the bucket {through_nginx} requests ({by_kind}; {nginx_ms:.1f} ms); stat of its "
         f"folder and read of its schema1 without nginx {direct} requests ({direct_ms:.1f} ms); one small GET "
         f"from Garage: {statistics.median(rtt) * 1e3:.2f} ms, one LIST of a repository's tags "
         f"{statistics.median(list_rtt) * 1e3:.2f} ms (medians of 10, a new connection each)")


class WaitSampler:
    """Samples what nginx's workers wait in (/proc/PID/wchan) every 5 ms while it runs:
    a worker waiting for a FUSE answer holds up every connection it serves."""

    def __init__(self, master_pid):
        self.pids = [int(e) for e in os.listdir("/proc") if e.isdigit() and parent_of(int(e)) == master_pid]
        self.counts = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.005):
            for pid in self.pids:
                try:
                    with open(f"/proc/{pid}/wchan") as f:
                        where = f.read().strip() or "running"
                except OSError:
                    continue
                where = "running" if where == "0" else where
                self.counts[where] = self.counts.get(where, 0) + 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def summary(self):
        total = sum(self.counts.values()) or 1
        top = sorted(self.counts.items(), key=lambda kv: -kv[1])[:4]
        return ", ".join(f"{where} {n * 100 // total}%" for where, n in top)


def parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def longer_ttl(args, work, mounts, mount_args, garage):
    """For reference: one run on a mount with a tag lifetime of 30 s (a push then takes
    up to that long to show), to see what asking the bucket again every second costs."""
    m = mounts.start("ttl", [*mount_args, "--tag-ttl", "30"])
    ng = bench.start_nginx(args.registryfs, os.path.join(work, "nginx-ttl"), m.mountpoint)
    try:
        if len(os.sched_getaffinity(0)) >= 2:
            for pid in (m.proc.pid, ng.proc.pid):
                bench.pin(pid, bench.SERVER_CPUS)
        bench.load(ng.port, "", args.repos, 1, work)  # warm up
        garage0 = bench.cpu_seconds(garage.pid)
        with WaitSampler(ng.proc.pid) as waits:
            rate = bench.load(ng.port, "", args.repos, args.seconds, work)
        busy = (bench.cpu_seconds(garage.pid) - garage0) / args.seconds
    finally:
        ng.stop()
        m.stop()
    note(f"nginx: for reference, a mount with --tag-ttl 30: {fmt(rate, 0)} req/s, Garage {busy * 100:.0f}% of a core; "
         f"its workers: {waits.summary()}")


def bench_remote(args, work, mounts, garage):
    """nginx on a mount of a bucket that answers like a remote one: every request to
    Garage goes through a proxy that holds it `--remote-ms` first (S3 from another
    machine or region). With the default tag lifetime the mount asks about each tag in
    use every second; compared with a 30 s lifetime (asking almost never), this shows
    how much of that the readers wait for."""
    proxy = FaultProxy(int(garage.endpoint.rsplit(":", 1)[1])).start()
    CLEANUP.add("proxy", proxy.stop)
    proxy.mode, proxy.delay = "slow", args.remote_ms / 1000
    env = dict(os.environ, AWS_ENDPOINT_URL=proxy.endpoint)
    rates, waits_seen = {}, {}
    try:
        for name, extra in (("lifetime 1 s", []), ("--tag-ttl 30", ["--tag-ttl", "30"])):
            metrics_port = free_port()
            m = mounts.start(f"remote-{extra[-1] if extra else 1}",
                             ["--allow-other", "--threads", "16", "--metrics-listen", f"127.0.0.1:{metrics_port}",
                              *extra], env=env)
            ng = bench.start_nginx(args.registryfs, os.path.join(work, f"nginx-remote-{len(rates)}"), m.mountpoint)
            try:
                bench.warm_sequentially(ng.port, "", args.repos)  # every tag asked once
                before = s3_counters(metrics_port)
                with WaitSampler(ng.proc.pid) as waits:
                    # (Requests that waited 5 s for a worker time out in wrk: allowed here.)
                    rates[name] = bench.load(ng.port, "", args.repos, args.seconds * 2, work, allow_errors=True)
                waits_seen[name] = waits.summary() + "; bucket use per second: " + per_second(
                    before, s3_counters(metrics_port), args.seconds * 2)
            finally:
                ng.stop()
                m.stop()
    finally:
        proxy.stop()
        CLEANUP.remove(proxy.stop)
    note(f"remote: every request to Garage held {args.remote_ms} ms by a proxy; nginx on a mount through it, "
         f"{args.repos} repositories round robin, wrk -t2 -c64 -d{args.seconds * 2}s: " + "; ".join(
             f"{name}: {fmt(rate, 0)} req/s, workers {waits_seen[name]}" for name, rate in rates.items()))
    ours, ref = rates["lifetime 1 s"], rates["--tag-ttl 30"]
    figure(f"s3 nginx schema1-by-tag with {args.remote_ms} ms per bucket request, lifetime 1 s vs 30 s",
           fmt(ours, 0), fmt(ref, 0) + " with 30 s", "req/s", ours / ref, "(none)", None)


def bench_nginx(args, work, mounts, garage, reg):
    repos = args.repos
    mount_args = ["--allow-other", "--threads", "16"]
    # Cold: a fresh mount and nginx; the first GET of tags neither server has served.
    m = mounts.start("cold", mount_args)
    ng = bench.start_nginx(args.registryfs, os.path.join(work, "nginx-cold"), m.mountpoint)
    lat = {"mount": [], "registry": []}
    for i in range(args.cold_tags):
        path = f"/v2/{bench_repo(i)}/manifests/latest"
        answers = {}
        for name, port in (("mount", ng.port), ("registry", reg.port)) if i % 2 == 0 else \
                (("registry", reg.port), ("mount", ng.port)):
            secs, answers[name] = first_get(port, path)
            lat[name].append(secs)
        (s1, d1, _), (s2, d2, _) = answers["mount"], answers["registry"]
        if (s1, d1) != (s2, d2) or s1 != 200:
            raise ServerError(f"GET {path}: mount {s1} {d1} vs registry {s2} {d2}")
    ng.stop()
    m.stop()
    ours, peer = statistics.median(lat["mount"]) * 1e3, statistics.median(lat["registry"]) * 1e3
    note(f"nginx: first GET by tag (no Accept: schema1), {args.cold_tags} tags, each on a new connection: "
         f"mount (fresh, through nginx) median {ours:.2f} ms, max {max(lat['mount']) * 1e3:.2f} ms; "
         f"registry median {peer:.2f} ms, max {max(lat['registry']) * 1e3:.2f} ms")
    figure("s3 schema1 first GET by tag, nginx on a fresh mount vs registry-2.8 first GET", f"{ours:.2f}",
           f"{peer:.2f} registry", "ms", ours / peer, "(none)", None)
    explain_first_get(args, mounts, garage, reg)

    metrics_port = free_port()
    m = mounts.start("nginx", mount_args + ["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    ng = bench.start_nginx(args.registryfs, os.path.join(work, "nginx-mount"), m.mountpoint)
    try:
        if len(os.sched_getaffinity(0)) >= 2:
            for pid in (m.proc.pid, ng.proc.pid, reg.proc.pid, garage.pid):
                bench.pin(pid, bench.SERVER_CPUS)
            note("nginx: servers (nginx, registryfs daemon, registry, Garage) pinned to CPU 0, wrk to CPU 1")
        note(f"nginx: 2 workers, njs, config from `registryfs httpd-config nginx --full`; mount {' '.join(mount_args)} "
             f"(tag lifetime 1 s: the default); {repos} repositories round robin; wrk -t2 -c64 -d{args.seconds}s")
        ports = {"mount": ng.port, "registry": reg.port}
        for i in range(repos):
            path = f"/v2/{bench_repo(i)}/manifests/latest"
            # schema1 signatures differ (the registry signs with the time and a random
            # nonce); the digest is of the unsigned payload.
            (s1, d1, _), (s2, d2, _) = (first_get(port, path)[1] for port in ports.values())
            if (s1, d1) != (s2, d2) or s1 != 200:
                raise ServerError(f"GET {path}: mount {s1} {d1} vs registry {s2} {d2}")
        bench.warm_sequentially(reg.port, "", repos)  # the registry's first conversions write into the bucket
        for name, port in ports.items():
            bench.load(port, "", repos, 1, work, allow_errors=name == "registry")  # warm up
        runs = {name: [] for name in ports}
        # CPU share of a core during the runs: Garage's, and the server's (the
        # registryfs daemon, or the registry).
        busy = {(name, who): [] for name in ports for who in ("garage", "server")}
        servers = {"mount": m.proc.pid, "registry": reg.proc.pid}
        wait_summaries, bucket_use = [], []
        for r in range(args.nginx_rounds):
            for name, port in ports.items():
                if name == "registry" and r >= 2:
                    continue  # two runs are plenty to tell 10x
                cpu0 = {who: bench.cpu_seconds(pid) for who, pid in (("garage", garage.pid), ("server", servers[name]))}
                if name == "mount":
                    before = s3_counters(metrics_port)
                    with WaitSampler(ng.proc.pid) as waits:
                        runs[name].append(bench.load(port, "", repos, args.seconds, work))
                    wait_summaries.append(waits.summary())
                    bucket_use.append(per_second(before, s3_counters(metrics_port), args.seconds))
                else:
                    runs[name].append(bench.load(port, "", repos, args.seconds, work, allow_errors=True))
                for who, pid in (("garage", garage.pid), ("server", servers[name])):
                    busy[(name, who)].append((bench.cpu_seconds(pid) - cpu0[who]) / args.seconds)
        note("nginx: schema1 req/s per round: " + "; ".join(
            f"{name} " + " ".join(fmt(x, 0) for x in runs[name]) for name in ports))
        server_names = {"mount": "registryfs daemon", "registry": "registry"}
        note("nginx: CPU during the runs (median, % of a core): " + "; ".join(
            f"{name}: Garage {statistics.median(busy[(name, 'garage')]) * 100:.0f}%, "
            f"{server_names[name]} {statistics.median(busy[(name, 'server')]) * 100:.0f}%"
            for name in ports) + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        ours, peer = statistics.median(runs["mount"]), statistics.median(runs["registry"])
        note("nginx: where the workers on the mount were, sampled every 5 ms, per round: "
             + "; ".join(wait_summaries))
        note("nginx: the mount's use of the bucket per second, per round (its metrics): " + "; ".join(bucket_use))
        longer_ttl(args, work, mounts, mount_args, garage)
        figure("s3 nginx schema1-by-tag mount/registry-2.8", fmt(ours, 0), fmt(peer, 0) + " registry", "req/s",
               ours / peer, ">= 10x", ours / peer >= 10)
    finally:
        for pid in (reg.proc.pid, garage.pid):
            bench.pin(pid, os.sched_getaffinity(0))
        ng.stop()
    return m


def s3_counters(port):
    """The mount's S3 request and answer counters (`--metrics-listen`)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    counters = {}
    for line in text.splitlines():
        for family in ("registryfs_s3_requests_total", "registryfs_s3_answers_total"):
            if line.startswith(family + "{"):
                label = line[line.index('"') + 1:line.rindex('"')]
                counters[(family.split("_")[2], label)] = float(line.rsplit(" ", 1)[1])
    return counters


def per_second(before, after, seconds):
    rate = {k: (after.get(k, 0) - before.get(k, 0)) / seconds for k in after}
    requests = ", ".join(f"{label.upper()} {rate[(kind, label)]:.0f}"
                         for kind, label in sorted(rate) if kind == "requests")
    answers = ", ".join(f"{label} {rate[(kind, label)]:.0f}" for kind, label in sorted(rate) if kind == "answers")
    return f"requests {requests}; answers {answers}"


# ---------------------------------------------------------------------------
# two mounts of one bucket


def tag_files(mp, tags):
    """Every entry under every tag folder, relative to the mount point, sorted."""
    out = []
    for repo, names in sorted(tags.items()):
        for tag in names:
            top = os.path.join(mp, repo, "manifests", tag)
            names = sorted(os.listdir(top))
            out += [os.path.relpath(os.path.join(top, n), mp) for n in names]
            # The digest links are looked up, not listed: one per kind, and the revision.
            for n in names + ["revision"]:
                link = os.path.join(top, "digest", n)
                if os.path.lexists(link):
                    out.append(os.path.relpath(link, mp))
    return out


def entry_facts(mp, rel):
    st = os.lstat(os.path.join(mp, rel))
    path = os.path.join(mp, rel)
    if os.path.islink(path):
        content = os.readlink(path)
    elif os.path.isfile(path):
        with open(path, "rb") as f:
            content = f.read()
    else:
        content = None
    return (st.st_mode, st.st_size, st.st_mtime_ns, content)


def http_facts(port, path, accept):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path, headers={"Accept": accept} if accept else {})
        r = c.getresponse()
        body = r.read()
        return (r.status, r.getheader("Content-Type"), r.getheader("Docker-Content-Digest"), r.getheader("ETag"),
                r.getheader("Last-Modified"), r.getheader("Content-Length"), body)
    finally:
        c.close()


def bench_twin(args, work, mounts, first, tags):
    """`first` (the nginx section's mount, used for a while) and a fresh second mount."""
    second = mounts.start("twin", ["--allow-other"])
    ngs = [bench.start_nginx(args.registryfs, os.path.join(work, f"nginx-twin-{n}"), m.mountpoint)
           for n, m in enumerate((first, second))]
    try:
        files = tag_files(first.mountpoint, tags)
        other = tag_files(second.mountpoint, tags)
        problems = [] if files == other else [f"listings differ: {len(files)} vs {len(other)} entries"]
        for rel in files:
            a, b = entry_facts(first.mountpoint, rel), entry_facts(second.mountpoint, rel)
            if a != b:
                problems.append(f"{rel}: {a[:3]} vs {b[:3]}" + (" (content)" if a[3] != b[3] else ""))
        answers = 0
        for rel in files:
            parts = rel.split("/")
            if parts[-2] == "manifests" or len(parts) < 3 or parts[-3] != "manifests" or parts[-1] not in KIND_ACCEPT:
                continue
            repo, tag = "/".join(parts[:-3]), parts[-2]
            path = f"/v2/{repo}/manifests/{tag}"
            a, b = (http_facts(ng.port, path, KIND_ACCEPT[parts[-1]]) for ng in ngs)
            answers += 1
            if a != b or a[0] != 200 or not a[3] or not a[4]:
                problems.append(f"GET {path} ({parts[-1]}): {a[:6]} vs {b[:6]}")
        note(f"twin: {len(files)} entries under {sum(len(t) for t in tags.values())} tag folders: type, size, mtime, "
             f"link target, bytes; {answers} GETs by tag (one per manifest kind file) through two nginx: status, "
             f"Content-Type, Docker-Content-Digest, ETag, Last-Modified, Content-Length, body")
        for p in problems[:10]:
            note(f"twin: DIFFERENT {p}")
        line = (f"FIGURE s3 two mounts of one bucket: {'ok' if not problems else 'DIFFERENT'} "
                f"({len(files)} entries and {answers} nginx answers compared, {len(problems)} different) "
                f"target identical: {'met' if not problems else 'MISSED'}")
        bench.FIGURES.append(line)
        print(line, flush=True)
    finally:
        for ng in ngs:
            ng.stop()
        second.stop()
        first.stop()


# ---------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registryfs", required=True)
    ap.add_argument("--garage", help="garage binary (default: $GARAGE_BIN, else scripts/install-garage.sh)")
    ap.add_argument("--only", default="blob,nginx,remote,twin")
    ap.add_argument("--blob-mib", type=int, default=256)
    ap.add_argument("--blob-rounds", type=int, default=3, help="cold rounds (a fresh mount each)")
    ap.add_argument("--warm-rounds", type=int, default=31)
    ap.add_argument("--repos", type=int, default=50, help="bench images pushed (GET round robin)")
    ap.add_argument("--cold-tags", type=int, default=20, help="tags GET for the first time on each server")
    ap.add_argument("--seconds", type=int, default=3, help="wrk duration per run")
    ap.add_argument("--nginx-rounds", type=int, default=3)
    ap.add_argument("--remote-ms", type=int, default=20, help="delay per bucket request in the remote section")
    ap.add_argument("--disk-dir", default=os.path.join(REPO_ROOT, "target", "bench"),
                    help="Garage's data and the cache folders go below (on disk, not tmpfs)")
    ap.add_argument("--timeout", type=int, default=600, help="abort (and clean up) after this many seconds")
    args = ap.parse_args(argv)
    args.registryfs = os.path.abspath(args.registryfs)
    sections = args.only.split(",")
    if os.geteuid() != 0:
        print("error: run as root (mount(2))", file=sys.stderr)
        return 2
    for tool in ("wrk", "nginx", "docker-registry"):
        if not shutil.which(tool):
            print(f"error: {tool} not found (scripts/install-deps.sh)", file=sys.stderr)
            return 2
    try:
        garage_bin = args.garage or find_garage()
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    stop_cleanly_on_signals(args.timeout)
    os.makedirs(args.disk_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="registryfs-bench-s3-", dir=args.disk_dir)
    os.chmod(work, 0o711)  # nginx workers (nobody) reach the mounts below
    t0 = time.monotonic()
    note(f"machine: {os.cpu_count()} CPUs, {os.uname().release}; registryfs {args.registryfs}; garage {garage_bin}")
    try:
        garage = Garage(os.path.join(work, "garage"), garage_bin)
        CLEANUP.add("garage", garage.stop)
        garage.start()
        reg = S3Registry(os.path.join(work, "registry"), garage)
        CLEANUP.add("registry", reg.stop)
        reg.start()
        args.key = reg.keyfile  # the registry's signing key: the same schema1 signatures
        note(f"garage pid {garage.pid} {garage.endpoint} (lmdb, no fsync), started in {garage.start_seconds:.2f}s; "
             f"registry 2.8.2 pid {reg.proc.pid} on {reg.host}, s3 driver, rootdirectory {reg.rootdirectory}")
        digest, size, tags = fill_bucket(args, reg, work)
        garage.export_aws_env()  # the mounts get the standard AWS_* variables only
        store = f"s3://{garage.bucket}/{reg.rootdirectory.strip('/')}"
        mounts = MountSet(args, work, store)
        if "blob" in sections:
            bench_blob(args, work, mounts, garage, reg, digest, size)
        first = None
        if "nginx" in sections:
            first = bench_nginx(args, work, mounts, garage, reg)
        if "remote" in sections:
            bench_remote(args, work, mounts, garage)
        if "twin" in sections:
            bench_twin(args, work, mounts, first or mounts.start("nginx", ["--allow-other"]), tags)
    except KeyboardInterrupt as e:
        print(f"error: interrupted: {e}", file=sys.stderr)
        return 1
    except (ServerError, GarageError, RegistryError, S3Error, subprocess.SubprocessError, OSError,
            AssertionError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        if isinstance(e, subprocess.CalledProcessError):
            print(e.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        CLEANUP.run()
        shutil.rmtree(work, ignore_errors=True)
        note(f"done in {time.monotonic() - t0:.0f}s")
    print("\n".join(bench.FIGURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
