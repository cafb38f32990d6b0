"""The `changes` section of run.py: how soon a store change shows through a mount, and
what following the store costs while nothing changes.

  moves  registry 2.8.2 serves a small store on the disk (run.py's --disk-dir) that a
         mount (registry layout, default tag TTL) serves too. A tag is moved by PUTting
         one of three pushed schema2 manifests (one the mount does not serve either)
         through the registry's API, 2 x 200 times. From the PUT's answer on,
         the registry's delay is its next GET by tag (until it returns the new
         digest), and the mount's are the first read of `<repo>/manifests/<tag>/schema2`
         that gives the new bytes and the first `stat` of the tag folder whose
         st_mtime_ns equals the store's `current/link`, both polled every 0.5 ms. Moves
         alternate between timing the registry and timing the mount. Before each move
         the mount has served the current tag (so the kernel holds it, for its TTL) and
         the previous move's invalidations are over.
  idle   the 100k-repository store (run.py's scale store, /dev/shm) mounted in both
         layouts after one `ls` of the root (and a `stat` of `app` for Crane), and
         registry 2.8.2 serving it: CPU time of each process over the same idle window,
         from the kernel's per-thread run time (/proc/PID/task/*/schedstat, ns) and in
         clock ticks (utime+stime). The change detection each mount logged is printed.

`bench` is run.py itself: its figure line, Mount, CLEANUP and the registry starter.
"""

import http.client
import math
import os
import re
import shutil
import time

from gen_store import LAYER, config, manifest
from registry import MT_SCHEMA2, sha256_digest

REPO = "changes/moving"
TAG = "latest"
POLL_S = 0.0005
# Moves are this far apart, so that one move's invalidations never land in the next one.
SETTLE_S = 0.25
VISIBLE_TARGET_MS = 50
MOVES = 200  # timed on each side
MOVE_TIMEOUT_S = 2.0  # per side and move; later counts as never (inf)
DISK_IDLE_S = 5  # the moves' mount idle before the first move
IDLE_S = 20  # the idle window at 100k repositories
# The mount logs its change detection at info (`registryfs mount` defaults to warn).
MOUNT_ENV = dict(os.environ, RUST_LOG="warn,registryfs=info")


def bench_changes(args, work, store, bench):
    bench_moves(args, work, bench)
    bench_idle(args, work, store, bench)


def percentile(values, p):
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def change_detection(log_path, timeout=5):
    """The mount's log line that says how it follows the store."""
    deadline = time.monotonic() + timeout
    while True:
        with open(log_path, errors="replace") as f:
            lines = [ln.strip() for ln in f if re.search(r"\bwatching\b|not watching", ln)]
        if lines or time.monotonic() > deadline:
            return lines[-1] if lines else "(no change-detection line in the log)"
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# tag moves


def push_images(reg):
    """Three schema2 images in REPO; returns their manifests' (bytes, digest), the tag on
    the first."""
    layer = reg.push_blob(REPO, LAYER)
    bodies = []
    for label in ("moves-a", "moves-b", "moves-c"):
        cfg = config(label)
        bodies.append(manifest(cfg, reg.push_blob(REPO, cfg), layer))
    digests = [reg.push_manifest(REPO, TAG, MT_SCHEMA2, body) for body in reversed(bodies)][::-1]
    return list(zip(bodies, digests))


def put_manifest(conn, body):
    conn.request("PUT", f"/v2/{REPO}/manifests/{TAG}", body=body, headers={"Content-Type": MT_SCHEMA2})
    r = conn.getresponse()
    r.read()
    if r.status != 201:
        raise AssertionError(f"PUT {REPO}:{TAG}: {r.status}")
    return r.getheader("Docker-Content-Digest")


def registry_next_get(conn, digest, t0, timeout):
    """Seconds from t0 until a GET by tag answers with `digest`, and the GETs made."""
    gets = 0
    while True:
        conn.request("GET", f"/v2/{REPO}/manifests/{TAG}", headers={"Accept": MT_SCHEMA2})
        r = conn.getresponse()
        r.read()
        gets += 1
        elapsed = time.perf_counter() - t0
        if r.status == 200 and r.getheader("Docker-Content-Digest") == digest:
            return elapsed, gets
        if elapsed > timeout:
            return math.inf, gets


