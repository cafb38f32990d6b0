#!/usr/bin/env python3
"""A mount of an S3 store while its server fails: real Garage, real FUSE mount.

    python3 tests/s3/faults.py --registryfs target/debug/registryfs --garage PATH

What it does:
  1. starts a single-node Garage (garage.py) and docker-registry 2.8.2 on it
     (s3registry.py), pushes one small image with a few layers, stops the registry;
  2. puts a fault-injecting proxy (faultproxy.py, 127.0.0.1) in front of Garage and
     mounts `s3://BUCKET/registry` through it (`--tag-ttl 0`, `--s3-timeout 2`), so
     every tag lookup asks the bucket;
  3. for each fault — Garage stopped, the proxy answering 503 SlowDown, 403
     AccessDenied, or stalling longer than the timeout — reads a tag's manifest and a
     blob not read before through the mount: each read must fail with EIO (never
     ENOENT, never bytes) within a bound, and the mount's log must have a line naming
     the bucket, the key and the reason; then the fault ends (Garage started again on
     the same data, the proxy passing requests) and the same reads must give the
     right bytes within a few seconds, with no restart of the mount;
  4. a slow server within the timeout still serves;
  5. a blob whose data object in the bucket is overwritten with other bytes of the
     same length: reads fail with EIO, the cache folder keeps nothing for it, and
     once the right bytes are back it is served;
  6. SIGTERM unmounts (the S3 client's threads must not take it).
Prints "ok ..."/"FAIL ..." and "s3-faults: N passed, M failed". Exits 77 (skip) when
Garage is not installed. Everything started here is stopped by PID, and the mount is
unmounted, also on failure and signals.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "oracle"))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "httpd"))

from faultproxy import FaultProxy  # noqa: E402
from garage import Garage, GarageError  # noqa: E402
from harness import SetupError, finish, stop_cleanly_on_signals, stop_process  # noqa: E402
from registry import RegistryError  # noqa: E402
from run import Report, resolve_binary  # noqa: E402
from s3client import S3Error  # noqa: E402
from s3registry import S3Registry  # noqa: E402
from servers import Mount, ServerError, mounted  # noqa: E402
from store_oracle import installed_garage  # noqa: E402

SKIP = 77
REPO = "faults/app"
TAG = "v1"
TIMEOUT = 2.0  # --s3-timeout
# How long a failing read may take: one request gives up within about 1.5 timeouts
# (client.rs), and a lookup makes a few requests.
FAIL_BOUND = 6 * TIMEOUT
RECOVER_BOUND = 15.0
LAYERS = 8


def push_image(reg, tag=TAG, n_layers=LAYERS):
    """One schema2 image with `n_layers` random layers of 128 KiB to 1 MiB; the layers'
    digests and bytes, and the manifest's bytes."""
    layers = [os.urandom((i + 1) * 128 * 1024) for i in range(n_layers)]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(b).hexdigest() for b in layers]},
        "history": [{"created_by": f"ADD {i} /"} for i in range(n_layers)],
    }).encode()
    digests = [reg.push_blob(REPO, b) for b in layers]
    config_digest = reg.push_blob(REPO, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(b), "digest": d} for b, d in zip(layers, digests)],
    }, indent=3).encode()
    reg.push_manifest(REPO, tag, "application/vnd.docker.distribution.manifest.v2+json", manifest)
    return list(zip(digests, layers)), manifest


