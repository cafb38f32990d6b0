#!/usr/bin/env python3
"""registryfs benchmarks against the real peers, in one run (scripts/bench.sh).

    python3 scripts/bench/run.py --registryfs target/release/registryfs \
        --example target/release/examples/schema1_generation [--only blob,nginx,gen,scale,disk,changes,verify]

Prints one line per figure: `FIGURE <name>: <ratio> (<ours> vs <peer>) target <t>: met|MISSED`,
preceded by `#` lines saying what was measured. Sections (docs/performance.md):

  blob   a 1 GiB blob read through the mount vs the same file read directly, passthrough
         on and off (--no-passthrough), cold (drop_caches) and warm;
  nginx  wrk (64 connections) GET /v2/<repo>/manifests/latest, old client (schema1) and
         schema2 Accept, served by nginx (config from `registryfs httpd-config nginx`)
         from the mount, from the same bytes as plain files (`registryfs cat`), and by
         Debian's docker-registry 2.8.2 from the same store; mount/plain with both
         nginx loaded at once, sharing one CPU;
  gen    cold schema1 generation: in process (examples/schema1_generation), the first
         `stat` of a tag's schema1 through the mount, the registry's first GET;
  scale  a generated store with 100k repositories (scripts/bench/gen_store.py, on
         /dev/shm): exec-to-answering time of the mount (and of the registry), daemon
         RSS after `find` stats every file of the mount, and that walk's time vs `find`
         over the store itself;
  disk   the same walk with a store of 10k repositories (--disk-repos) on disk
         (--disk-dir): the first walks of the store and of a mount, both after
         drop_caches, and a fresh mount's walk over the cached store;
  changes  how soon a tag move (PUT through registry 2.8.2) shows through a mount
         (content, tag folder mtime; p50/p99) vs the registry's next GET, and the
         daemon's idle CPU at 100k repositories vs the registry's (scripts/bench/changes.py);
  verify `registryfs verify` over a 1 GiB store vs sha256sum over the same blob files,
         one process and one per CPU (scripts/bench/verify.py).

Everything started here binds to 127.0.0.1 and is stopped by PID in a finally block
(also on SIGTERM/SIGINT/SIGHUP and the --timeout alarm); every mount is unmounted.
Standard library only; needs root (drop_caches, mount(2)) and wrk, nginx, docker-registry.
"""

import argparse
import hashlib
import http.client
import os
import re
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
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "oracle"))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "httpd"))

from harness import stop_cleanly_on_signals  # noqa: E402
from registry import SIGNING_KEY_JWK, Registry  # noqa: E402
from servers import Nginx, ServerError, mounted, stop_process, tail  # noqa: E402

from changes import bench_changes  # noqa: E402
from verify import bench_verify  # noqa: E402

MT_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
MT_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
GIB = 1 << 30
FUSE_SUPER_MAGIC = 0x65735546

FIGURES = []
# nginx section: the servers (nginx, the registryfs daemon, the registry) on one vCPU, wrk
# on the other, so that they do not take turns at random on both (runs varied 30%).
SERVER_CPUS = {0}
LOAD_CPUS = {1}


def note(text):
    print("# " + text, flush=True)


def figure(name, ours, peer, unit, ratio, target, met):
    """One result line: the ratio first, then both raw numbers."""
    verdict = "-" if met is None else ("met" if met else "MISSED")
    line = f"FIGURE {name}: {ratio:.2f}x ({ours} vs {peer} {unit}) target {target}: {verdict}"
    FIGURES.append(line)
    print(line, flush=True)


def how_many(n):
    """A count as the figures name it: 100k, 2k, 500."""
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def fmt(x, digits=1):
    return f"{x:,.{digits}f}"


class Cleanup:
    """Processes and mounts to take down, newest first."""

    def __init__(self):
        self.items = []

    def add(self, what, stop):
        self.items.append((what, stop))
        return stop

    def remove(self, stop):
        self.items = [(w, s) for (w, s) in self.items if s != stop]

    def run(self):
        while self.items:
            what, stop = self.items.pop()
            try:
                stop()
            except Exception as e:  # keep cleaning up
                print(f"# cleanup {what}: {e}", file=sys.stderr)


CLEANUP = Cleanup()


def detach(path):
    if mounted(path):
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=10)