def read_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def poll_mount(tag_file, tag_dir, body, link_ns, t0, timeout):
    """Seconds from t0 until the mount serves `body` and until the tag folder's mtime is
    the link's (inf: not within `timeout`), and the errors seen meanwhile."""
    content_s = mtime_s = None
    errors = []
    while content_s is None or mtime_s is None:
        if content_s is None:
            try:
                if read_file(tag_file) == body:
                    content_s = time.perf_counter() - t0
            except OSError as e:
                errors.append(f"read: {e}")
        if mtime_s is None:
            try:
                if os.stat(tag_dir).st_mtime_ns == link_ns:
                    mtime_s = time.perf_counter() - t0
            except OSError as e:
                errors.append(f"stat: {e}")
        if time.perf_counter() - t0 > timeout:
            break
        time.sleep(POLL_S)
    return (math.inf if content_s is None else content_s), (math.inf if mtime_s is None else mtime_s), errors


def bench_moves(args, work, b):
    root = os.path.join(args.disk_dir, "changes-store")
    shutil.rmtree(root, ignore_errors=True)
    mp = os.path.join(work, "mnt-changes")
    log = os.path.join(work, "mount-changes.log")
    link = os.path.join(root, "docker/registry/v2/repositories", REPO, "_manifests/tags", TAG, "current/link")
    tag_dir = os.path.join(mp, REPO, "manifests", TAG)
    tag_file = os.path.join(tag_dir, "schema2")
    try:
        reg, _ = b.start_registry(work, root)
        images = push_images(reg)
        m = b.Mount(args.registryfs, root, mp, ["--signing-key", args.key], log, env=MOUNT_ENV).start()
        detection = change_detection(log)
        b.note(f"changes: store {root} ({REPO}:{TAG}); mount: {detection}")

        # What the daemon spends while this filesystem (the machine's disk, where other
        # work writes too) changes and the store does not.
        cpu0, t_idle = b.cpu_seconds(m.proc.pid), time.perf_counter()
        time.sleep(DISK_IDLE_S)
        disk_idle = (b.cpu_seconds(m.proc.pid) - cpu0) / (time.perf_counter() - t_idle)

        put_conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)
        get_conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)
        reg_s, content_s, mtime_s, extra_gets, errors, stale_before = [], [], [], 0, [], 0
        current = images[0]  # where the tag is
        cpu0 = b.cpu_seconds(m.proc.pid)
        t_moves = time.perf_counter()
        t0 = 0.0
        # Moves alternate between timing the registry and timing the mount, so that
        # neither side's polling takes CPU from the other (2 vCPUs).
        for move in range(2 * MOVES):
            time.sleep(max(0.0, t0 + SETTLE_S - time.perf_counter()))
            # A client reads the tag: the kernel holds its entries for the TTL.
            served = sha256_digest(read_file(tag_file))
            os.stat(tag_dir)
            # A move that never showed (see poll_mount's timeout) leaves the mount on an
            # older image: move to one that neither the registry nor the mount has.
            stale_before += served != current[1]
            current = next(image for image in images if image[1] not in (current[1], served))
            body, digest = current
            got = put_manifest(put_conn, body)
            t0 = time.perf_counter()
            assert got == digest, (got, digest)
            if move % 2 == 0:
                r, gets = registry_next_get(get_conn, digest, t0, MOVE_TIMEOUT_S)
                reg_s.append(r)
                extra_gets += gets - 1
            else:
                link_ns = os.stat(link).st_mtime_ns
                c, t, errs = poll_mount(tag_file, tag_dir, body, link_ns, t0, MOVE_TIMEOUT_S)
                content_s.append(c)
                mtime_s.append(t)
                errors += errs
        moves_cpu = b.cpu_seconds(m.proc.pid) - cpu0
        moves_wall = time.perf_counter() - t_moves
        put_conn.close()
        get_conn.close()
    finally:
        b.CLEANUP.run()  # the mount, the registry
        shutil.rmtree(root, ignore_errors=True)

    def ms(values, p):
        return percentile(values, p) * 1e3

    def show(values):
        return f"p50 {ms(values, 50):.2f} ms, p99 {ms(values, 99):.2f} ms, max {max(values) * 1e3:.2f} ms"

    n = len(reg_s) + len(content_s)
    b.note(f"changes: {n} tag moves (PUT of one of three schema2 manifests, {SETTLE_S * 1e3:.0f} ms apart), "
           f"timed on the registry and on the mount in turn; timeout {MOVE_TIMEOUT_S} s")
    b.note(f"changes: registry next GET: {show(reg_s)}; GETs that still had the old digest: {extra_gets}")
    b.note(f"changes: mount, schema2 bytes: {show(content_s)}; not within the timeout: "
           f"{sum(1 for c in content_s if c == math.inf)}")
    b.note(f"changes: mount, tag folder st_mtime_ns = current/link's: {show(mtime_s)}; not within the timeout: "
           f"{sum(1 for t in mtime_s if t == math.inf)}")
    slow = sum(1 for c in content_s if c > VISIBLE_TARGET_MS / 1e3)
    b.note(f"changes: moves whose bytes showed after more than {VISIBLE_TARGET_MS} ms: {slow}")
    b.note(f"changes: moves before which the mount still served an older image: {stale_before}")
    b.note(f"changes: mount errors while polling: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    b.note(f"changes: daemon CPU {disk_idle * 100:.1f}% of a core while the store was idle "
           f"({DISK_IDLE_S} s; its filesystem is the shared disk), "
           f"{moves_cpu / n * 1e3:.1f} ms per move during the moves ({moves_cpu / moves_wall * 100:.1f}%)")
    for what, values in (("schema2 bytes", content_s), ("tag folder mtime", mtime_s)):
        for p in (50, 99):
            ours, peer = ms(values, p), ms(reg_s, p)
            # Not visible within the timeout: the timeout is a lower bound.
            shown = f"{ours:.2f}" if ours != math.inf else f">{MOVE_TIMEOUT_S * 1e3:.0f}"
            ours = min(ours, MOVE_TIMEOUT_S * 1e3)
            checked = what == "schema2 bytes" and p == 99
            b.figure(f"tag move visible p{p}, mount {what} / registry-2.8 next GET", shown, f"{peer:.2f} registry",
                     "ms", ours / peer, f"<= {VISIBLE_TARGET_MS} ms" if checked else "(none)",
                     shown[0] != ">" and ours <= VISIBLE_TARGET_MS if checked else None)