def read(path, limit=60):
    """(bytes or None, error text, seconds) of reading `path` in a child process, so a
    hung FUSE request cannot hang the test."""
    started = time.monotonic()
    try:
        p = subprocess.run(["cat", path], capture_output=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return None, f"no answer in {limit}s", time.monotonic() - started
    took = time.monotonic() - started
    if p.returncode != 0:
        return None, p.stderr.decode(errors="replace").strip(), took
    return p.stdout, "", took


class Log:
    """The mount's log from a mark on."""

    def __init__(self, path):
        self.path = path
        self.offset = 0

    def mark(self):
        self.offset = os.path.getsize(self.path)

    def since(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")


class Faults:
    def __init__(self, report, mp, log, bucket, blobs, manifest):
        self.report, self.mp, self.log, self.bucket = report, mp, log, bucket
        self.blobs = list(blobs)  # not read yet: each fault takes one
        self.manifest = manifest

    def manifest_path(self):
        return os.path.join(self.mp, REPO, "manifests", TAG, "schema2")

    def blob_path(self, digest):
        return os.path.join(self.mp, REPO, "blobs", digest)

    def during(self, name, reasons, proxy=None):
        """Reads during a fault: EIO within the bound, a log line naming bucket, key
        and one of `reasons`. With `proxy`, its faults hit only the tag's link, then
        only the download of the blob's data (its path looked up before the fault).
        Returns the blob it tried (for `after`)."""
        digest, data = self.blobs.pop(0)
        hexd = digest.split(":", 1)[1]
        tag_link = (lambda _method, path: f"/_manifests/tags/{TAG}/" in path)
        blob_get = (lambda method, path: method == "GET" and path.endswith(f"/{hexd}/data"))
        if proxy:
            proxy.only = (lambda _method, _path: False)
            os.stat(self.blob_path(digest))
        self.log.mark()
        for what, path, only in (("tag manifest", self.manifest_path(), tag_link),
                                 ("blob", self.blob_path(digest), blob_get)):
            if proxy:
                proxy.only = only
            got, err, took = read(path)
            problems = []
            if got is not None:
                problems.append(f"served {len(got)} bytes")
            elif "Input/output error" not in err:
                problems.append(f"not EIO: {err!r}")
            if took > FAIL_BOUND:
                problems.append(f"took {took:.1f}s (bound {FAIL_BOUND}s)")
            self.report.check(name, f"{what} read fails with EIO in {took:.1f}s", problems)
        if proxy:
            proxy.only = None
        lines = [line for line in self.log.since().splitlines() if f"s3://{self.bucket}/" in line]
        named = [line for line in lines if any(r in line for r in reasons)]
        self.report.check(name, f"log names bucket, key and reason ({named[0][-160:] if named else lines[-1:]})",
                          [] if named else [f"no line with s3://{self.bucket}/ and {reasons}: {self.log.since()[-600:]!r}"])
        return digest, data

    def after(self, name, blob):
        """Once the fault is gone, the same reads give the right bytes, soon."""
        digest, data = blob
        started = time.monotonic()
        deadline = started + RECOVER_BOUND
        for what, path, want in (("tag manifest", self.manifest_path(), self.manifest),
                                 ("blob", self.blob_path(digest), data)):
            while True:
                got, err, _ = read(path)
                if got == want or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            problems = [] if got == want else [f"still {err or f'{len(got)} wrong bytes'!r}"]
            self.report.check(name, f"{what} served again after {time.monotonic() - started:.1f}s", problems)


def check_corrupt_blob(report, faults, client, key_prefix, cache_dir):
    """Other bytes of the same length in a blob's data object: EIO, never cached."""
    digest, data = faults.blobs.pop(0)
    hexd = digest.split(":", 1)[1]
    key = f"{key_prefix}blobs/sha256/{hexd[:2]}/{hexd}/data"
    bad = bytes([data[0] ^ 0xFF]) + data[1:]
    client.put_object(faults.bucket, key, bad)
    faults.log.mark()
    cached = os.path.join(cache_dir, "blobs", "sha256", hexd)
    for attempt in ("first", "second"):
        got, err, _ = read(faults.blob_path(digest))
        problems = []
        if got is not None:
            problems.append(f"served {len(got)} bytes ({'the right ones' if got == data else 'WRONG ones'})")
        elif "Input/output error" not in err:
            problems.append(f"not EIO: {err!r}")
        if os.path.exists(cached):
            problems.append(f"{cached} exists")
        report.check("corrupt", f"{attempt} read of a blob that does not hash to its digest fails", problems)
    text = faults.log.since()
    report.check("corrupt", "log says the blob does not hash to its digest",
                 [] if "does not hash" in text and hexd in text else [f"log: {text[-600:]!r}"])
    client.put_object(faults.bucket, key, data)
    faults.after("corrupt", (digest, data))
    report.check("corrupt", "the right bytes, once verified, are kept in the cache folder",
                 [] if os.path.exists(cached) else [f"no {cached}"])


def read_for(path, seconds):
    """Reads `path` again and again for `seconds`; how many reads gave bytes."""
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        n += read(path)[0] is not None
    return n


def check_answer_cache(report, binary, store, tmp, proxy, garage, key_prefix, moved_to):
    """A mount with the default tag lifetime (1 s) asks the bucket far less than one
    that keeps nothing (`--tag-ttl 0`), and still shows a tag moved in the bucket
    within two lifetimes."""
    counts = {}
    for ttl in ("0", "1"):
        mp = os.path.join(tmp, f"mnt-ttl-{ttl}")
        mount = Mount(binary, store, mp, ["--cache-dir", os.path.join(tmp, "cache")],
                      os.path.join(tmp, f"mount-ttl-{ttl}.log"), ["--tag-ttl", ttl, "--change-poll", "3"])
        path = os.path.join(mp, REPO, "manifests", TAG, "schema2")
        try:
            mount.start()
            before = proxy.requests
            reads = read_for(path, 2.0)
            counts[ttl] = (proxy.requests - before, reads)
            if ttl == "1":
                digest, manifest = moved_to
                link = f"{key_prefix}repositories/{REPO}/_manifests/tags/{TAG}/current/link"
                client = garage.client()
                old = client.get_object(garage.bucket, link).body
                client.put_object(garage.bucket, link, digest.encode())
                moved, started = False, time.monotonic()
                while time.monotonic() - started < 5.0 and not moved:
                    moved = read(path)[0] == manifest
                took = time.monotonic() - started
                client.put_object(garage.bucket, link, old)
                report.check("answers", f"a tag moved in the bucket shows after {took:.1f}s (lifetime 1 s)",
                             [] if moved and took < 3.0 else ["not within 2 lifetimes and a bit"])
        finally:
            mount.stop()
    (uncached, n0), (cached, n1) = counts["0"], counts["1"]
    report.check("answers", f"2 s of tag reads: {uncached} requests for {n0} reads with --tag-ttl 0, "
                 f"{cached} for {n1} with 1 s", [] if cached * 5 < uncached else ["not 5 times fewer"])


def check_sigterm_with_refreshers(report, binary, store, tmp):
    """A mount with the default tag lifetime, its answers being kept young (the
    refresher threads start with the store, before the mount blocks SIGTERM for its
    own threads), unmounts on SIGTERM and exits 0."""
    mp = os.path.join(tmp, "mnt-sigterm")
    mount = Mount(binary, store, mp, ["--cache-dir", os.path.join(tmp, "cache")],
                  os.path.join(tmp, "mount-sigterm.log"))
    try:
        mount.start()
        read_for(os.path.join(mp, REPO, "manifests", TAG, "schema2"), 1.0)
        proc = mount.proc
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        report.check("stop", f"SIGTERM with answers kept young: unmounted, exit status {code}",
                     [] if code == 0 and not mounted(mp) else ["not a clean stop"])
    finally:
        mount.stop()


def check_blob_cache(report, binary, store, tmp, proxy, blobs, readers=4):
    """A mount with a 1 MiB cache bound: `readers` at once per blob get the right bytes
    from one download (one GET: each blob is under a part), and the cache folder stays
    within its bound."""
    import concurrent.futures
    cache_dir = os.path.join(tmp, "cache-small")
    mp = os.path.join(tmp, "mnt-small")
    mount = Mount(binary, store, mp, ["--cache-dir", cache_dir, "--cache-max-bytes", "1M"],
                  os.path.join(tmp, "mount-small.log"), ["--threads", "8"])
    try:
        mount.start()
        wrong, downloads = [], {}
        with concurrent.futures.ThreadPoolExecutor(readers) as pool:
            for digest, data in blobs:
                hexd = digest.split(":", 1)[1]
                before = proxy.count(f"/{hexd}/data", "GET")
                path = os.path.join(mp, REPO, "blobs", digest)
                got = list(pool.map(lambda _: read(path)[0], range(readers)))
                wrong += [digest[:19] for g in got if g != data]
                downloads[digest] = proxy.count(f"/{hexd}/data", "GET") - before
        report.check("blob-cache", f"{readers} readers at once of each of {len(blobs)} blobs get the right bytes",
                     [f"wrong: {wrong}"] if wrong else [])
        # Each blob is one part.
        many = {d[:19]: n for d, n in downloads.items() if n != 1}
        report.check("blob-cache", f"one download per blob for {readers} readers ({sorted(set(downloads.values()))} GETs)",
                     [f"more: {many}"] if many else [])
        folder = os.path.join(cache_dir, "blobs", "sha256")
        total = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
        report.check("blob-cache", f"the cache folder holds {total} bytes, bound 1 MiB",
                     [] if 0 < total <= 1 << 20 else ["over the bound or empty"])
    finally:
        mount.stop()


BIG_BYTES = 16 << 20


def push_big_blobs(reg, n=2):
    """Layers of BIG_BYTES linked into REPO (no manifest needs them)."""
    blobs = []
    for _ in range(n):
        data = os.urandom(BIG_BYTES)
        blobs.append((reg.push_blob(REPO, data), data))
    return blobs


def hash_file(path, chunk=1 << 20):
    """sha256 digest of a file read in chunks, or the error."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while True:
                b = f.read(chunk)
                if not b:
                    return "sha256:" + h.hexdigest()
                h.update(b)
    except OSError as e:
        return f"error: {e}"


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def check_streaming(report, binary, store, tmp, proxy, big, small, readers=256):
    """On a fresh cache: a big blob's first bytes come long before its last while
    each part is slow; then `readers` at once over the other big blob and the small
    ones all get the right bytes, and the mount's memory stays bounded."""
    import concurrent.futures
    mp = os.path.join(tmp, "mnt-stream")
    mount = Mount(binary, store, mp, ["--cache-dir", os.path.join(tmp, "cache-stream")],
                  os.path.join(tmp, "mount-stream.log"), ["--threads", "8"])
    try:
        mount.start()
        (slow_digest, slow_data), (other_digest, other_data) = big
        hexd = slow_digest.split(":", 1)[1]
        path = os.path.join(mp, REPO, "blobs", slow_digest)
        os.stat(path)
        proxy.only = (lambda method, p: method == "GET" and p.endswith(f"/{hexd}/data"))
        proxy.mode, proxy.delay = "slow", 0.5
        delay = proxy.delay
        try:
            started = time.monotonic()
            with open(path, "rb") as f:
                first = f.read(65536)
                first_at = time.monotonic() - started
                rest = f.read()
            whole_at = time.monotonic() - started
        finally:
            proxy.mode, proxy.only = "pass", None
        problems = [] if first + rest == slow_data else ["wrong bytes"]
        # At least 3 rounds of parts (1+2, 4+8, 1 MiB; two at a time): the first bytes
        # come a whole round or more before the last unless they waited for them.
        if not first_at < whole_at - delay:
            problems.append("the first bytes waited for most of the blob")
        report.check("stream", f"first 64 KiB of {BIG_BYTES >> 20} MiB after {first_at:.1f}s, "
                     f"all after {whole_at:.1f}s (0.5 s per part)", problems)

        rss_before = vm_hwm_kib(mount.proc.pid)
        targets = [(other_digest, other_data)] + list(small)
        want = {d: "sha256:" + hashlib.sha256(b).hexdigest() for d, b in targets}
        jobs = [targets[i % len(targets)][0] for i in range(readers)]
        with concurrent.futures.ThreadPoolExecutor(readers) as pool:
            got = list(pool.map(lambda d: (d, hash_file(os.path.join(mp, REPO, "blobs", d))), jobs))
        wrong = [f"{d[:19]}: {h[:60]}" for d, h in got if h != want[d]]
        report.check("stream", f"{readers} readers at once over {len(targets)} blobs get the right bytes",
                     wrong[:5])
        hwm = vm_hwm_kib(mount.proc.pid)
        report.check("stream", f"mount memory high-water {hwm >> 10} MiB ({rss_before >> 10} MiB before the "
                     f"{readers} readers)", [] if hwm < 512 << 10 else ["over 512 MiB"])
    finally:
        mount.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registryfs", help="registryfs binary (default: $REGISTRYFS_BIN, target/debug, target/release)")
    ap.add_argument("--garage", help="garage binary (default: $GARAGE_BIN, else the cached install)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--work-dir", default=os.path.join(HERE, "work"), help="where failing bytes are saved")
    ap.add_argument("--timeout", type=int, default=300, help="abort (and clean up) after this many seconds")
    args = ap.parse_args(argv)

    garage_bin = args.garage or installed_garage()
    if not garage_bin:
        print("skip: Garage is not installed (scripts/install-garage.sh builds it, ~10 min)")
        return SKIP
    try:
        binary = resolve_binary(args.registryfs)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    stop_cleanly_on_signals(args.timeout)
    report = Report(args.work_dir)
    tmp = tempfile.mkdtemp(prefix="registryfs-s3-faults-")
    garage = Garage(os.path.join(tmp, "garage"), garage_bin)
    reg = S3Registry(os.path.join(tmp, "registry"), garage)
    proxy = None
    mount = None
    t0 = time.monotonic()
    interrupted = False
    try:
        garage.start()
        reg.start()
        blobs, manifest = push_image(reg)
        all_blobs = list(blobs)
        big_blobs = push_big_blobs(reg)
        other_layers, other_manifest = push_image(reg, "v2", 1)
        other_digest = "sha256:" + hashlib.sha256(other_manifest).hexdigest()
        reg.stop()
        proxy = FaultProxy(garage.s3_port).start()
        print(f"# garage pid {garage.pid} {garage.endpoint}, proxy {proxy.endpoint}", flush=True)
        garage.export_aws_env(proxy.endpoint)
        cache_dir = os.path.join(tmp, "cache")
        store = f"s3://{garage.bucket}/{reg.rootdirectory.strip('/')}"
        mp = os.path.join(tmp, "mnt")
        mount = Mount(binary, store, mp, ["--cache-dir", cache_dir, "--s3-timeout", str(TIMEOUT)],
                      os.path.join(tmp, "mount.log"), ["--tag-ttl", "0"])
        mount.start()
        log = Log(mount.log_path)
        faults = Faults(report, mp, log, garage.bucket, blobs, manifest)
        faults.after("baseline", faults.blobs.pop(0))

        garage.stop()
        blob = faults.during("stopped", ["no answer", "connection", "Connection"])
        garage.start()
        faults.after("restarted", blob)

        for mode, reasons in (("503", ["503 SlowDown"]), ("403", ["403 AccessDenied"])):
            proxy.mode = mode
            blob = faults.during(mode, reasons, proxy)
            proxy.mode = "pass"
            faults.after(mode, blob)

        proxy.mode, proxy.delay = "slow", 3 * TIMEOUT
        blob = faults.during("stalled", ["timed out", "timeout", "no answer"], proxy)
        proxy.delay = TIMEOUT / 20
        faults.after("slow", blob)
        proxy.mode = "pass"

        check_corrupt_blob(report, faults, garage.client(), reg.key_prefix, cache_dir)

        check_blob_cache(report, binary, store, tmp, proxy, all_blobs)
        check_streaming(report, binary, store, tmp, proxy, big_blobs, all_blobs)
        check_answer_cache(report, binary, store, tmp, proxy, garage, reg.key_prefix,
                           (other_digest, other_manifest))

        # The S3 store's threads (the client's, and the refreshers of a mount that keeps
        # answers) start before the mount's: SIGTERM must still unmount, and the daemon
        # exit by itself.
        stop_process(mount.proc, signal.SIGTERM, timeout=10)
        report.check("stop", "SIGTERM unmounts", [] if not mounted(mp) else ["still mounted"])
        check_sigterm_with_refreshers(report, binary, store, tmp)
    except KeyboardInterrupt as e:
        interrupted = True
        report.fail("harness", "interrupted", e or "SIGINT")
    except (GarageError, RegistryError, S3Error, SetupError, ServerError, OSError) as e:
        report.fail("harness", "setup", e)
    finally:
        signal.alarm(0)
        if mount:
            mount.stop()
        if proxy:
            proxy.stop()
        reg.stop()
        garage.stop()
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    return finish("s3-faults", report, t0, interrupted)


if __name__ == "__main__":
    sys.exit(main())