class Mount:
    """`registryfs mount` in the foreground; `ready_s` is exec → the mount point answers."""

    def __init__(self, binary, store, mountpoint, args, log_path, env=None):
        self.binary, self.store, self.mountpoint = binary, store, mountpoint
        self.args, self.log_path, self.env = list(args), log_path, env
        self.proc = None
        self.ready_s = None

    def start(self, timeout=30):
        os.makedirs(self.mountpoint, exist_ok=True)
        detach(self.mountpoint)
        parent_dev = os.stat(os.path.dirname(os.path.abspath(self.mountpoint))).st_dev
        log = open(self.log_path, "ab")
        cmd = self.command()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True, env=self.env)
        log.close()
        CLEANUP.add(f"mount {self.mountpoint}", self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                # stat waits for the FUSE handshake: answering means ready.
                if os.stat(self.mountpoint).st_dev != parent_dev:
                    self.ready_s = time.perf_counter() - t0
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise ServerError(f"registryfs mount exited with {self.proc.returncode}:\n" + tail(self.log_path))
            time.sleep(0.0002)
        raise ServerError("registryfs mount: not answering in time:\n" + tail(self.log_path))

    def command(self):
        return [self.binary, "mount", self.store, self.mountpoint, *self.args]

    def rss_kib(self):
        return proc_status(self.proc.pid)

    def stop(self):
        proc, self.proc = self.proc, None
        CLEANUP.remove(self.stop)
        stop_process(proc, signal.SIGTERM, timeout=10)
        detach(self.mountpoint)


class FloorMount(Mount):
    """examples/fuse_floor: the tree of a listing served from memory, no work per
    request: what the kernel and the FUSE protocol alone cost a walk."""

    def command(self):
        return [self.binary, self.mountpoint, self.store]


def process_tree(pid):
    """`pid` and its child processes (nginx's workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def pin(pid, cpus):
    """Pins every thread of `pid` and of its child processes (nginx's workers) to `cpus`;
    threads started later inherit it."""
    for p in process_tree(pid):
        for tid in os.listdir(f"/proc/{p}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fuse_inodes():
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("fuse_inode "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def read_all(path, bufsize=1 << 20):
    """Reads a file to the end with 1 MiB reads; returns (bytes, seconds)."""
    buf = bytearray(bufsize)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            n = os.readv(fd, [view])
            if n == 0:
                break
            total += n
    finally:
        os.close(fd)
    return total, time.perf_counter() - t0


def run(cmd, timeout, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=True, **kw)


# ---------------------------------------------------------------------------
# stores


def blob_store(root):
    """A distribution store with one repository `big` holding one 1 GiB blob, on the
    disk (not tmpfs: cold reads must hit the device). Reused across runs."""
    v2 = os.path.join(root, "docker/registry/v2")
    marker = os.path.join(root, "digest")
    if os.path.exists(marker):
        with open(marker) as f:
            digest = f.read().strip()
        if os.path.exists(blob_data_path(v2, digest)):
            return digest
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    tmp = os.path.join(root, "blob.tmp")
    chunk = os.urandom(16 << 20)
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        for i in range(GIB // len(chunk)):
            # Vary each chunk so nothing deduplicates or compresses.
            piece = i.to_bytes(8, "little") + chunk[8:]
            h.update(piece)
            f.write(piece)
    digest = "sha256:" + h.hexdigest()
    data = blob_data_path(v2, digest)
    os.makedirs(os.path.dirname(data))
    os.rename(tmp, data)
    link = os.path.join(v2, "repositories/big/_layers/sha256", digest.split(":")[1], "link")
    os.makedirs(os.path.dirname(link))
    with open(link, "w") as f:
        f.write(digest)
    with open(marker, "w") as f:
        f.write(digest)
    return digest


def blob_data_path(v2, digest):
    hexd = digest.split(":", 1)[1]
    return os.path.join(v2, "blobs/sha256", hexd[:2], hexd, "data")


def scale_store(path, repos, oci=False):
    """scripts/bench/gen_store.py's store (or OCI layout), reused when complete."""
    marker = os.path.join(path, f".complete-{repos}")
    if os.path.exists(marker):
        return path
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.monotonic()
    run([sys.executable, os.path.join(HERE, "gen_store.py"), path, "--repos", str(repos)] + (["--oci"] if oci else []),
        timeout=300)
    open(marker, "w").close()
    note(f"generated {repos} repositories in {path} in {time.monotonic() - t0:.0f}s")
    return path


# ---------------------------------------------------------------------------
# blob throughput


def bench_blob(args, work):
    store = os.path.join(args.disk_dir, "blob-store")
    digest = blob_store(store)
    direct = blob_data_path(os.path.join(store, "docker/registry/v2"), digest)
    note(f"blob: 1 GiB blob {digest[:19]}… at {direct}")

    # Both mounts at once, so that cold and warm reads of the three ways can be
    # interleaved: the virtual disk's host-side cache makes single cold reads noisy.
    paths = {"direct": direct}
    for mode, flags in (("passthrough", []), ("no-passthrough", ["--no-passthrough"])):
        mp = os.path.join(work, f"mnt-blob-{mode}")
        Mount(args.registryfs, store, mp, ["--signing-key", args.key, *flags],
              os.path.join(work, f"mount-blob-{mode}.log")).start()
        paths[mode] = os.path.join(mp, "big/blobs", digest)
        # The first open checks the digest (hashes the whole file); the verdict is
        # remembered while the file is unchanged, so it is not part of any read below.
        t0 = time.perf_counter()
        os.close(os.open(paths[mode], os.O_RDONLY))
        note(f"blob: {mode}: first open (digest check of 1 GiB) {time.perf_counter() - t0:.2f}s")
    times = {(way, temp): [] for way in paths for temp in ("cold", "warm")}
    ways = list(paths.items())
    for r in range(args.blob_rounds):
        # Each round starts with another way, so no way is always first after a drop.
        for way, path in ways[r % len(ways):] + ways[:r % len(ways)]:
            drop_caches()
            size, secs = read_all(path)
            assert size == GIB, (path, size)
            times[(way, "cold")].append(secs)
    for way, path in paths.items():
        read_all(path)  # into the page cache
    for _ in range(args.blob_rounds):
        for way, path in paths.items():
            size, secs = read_all(path)
            assert size == GIB, (path, size)
            times[(way, "warm")].append(secs)
    CLEANUP.run()  # both mounts

    def gbps(way, temp):
        return GIB / statistics.median(times[(way, temp)]) / 1e9

    note(f"blob: GB/s per round (1 MiB reads, {args.blob_rounds} rounds, medians below): " + "; ".join(
        f"{way} {temp} " + " ".join(f"{GIB / s / 1e9:.2f}" for s in times[(way, temp)])
        for temp in ("cold", "warm") for way in paths))
    for mode in ("passthrough", "no-passthrough"):
        for temp in ("cold", "warm"):
            ours, peer = gbps(mode, temp), gbps("direct", temp)
            ratio = ours / peer
            target = ">= 0.95x" if mode == "passthrough" else "(none)"
            met = ratio >= 0.95 if mode == "passthrough" else None
            figure(f"blob-read {mode} {temp}", fmt(ours, 2), fmt(peer, 2) + " direct", "GB/s", ratio, target, met)


# ---------------------------------------------------------------------------
# nginx vs plain files vs registry 2.8


WRK_LUA = r"""
local n = tonumber(os.getenv("RFS_REPOS"))
local accept = os.getenv("RFS_ACCEPT") or ""
local method = os.getenv("RFS_METHOD") or "GET"
-- One tag revision per line: If-None-Match for the conditional rounds.
local revisions = {}
local inm = os.getenv("RFS_INM") or ""
if inm ~= "" then
    for line in io.lines(inm) do revisions[#revisions + 1] = line end
end
local i = 0
request = function()
    i = (i + 1) % n
    local headers = {}
    if accept ~= "" then headers["Accept"] = accept end
    if inm ~= "" then headers["If-None-Match"] = '"' .. revisions[i + 1] .. '"' end
    return wrk.format(method, string.format("/v2/bench/r%06d/manifests/latest", i), headers)
end
"""


def wrk(port, accept, repos, seconds, work, allow_errors=False, method="GET", inm=""):
    """Requests/s of GETs (or HEADs) by tag, round robin over the repositories; `inm`:
    a file of the tags' revisions, sent as If-None-Match."""
    script = os.path.join(work, f"wrk-{port}.lua")  # two may run at once
    with open(script, "w") as f:
        f.write(WRK_LUA)
    env = dict(os.environ, RFS_REPOS=str(repos), RFS_ACCEPT=accept, RFS_METHOD=method, RFS_INM=inm)
    p = run(["wrk", "-t2", "-c64", f"-d{seconds}s", "--timeout", "5s", "-s", script, f"http://127.0.0.1:{port}/"],
            timeout=seconds + 30, env=env, preexec_fn=lambda: os.sched_setaffinity(0, LOAD_CPUS))
    out = p.stdout.decode()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise ServerError("wrk: no Requests/sec in:\n" + out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if (bad or errors) and not allow_errors:
        raise ServerError(f"wrk against port {port}: failures:\n{out}")
    if bad or errors:
        note(f"wrk against port {port}: {bad.group(0) if bad else ''} {errors.group(0) if errors else ''}")
    return float(m.group(1))


def ab_head(port, accept, seconds):
    """Requests/s of HEADs by tag (wrk's parser waits for a HEAD answer's body, ab's
    does not): one tag, 64 keep-alive connections, ab on the load CPU."""
    headers = ["-H", f"Accept: {accept}"] if accept else []
    p = run(["ab", "-i", "-k", "-q", "-c", "64", "-t", str(seconds), "-n", "100000000", *headers,
             f"http://127.0.0.1:{port}/v2/bench/r000000/manifests/latest"],
            timeout=seconds + 30, preexec_fn=lambda: os.sched_setaffinity(0, LOAD_CPUS))
    out = p.stdout.decode()
    m = re.search(r"Requests per second:\s+([\d.]+)", out)
    failed = re.search(r"(Failed requests|Non-2xx responses):\s+([1-9]\d*)", out)
    if not m or failed:
        raise ServerError(f"ab against port {port}:\n" + out)
    return float(m.group(1))


def load(port, accept, repos, seconds, work, allow_errors=False, method="GET", inm=""):
    """One measurement: wrk, or ab for HEADs."""
    if method == "HEAD":
        return ab_head(port, accept, seconds)
    return wrk(port, accept, repos, seconds, work, allow_errors=allow_errors, method=method, inm=inm)


def warm_sequentially(port, accept, repos):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(repos):
            c.request("GET", f"/v2/bench/r{i:06d}/manifests/latest", headers={"Accept": accept} if accept else {})
            c.getresponse().read()
    finally:
        c.close()


def check_same(ports, repos, accept, method="GET", revisions=None):
    """The servers answer the benchmark's requests with the same status, digest and
    body (the registry: the same status and digest), 200 or, with `revisions` as
    If-None-Match, 304."""
    want = 304 if revisions else 200
    for i in range(0, repos, max(1, repos // 20)):
        path = f"/v2/bench/r{i:06d}/manifests/latest"
        headers = {"Accept": accept} if accept else {}
        if revisions:
            headers["If-None-Match"] = f'"{revisions[i]}"'
        answers = []
        for port in ports:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                c.request(method, path, headers=headers)
                r = c.getresponse()
                answers.append((r.status, r.getheader("Docker-Content-Digest"), r.read()))
            finally:
                c.close()
        if any(a[:2] != answers[0][:2] for a in answers) or answers[0][0] != want \
                or answers[0][2] != answers[1][2]:
            raise ServerError(f"{method} {path} ({accept or 'no Accept'}): " + " vs ".join(str(a[:2]) for a in answers))


def materialize(binary, key, store, dest, repos):
    """The files nginx reads for the benchmark's requests, as plain files made by
    `registryfs cat` (the same bytes the mount serves)."""
    t0 = time.monotonic()
    shutil.rmtree(dest, ignore_errors=True)
    for i in range(repos):
        repo = f"bench/r{i:06d}"
        tag_dir = f"{repo}/manifests/latest"
        listing = run([binary, "--signing-key", key, "ls", store, tag_dir], timeout=30).stdout.decode().split()
        os.makedirs(os.path.join(dest, tag_dir, "digest"))
        for name in listing:
            data = run([binary, "--signing-key", key, "cat", store, f"{tag_dir}/{name}"], timeout=30).stdout
            with open(os.path.join(dest, tag_dir, name), "wb") as f:
                f.write(data)
        # The digest links and their targets, and the digest folders stored kinds are
        # served from: the plain tree gets the same header config as the mount.
        for name in listing + ["revision"]:
            line = run([binary, "--signing-key", key, "ls", store, f"{tag_dir}/digest/{name}"],
                       timeout=30).stdout.decode().strip()
            target = line.split(" -> ", 1)[1]
            digest = target.split("@", 1)[1]
            os.symlink(target, os.path.join(dest, tag_dir, "digest", name))
            with open(os.path.join(dest, tag_dir, "digest", target), "w") as f:
                f.write(digest)
            if name == "revision":
                # If-None-Match by existence (the namespace's `revision=<digest>`).
                open(os.path.join(dest, tag_dir, "digest", f"revision={digest}"), "w").close()
            if name not in ("schema1", "revision"):
                by_digest = os.path.join(dest, repo, "manifests", digest)
                os.makedirs(by_digest, exist_ok=True)
                shutil.copyfile(os.path.join(dest, tag_dir, name), os.path.join(by_digest, name))
    os.chmod(dest, 0o755)
    note(f"nginx: materialized {repos} tags with `registryfs cat` into {dest} in {time.monotonic() - t0:.1f}s")


def start_nginx(binary, prefix, root):
    n = Nginx(binary, prefix, root, njs=True)
    CLEANUP.add(f"nginx {prefix}", n.stop)
    return n.start()


def start_registry(work, store):
    os.makedirs(os.path.join(work, "registry"), exist_ok=True)
    reg = Registry(os.path.join(work, "registry"))
    reg.root = store  # serve the benchmark store (read only: GETs of existing tags)
    CLEANUP.add("registry", reg.stop)
    t0 = time.perf_counter()
    reg.start()
    return reg, time.perf_counter() - t0


def bench_nginx(args, work, store):
    repos = args.nginx_repos
    plain = os.path.join(args.shm_dir, "plain")
    materialize(args.registryfs, args.key, store, plain, repos)
    mp = os.path.join(work, "mnt-nginx")
    m = Mount(args.registryfs, store, mp, ["--signing-key", args.key, "--allow-other"],
              os.path.join(work, "mount-nginx.log")).start()
    try:
        ng_mount = start_nginx(args.registryfs, os.path.join(work, "nginx-mount"), mp)
        ng_plain = start_nginx(args.registryfs, os.path.join(work, "nginx-plain"), plain)
        reg, _ = start_registry(work, store)
        if len(os.sched_getaffinity(0)) >= 2:
            for pid in (m.proc.pid, ng_mount.proc.pid, ng_plain.proc.pid, reg.proc.pid):
                pin(pid, SERVER_CPUS)
            note("nginx: servers (nginx, registryfs daemon, registry) pinned to CPU 0, wrk to CPU 1")
        note(f"nginx: 2 workers each, njs, config from `registryfs httpd-config nginx --full`; "
             f"mount :{ng_mount.port}, plain :{ng_plain.port}, registry :{reg.port}; "
             f"{repos} repositories round robin; wrk -t2 -c64 -d{args.seconds}s")
        results = {}
        ports = {"mount": ng_mount.port, "plain": ng_plain.port, "registry": reg.port}
        server_pids = {"mount": [m.proc.pid, *process_tree(ng_mount.proc.pid)],
                       "plain": process_tree(ng_plain.proc.pid)}

        def server_cpu_seconds(name):
            return sum(cpu_seconds(pid) for pid in server_pids[name])

        revisions = [os.readlink(os.path.join(plain, f"bench/r{i:06d}/manifests/latest/digest/revision"))
                     .split("@", 1)[1] for i in range(repos)]
        inm_file = os.path.join(work, "revisions.txt")
        with open(inm_file, "w") as f:
            f.write("".join(f"{r}\n" for r in revisions))
        rounds = {
            # label: (Accept, method, If-None-Match file)
            "schema1": ("", "GET", ""),
            "schema2": (MT_SCHEMA2, "GET", ""),
            "schema2 HEAD (ab, one tag)": (MT_SCHEMA2, "HEAD", ""),
            "conditional GET (304)": (MT_SCHEMA2, "GET", inm_file),
        }
        for label, (accept, method, inm) in rounds.items():
            check_same(list(ports.values()), repos, accept, method, revisions if inm else None)
            # One GET per tag first: the registry's conversion writes the empty layer
            # into the repository, which concurrent first GETs race on.
            warm_sequentially(reg.port, accept, repos)
            for name, port in ports.items():
                load(port, accept, repos, 1, work, allow_errors=name == "registry", method=method, inm=inm)  # warm up
            # Alone, once each: the absolute figures and the registry's ratio.
            alone = {}
            for name, port in ports.items():
                cpu0 = cpu_seconds(m.proc.pid)
                alone[name] = load(port, accept, repos, args.seconds, work,
                                   allow_errors=name == "registry", method=method, inm=inm)
                if name == "mount":
                    daemon = (cpu_seconds(m.proc.pid) - cpu0) / args.seconds
            # mount/plain: both at once, sharing the servers' CPU (the scheduler gives
            # each nginx's two workers the same time), so the host's speed, which swings
            # by ±25% within seconds here, changes both alike; one after the other, the
            # rounds' ratios ranged 0.72-1.17. The CPU time each server (its workers, and
            # for the mount the daemon) spent per request is printed as a cross-check.
            costs, pairs = [], []
            for _ in range(args.nginx_rounds):
                cpu0 = {name: server_cpu_seconds(name) for name in ("mount", "plain")}
                got = {}
                loads = [threading.Thread(target=lambda name=name: got.__setitem__(
                    name, load(ports[name], accept, repos, args.seconds, work, method=method, inm=inm)))
                    for name in ("mount", "plain")]
                for t in loads:
                    t.start()
                for t in loads:
                    t.join()
                if len(got) != 2:
                    raise ServerError(f"nginx {label}: a load generator failed (see above)")
                us = {name: (server_cpu_seconds(name) - cpu0[name]) * 1e6 / (got[name] * args.seconds)
                      for name in got}
                costs.append(us["plain"] / us["mount"])
                pairs.append((got["mount"], got["plain"]))
            for name in ports:
                results[(label, name)] = alone[name]
            results[(label, "ratio")] = statistics.median(a / b for a, b in pairs)
            note(f"nginx: {label} req/s alone: " + ", ".join(f"{name} {fmt(r, 0)}" for name, r in alone.items())
                 + f"; registryfs daemon CPU {daemon * 100:.0f}% of a core")
            note(f"nginx: {label} req/s side by side (mount/plain) per round: "
                 + " ".join(f"{fmt(a, 0)}/{fmt(b, 0)}={a / b:.3f}" for a, b in pairs)
                 + "; CPU per request, plain/mount: " + " ".join(f"{c:.3f}" for c in costs)
                 + f" (median {statistics.median(costs):.3f})")
        for label in rounds:
            mnt, pl, rg = results[(label, "mount")], results[(label, "plain")], results[(label, "registry")]
            ratio = results[(label, "ratio")]
            # The digest headers on both trees (issue 10).
            figure(f"nginx {label}-by-tag mount/plain, side by side, median of {args.nginx_rounds} rounds",
                   fmt(mnt, 0), fmt(pl, 0) + " plain alone", "req/s", ratio, ">= 0.95x", ratio >= 0.95)
            target = ">= 10x" if label == "schema1" else "(none)"
            met = mnt / rg >= 10 if label == "schema1" else None
            figure(f"nginx {label}-by-tag mount/registry-2.8", fmt(mnt, 0), fmt(rg, 0) + " registry", "req/s",
                   mnt / rg, target, met)
    finally:
        CLEANUP.run()  # registry, both nginx, the mount


# ---------------------------------------------------------------------------
# cold schema1 generation


def bench_gen(args, work, store):
    colds = []
    run([args.example, "200"], timeout=60, env=dict(os.environ, TMPDIR=args.shm_dir))  # warm up
    for _ in range(3):
        out = run([args.example, str(args.gen_manifests)], timeout=300,
                  env=dict(os.environ, TMPDIR=args.shm_dir)).stdout.decode()
        vals = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
        note("gen: examples/schema1_generation " + ", ".join(f"{k}={v}" for k, v in vals.items()))
        # The whole generation (lookup + first read, which signs); a lookup alone knows
        # the size without signing and is what the first stat below pays.
        colds.append(float(vals["cold_generation_us"]))
    cold = min(colds)  # best of three: outside noise only slows down

    # The registry: first GET of schema1 (converts and signs) vs of schema2 (stored
    # bytes), for tags it has never served, one keep-alive connection.
    reg, _ = start_registry(work, store)
    try:
        lat = {"schema1": [], "schema2": []}
        conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)
        first = 20000
        for i in range(first, first + args.gen_samples):
            for kind, accept in (("schema2", MT_SCHEMA2), ("schema1", None)):
                t0 = time.perf_counter()
                conn.request("GET", f"/v2/bench/r{i:06d}/manifests/latest", headers={"Accept": accept} if accept else {})
                r = conn.getresponse()
                r.read()
                lat[kind].append(time.perf_counter() - t0)
                assert r.status == 200 and r.getheader("Content-Type") == (accept or MT_SCHEMA1), (r.status, kind)
        conn.close()
    finally:
        reg.stop()
    reg_s1 = statistics.median(lat["schema1"]) * 1e6
    reg_s2 = statistics.median(lat["schema2"]) * 1e6
    reg_conv = reg_s1 - reg_s2
    note(f"gen: registry 2.8.2 GET median: schema1 {fmt(reg_s1)} us, schema2 {fmt(reg_s2)} us "
         f"(conversion = the difference, {fmt(reg_conv)} us)")
    figure("schema1 cold generation (in process) vs registry conversion", fmt(cold), fmt(reg_conv) + " registry",
           "us", cold / reg_conv, "<= 100 us", cold <= 100)

    # The first stat of a schema1 file through the mount (its folder already looked up).
    mp = os.path.join(work, "mnt-gen")
    m = Mount(args.registryfs, store, mp, ["--signing-key", args.key], os.path.join(work, "mount-gen.log")).start()
    try:
        first_stat = []
        for i in range(30000, 30000 + args.gen_samples):
            d = os.path.join(mp, f"bench/r{i:06d}/manifests/latest")
            os.stat(d)
            t0 = time.perf_counter()
            os.stat(os.path.join(d, "schema1"))
            first_stat.append(time.perf_counter() - t0)
        again = []
        for i in range(30000, 30000 + args.gen_samples):
            t0 = time.perf_counter()
            os.stat(os.path.join(mp, f"bench/r{i:06d}/manifests/latest/schema1"))
            again.append(time.perf_counter() - t0)
    finally:
        m.stop()
    fs1 = statistics.median(first_stat) * 1e6
    note(f"gen: mount: first stat of schema1 median {fmt(fs1)} us (p90 "
         f"{fmt(sorted(first_stat)[len(first_stat) * 9 // 10] * 1e6)} us); cached stat {fmt(statistics.median(again) * 1e6)} us")
    figure("schema1 first stat through the mount vs registry first GET", fmt(fs1), fmt(reg_s1) + " registry", "us",
           fs1 / reg_s1, "<= 150 us", fs1 <= 150)


# ---------------------------------------------------------------------------
# 100k repositories: mount-ready time, RSS, walk


def find_walk(args, root, listing=os.devnull):
    """Issue 12's `find ROOT -printf '%s %y\\n'`, which also writes each entry's path,
    type and size to `listing` (fuse_floor's input; every walk does, alike). Returns
    seconds, entries, files."""
    t0 = time.perf_counter()
    p = run(["find", root, "-printf", "%s %y\n", "-fprintf", listing, "%P\t%y\t%s\n"],
            timeout=args.walk_timeout)
    secs = time.perf_counter() - t0
    lines = p.stdout.decode().splitlines()
    return secs, len(lines), sum(1 for ln in lines if ln.endswith("f"))


def bench_scale(args, work, store):
    mp = os.path.join(work, "mnt-scale")
    ready = []
    for i in range(args.ready_runs):
        m = Mount(args.registryfs, store, mp, ["--signing-key", args.key], os.path.join(work, "mount-scale.log")).start()
        ready.append(m.ready_s)
        if i < args.ready_runs - 1:
            m.stop()
    try:
        ready_ms = statistics.median(ready) * 1e3
        reg, reg_ready = start_registry(work, store)
        reg.stop()
        reg_ready_ms = reg_ready * 1e3
        note(f"scale: mount ready (exec → stat of the mount point answers), {len(ready)} runs: "
             + ", ".join(f"{r * 1e3:.1f}" for r in ready) + " ms")
        figure(f"mount ready, {how_many(args.repos)} repositories, vs registry 2.8 ready", fmt(ready_ms), fmt(reg_ready_ms) + " registry",
               "ms", ready_ms / reg_ready_ms, "<= 100 ms", ready_ms <= 100)
        rss0 = m.rss_kib()["VmRSS"]

        plain_s, plain_n, _ = find_walk(args, os.path.join(store, "docker/registry/v2"))
        listing = os.path.join(work, "scale-walk.list")
        mount_s, mount_n, mount_files = find_walk(args, mp, listing)
        st = m.rss_kib()
        inodes = fuse_inodes()
        note(f"scale: find -printf '%s' over the mount: {mount_n} entries ({mount_files} files, each stat'ed: "
             f"every tag's schema1 generated) in {mount_s:.1f}s; over the store: {plain_n} entries in {plain_s:.1f}s")
        note(f"scale: daemon RSS {rss0 / 1024:.1f} MiB after mounting, {st['VmRSS'] / 1024:.1f} MiB after the walk "
             f"(peak {st['VmHWM'] / 1024:.1f} MiB); kernel fuse inodes {inodes}")
        figure(f"find walk, {how_many(args.repos)} repositories, mount vs store", f"{mount_s:.1f}", f"{plain_s:.1f} store", "s",
               mount_s / plain_s, "<= 2x", mount_s / plain_s <= 2)
        rss = st["VmRSS"] / 1024
        figure("daemon RSS after the walk vs target", f"{rss:.1f}", "64", "MiB", rss / 64, "<= 64 MiB", rss <= 64)
        # A poller's next walk: the kernel keeps what the first walk listed (folder
        # listings and attributes, for the tag lifetime), as the store walk finds its
        # folders in the dentry cache. Names older than the lifetime are asked again.
        again_s, again_n, _ = find_walk(args, mp)
        note(f"scale: the same find again at once over the same mount: {again_n} entries in {again_s:.1f}s "
             f"(names listed more than the tag lifetime before are looked up again)")
        figure(f"find walk repeated on the same mount, {how_many(args.repos)} repositories, mount vs store", f"{again_s:.1f}",
               f"{plain_s:.1f} store", "s", again_s / plain_s, "(none)", None)
    finally:
        m.stop()
    floor_s, floor_n = floor_walk(args, work, "floor", listing)
    note(f"scale: the same tree from examples/fuse_floor (read from the mount's walk, answered from memory, no work "
         f"per request): {floor_n} entries in {floor_s:.1f}s, {floor_s / plain_s:.2f}x the store walk")
    figure(f"find walk, {how_many(args.repos)} repositories, mount vs the same tree from a FUSE daemon doing nothing", f"{mount_s:.1f}",
           f"{floor_s:.1f} fuse_floor", "s", mount_s / floor_s, "(none)", None)
    bench_oci_walk(args, work)


def floor_walk(args, work, name, listing):
    """`find_walk` over examples/fuse_floor serving the tree in `listing`: seconds, entries."""
    floor = FloorMount(os.path.join(os.path.dirname(args.example), "fuse_floor"), listing,
                       os.path.join(work, f"mnt-{name}"), [], os.path.join(work, f"{name}.log")).start(timeout=120)
    try:
        secs, entries, _ = find_walk(args, floor.mountpoint)
    finally:
        floor.stop()
    return secs, entries


def bench_oci_walk(args, work):
    """The same walk over an OCI layout of 10k repositories. The layout's own folder
    holds five files, so its peer is the walk over a distribution store of the same
    10k repositories (the same namespace, from links instead of index.json)."""
    repos = args.oci_repos
    layout = scale_store(os.path.join(args.shm_dir, f"oci-{repos}"), repos, oci=True)
    dist = scale_store(os.path.join(args.shm_dir, f"store-{repos}"), repos)
    mp = os.path.join(work, "mnt-oci")
    m = Mount(args.registryfs, layout, mp, ["--signing-key", args.key, "--oci-repo", "bench/default"],
              os.path.join(work, "mount-oci.log")).start()
    try:
        find_walk(args, os.path.join(dist, "docker/registry/v2"))  # warm the page cache
        plain_s, plain_n, _ = find_walk(args, os.path.join(dist, "docker/registry/v2"))
        listing = os.path.join(work, "oci-walk.list")
        mount_s, mount_n, mount_files = find_walk(args, mp, listing)
        again_s, _, _ = find_walk(args, mp)
        note(f"scale: OCI layout of {repos} repositories: find over the mount {mount_n} entries ({mount_files} files) "
             f"in {mount_s:.2f}s, again at once {again_s:.2f}s; over the distribution store of the same repositories "
             f"{plain_n} entries in {plain_s:.2f}s")
        figure(f"find walk, OCI layout of {how_many(repos)} repositories, mount vs distribution store walk",
               f"{mount_s:.2f}", f"{plain_s:.2f} store", "s", mount_s / plain_s, "<= 2x", mount_s / plain_s <= 2)
        figure(f"find walk repeated on the same mount, OCI layout of {how_many(repos)} repositories, mount vs store",
               f"{again_s:.2f}", f"{plain_s:.2f} store", "s", again_s / plain_s, "(none)", None)
    finally:
        m.stop()
    floor_s, _ = floor_walk(args, work, "oci-floor", listing)
    note(f"scale: the OCI mount's tree from examples/fuse_floor: {floor_s:.2f}s, {floor_s / plain_s:.2f}x the store walk")
    figure(f"find walk, OCI layout of {how_many(repos)} repositories, mount vs the same tree from a FUSE daemon doing "
           f"nothing", f"{mount_s:.2f}", f"{floor_s:.2f} fuse_floor", "s", mount_s / floor_s, "(none)", None)


def bench_disk_walk(args, work):
    """The walk with the store on disk (--disk-dir) instead of tmpfs. A tmpfs store's
    folders live in the dentry cache, so the scale section's store walk never meets
    what a mount's first walk meets: names the kernel has not seen. Here both first
    walks start after drop_caches, so each makes its names (the store's from the disk,
    the mount's from READDIRPLUS answers); then a fresh mount over the cached store
    against the cached store walk."""
    repos = args.disk_repos
    store = scale_store(os.path.join(args.disk_dir, f"store-{repos}"), repos)
    v2 = os.path.join(store, "docker/registry/v2")
    mp = os.path.join(work, "mnt-disk")

    def mounted_walk():
        m = Mount(args.registryfs, store, mp, ["--signing-key", args.key], os.path.join(work, "mount-disk.log")).start()
        try:
            return find_walk(args, mp)
        finally:
            m.stop()

    drop_caches()
    cold_store_s, store_n, _ = find_walk(args, v2)
    warm_store = [find_walk(args, v2)[0]]
    drop_caches()
    cold_mount_s, mount_n, _ = mounted_walk()
    warm_store.append(find_walk(args, v2)[0])  # everything the store walk stats is cached again
    warm_mount_s, _, _ = mounted_walk()
    warm_store.append(find_walk(args, v2)[0])
    # The quickest: the VM is slow for a while after drop_caches (its memory is faulted
    # in again), and the later cached walks are the steady ones.
    warm_store_s = min(warm_store)
    note(f"disk: store of {repos} repositories in {store}: find over the store {store_n} entries, "
         f"after drop_caches {cold_store_s:.2f}s, cached {', '.join(f'{t:.2f}' for t in warm_store)}s; "
         f"a fresh mount's find {mount_n} entries, after drop_caches {cold_mount_s:.2f}s, store cached {warm_mount_s:.2f}s")
    figure(f"first find walk, {how_many(repos)} repositories on disk after drop_caches, mount vs store",
           f"{cold_mount_s:.2f}", f"{cold_store_s:.2f} store", "s", cold_mount_s / cold_store_s, "(none)", None)
    figure(f"first find walk of a mount, {how_many(repos)} repositories on disk in the page cache, mount vs store",
           f"{warm_mount_s:.2f}", f"{warm_store_s:.2f} store", "s", warm_mount_s / warm_store_s, "(none)", None)


# ---------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registryfs", required=True)
    ap.add_argument("--example", required=True, help="target/release/examples/schema1_generation")
    ap.add_argument("--only", default="blob,nginx,gen,scale,disk,changes,verify")
    ap.add_argument("--repos", type=int, default=100000, help="repositories in the generated store")
    ap.add_argument("--nginx-repos", type=int, default=200)
    ap.add_argument("--oci-repos", type=int, default=10000, help="repositories in the OCI layout walked")
    ap.add_argument("--disk-repos", type=int, default=10000, help="repositories in the store walked on disk")
    ap.add_argument("--seconds", type=int, default=3, help="wrk duration per run")
    ap.add_argument("--nginx-rounds", type=int, default=7, help="side-by-side rounds")
    ap.add_argument("--gen-manifests", type=int, default=2000)
    ap.add_argument("--gen-samples", type=int, default=500)
    ap.add_argument("--blob-rounds", type=int, default=5)
    ap.add_argument("--ready-runs", type=int, default=5)
    ap.add_argument("--walk-timeout", type=int, default=420)
    ap.add_argument("--shm-dir", default="/dev/shm/registryfs-bench")
    ap.add_argument("--disk-dir", default=os.path.join(REPO_ROOT, "target", "bench"))
    ap.add_argument("--timeout", type=int, default=900, help="abort (and clean up) after this many seconds")
    args = ap.parse_args(argv)
    args.registryfs = os.path.abspath(args.registryfs)
    args.example = os.path.abspath(args.example)
    sections = args.only.split(",")
    if os.geteuid() != 0:
        print("error: run as root (drop_caches, mount(2))", file=sys.stderr)
        return 2
    for tool in ("wrk", "ab", "nginx", "find"):
        if not shutil.which(tool):
            print(f"error: {tool} not found (scripts/install-deps.sh)", file=sys.stderr)
            return 2

    stop_cleanly_on_signals(args.timeout)

    os.makedirs(args.shm_dir, exist_ok=True)
    os.makedirs(args.disk_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="registryfs-bench-")
    os.chmod(work, 0o711)  # nginx workers (nobody) reach the mounts below
    args.key = os.path.join(work, "signing-key.json")
    with open(args.key, "w") as f:
        f.write(SIGNING_KEY_JWK)
    os.chmod(args.key, 0o600)
    t0 = time.monotonic()
    note(f"machine: {os.cpu_count()} CPUs, {os.uname().release}; registryfs {args.registryfs}")
    try:
        store = None
        if {"nginx", "gen", "scale", "changes"} & set(sections):
            store = scale_store(os.path.join(args.shm_dir, f"store-{args.repos}"), args.repos)
        # blob last: dropping the caches slows the whole VM down for a while after
        # (its memory is given back to the host and faulted in again).
        if "gen" in sections:
            bench_gen(args, work, store)
        if "nginx" in sections:
            bench_nginx(args, work, store)
        if "scale" in sections:
            bench_scale(args, work, store)
        if "changes" in sections:
            bench_changes(args, work, store, sys.modules[__name__])
        if "verify" in sections:
            bench_verify(args, work, sys.modules[__name__])
        if "disk" in sections:
            bench_disk_walk(args, work)
        if "blob" in sections:
            bench_blob(args, work)
    except KeyboardInterrupt as e:
        print(f"error: interrupted: {e}", file=sys.stderr)
        return 1
    except (ServerError, subprocess.SubprocessError, OSError, AssertionError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        if isinstance(e, subprocess.CalledProcessError):
            print(e.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        CLEANUP.run()
        shutil.rmtree(work, ignore_errors=True)
        note(f"done in {time.monotonic() - t0:.0f}s")
    print("\n".join(FIGURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