# ---------------------------------------------------------------------------
# idle at 100k repositories


def run_ns(pid):
    """Run time of all of `pid`'s threads so far, in ns (first field of schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def bench_idle(args, work, store, b):
    procs = {}
    try:
        for layout, flags in (("registry", []), ("crane", ["--layout", "crane"])):
            mp = os.path.join(work, f"mnt-idle-{layout}")
            log = os.path.join(work, f"mount-idle-{layout}.log")
            m = b.Mount(args.registryfs, store, mp, ["--signing-key", args.key, *flags], log, env=MOUNT_ENV).start()
            t0 = time.perf_counter()
            names = os.listdir(mp)
            if layout == "crane":
                os.stat(os.path.join(mp, "app"))
            first = time.perf_counter() - t0
            b.note(f"changes: idle: {layout} layout mount: `ls` of the root ({len(names)} entries)"
                   + (" and `stat app`" if layout == "crane" else "") + f" {first * 1e3:.1f} ms; "
                   + change_detection(log))
            procs[f"mount --layout {layout}"] = m.proc.pid
        reg, _ = b.start_registry(work, store)
        procs["registry 2.8.2"] = reg.proc.pid
        time.sleep(1)  # whatever starting up left running
        before = {name: (run_ns(pid), b.cpu_seconds(pid)) for name, pid in procs.items()}
        t0 = time.perf_counter()
        time.sleep(IDLE_S)
        window = time.perf_counter() - t0
        after = {name: (run_ns(pid), b.cpu_seconds(pid)) for name, pid in procs.items()}
    finally:
        b.CLEANUP.run()  # the registry, both mounts

    used_us = {}
    for name in procs:
        used_us[name] = (after[name][0] - before[name][0]) / 1e3
        ticks = round((after[name][1] - before[name][1]) * os.sysconf("SC_CLK_TCK"))
        b.note(f"changes: idle {window:.1f} s at {args.repos} repositories: {name}: {used_us[name]:,.0f} us of CPU "
               f"({used_us[name] / 1e4 / window:.4f}% of a core; {ticks} clock ticks of utime+stime)")
    peer = used_us["registry 2.8.2"]
    for layout in ("registry", "crane"):
        ours = used_us[f"mount --layout {layout}"]
        # Both may be (nearly) nothing: compare from 1 us up, the figure's resolution.
        b.figure(f"idle CPU over {IDLE_S} s, {args.repos} repositories, mount ({layout} layout) / registry-2.8",
                 f"{ours:,.0f}", f"{peer:,.0f} registry", "us", max(ours, 1) / max(peer, 1), "(none)", None)
