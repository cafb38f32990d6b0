#!/usr/bin/env python3
"""Metadata that follows the store: Crane's reload rule, store names that must not reach
Crane's data_dir, and identical stat/ETag/Last-Modified across mounts (issue 9).

    python3 tests/metadata/run.py [--registryfs target/debug/registryfs] [--keep]

What it does:
  1. starts Debian's docker-registry 2.8.2 on 127.0.0.1 on a fresh store and pushes,
     with raw HTTP: library/plain:latest (schema2), emptylayers:latest (schema2 whose
     history has empty layers), multi/list:latest (a manifest list);
  2. mounts the store with `--layout crane` and re-states Crane's reload rule exactly as
     crane/data.py's monitor thread has it (Crane 3.3.1), on a thread polling every
     10 ms while pushes go on, as Crane's does: data_dir = <mount>/app, walked with
     os.walk(followlinks=True); last_modified starts at the time Crane starts; each poll
     stats the folders of the last walk, and when the newest st_mtime is greater than
     last_modified (or one of them is gone) walks again and reloads every app file
     (`*.json` below data_dir). Then makes, one at a time, each change issue 9 lists (a
     new tag; a tag moved from schema2 to a list; a new repository; a list tag moved to a
     list whose amd64 child is new), a tag moved between two schema2 images and a tag
     deleted (manifest DELETE), and waits up to 5 s for Crane's latest reload to give,
     for every tag ever pushed, the registry's answer through Crane's redirect choice
     (tests/httpd/crane.py) to a schema2+list client, a schema2 client and an old client
     without Accept: the file Crane redirects to (read from <mount>/web) hashes to the
     registry's Docker-Content-Digest (schema1: its JWS payload equals the registry's and
     hashes to that digest), or is missing where the registry answers 404. A reload in
     the middle of a push may give the old answers; a later one must give the new ones.
     The delay is from the end of the push to the first reload from which on every
     reload gives them; the maximum is printed;
  3. the hijack (issue 9, 2.): a schema2 manifest carrying Crane's app-file keys pushed as
     emptylayers:hijack.json and to a repository library/plain.json; app/ must then hold
     exactly one <repo_id>.json per repository, each naming itself, and nothing may
     redirect library/plain anywhere but its own url;
  4. two registry-layout mounts of the store, and one of them restarted: os.stat of every
     path (folders and files) gives the same (st_size, st_mtime_ns) on all three; the
     Crane mount that followed every change and a fresh Crane mount agree the same way;
  5. a stock static nginx (`root <mount>;`, default `etag on`) per registry-layout mount:
     every file gives the same ETag, Last-Modified and body through both, also after the
     restart, and the ETag is the one nginx makes from the mount's stat.

Prints ok/FAIL per check, the delays, and "metadata: N passed, M failed". Everything
started here is stopped by PID in a finally block (also on SIGTERM, SIGINT, SIGHUP and
the --timeout alarm); the mounts are unmounted. Stdlib only.
"""

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "oracle"))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "httpd"))

from harness import finish, stop_cleanly_on_signals  # noqa: E402
import fixtures as fx  # noqa: E402
from registry import MT_LIST, MT_SCHEMA1_SIGNED, MT_SCHEMA2, Registry, RegistryError  # noqa: E402
from servers import Mount, request, start_on_a_free_port, stop_process, tail  # noqa: E402
from crane import URL_PATH, crane_redirect  # noqa: E402

POLL_EVERY = 0.010
POLL_FOR = 5.0
# After the right answers: later parts of the same push may make Crane reload again.
SETTLE = 0.3
# The mount logs how it watches the store at info level; the rest stays at warn.
MOUNT_LOG_FILTER = "warn,registryfs::watch=info"
CLIENTS = [
    ("schema2+list", [MT_SCHEMA2, MT_LIST]),
    ("schema2", [MT_SCHEMA2]),
    ("no Accept", []),
]
# What load_from_file reads besides repo-registry-id, url and repository for version 4.
V4_KEYS = ("schema2_data", "manifest_list_data", "manifest_list_amd64_tags")
SECTION_TYPES = {"1": MT_SCHEMA1_SIGNED, "2": MT_SCHEMA2, "list": MT_LIST}


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, what, problems):
        if problems:
            self.failed += 1
            self.failures.append(what)
            print(f"FAIL {what}: " + "; ".join(" ".join(str(p).split()) for p in problems[:8])
                  + (f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""), flush=True)
        else:
            self.passed += 1
            print(f"ok {what}", flush=True)


def note(text):
    print("# " + text, flush=True)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------------------
# images


def image(seed, history=None):
    layers = fx.L(seed)
    return fx.Image(fx.simple_config("amd64", layers, history or [(f"ADD {seed} /", False)]), layers)


def list_of(amd64_seed, arm64_seed):
    return fx.Index([fx._platform_image(amd64_seed, "amd64"), fx._platform_image(arm64_seed, "arm64", variant="v8")])


def hijack_manifest(base):
    """`base`'s schema2 manifest plus the keys of a Crane app file that redirects
    library/plain elsewhere (registry 2.8.2 keeps unknown top-level keys verbatim)."""
    doc = json.loads(base.manifest)
    doc.update({
        "type": "pulp-docker-redirect",
        "version": 4,
        "repo-registry-id": "library/plain",
        "url": "http://attacker.invalid/v2/",
        "repository": "library___plain",
        "protected": False,
        "schema2_data": ["latest"],
        "manifest_list_data": [],
        "manifest_list_amd64_tags": {},
    })
    return json.dumps(doc, indent=3).encode()


class Pusher:
    """Pushes through the registry's HTTP API and remembers every (repo, tag) pushed."""

    def __init__(self, reg):
        self.reg = reg
        self.refs = []

    def push(self, repo, tag, obj, body=None):
        for c in obj.children():
            for b in c.upload_blobs():
                self.reg.push_blob(repo, b)
            self.reg.push_manifest(repo, c.digest, c.media_type, c.manifest)
        for b in [] if obj.children() else obj.upload_blobs():
            self.reg.push_blob(repo, b)
        body = obj.manifest if body is None else body
        got = self.reg.push_manifest(repo, tag, obj.media_type, body)
        if got != sha256(body):
            raise RegistryError(f"{repo}:{tag}: registry stored {got}, pushed {sha256(body)}")
        if (repo, tag) not in self.refs:
            self.refs.append((repo, tag))
        return got

    def delete(self, repo, digest):
        r = self.reg.request("DELETE", f"/v2/{repo}/manifests/{digest}")
        if r.status != 202:
            raise RegistryError(f"DELETE {repo}@{digest}: {r.status} {r.body[:200]!r}")

    def repositories(self):
        r = self.reg.request("GET", "/v2/_catalog?n=1000")
        if r.status != 200:
            raise RegistryError(f"GET /v2/_catalog: {r.status}")
        return json.loads(r.body)["repositories"]


# ---------------------------------------------------------------------------
# Crane


def repo_id(repo):
    return repo.replace("/", "___")


class CraneMonitor:
    """Crane 3.3.1's data_dir monitor thread (crane/data.py: start_monitoring_data_dir,
    monitor_data_dir, load_all), polling every POLL_EVERY seconds on a thread of its
    own, as Crane does: it may reload in the middle of a push."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.lock = threading.Lock()
        # (monotonic time, apps, load errors) of every reload.
        self.reloads = []
        self.crashed = None
        self._stop = threading.Event()
        self._thread = None
        # start_monitoring_data_dir: last_modified is the time Crane starts, then a load.
        self.last_modified = time.time()
        self.reload()

    def reload(self):
        """The monitor's outer loop: walk data_dir, then load every app file."""
        self.dirs = [dirpath for dirpath, _, _ in os.walk(self.data_dir, followlinks=True)]
        apps, errors = {}, []
        paths = [os.path.join(dirpath, f)
                 for dirpath, _, files in os.walk(self.data_dir, followlinks=True)
                 for f in fnmatch.filter(files, "*.json")]
        for path in paths:
            try:
                doc = json.loads(read_bytes(path))
                if doc["version"] not in (1, 2, 3, 4):
                    raise ValueError(f"version {doc['version']}")
                missing = [k for k in ("repo-registry-id", "url", "repository") if k not in doc]
                if doc["version"] == 4:
                    missing += [k for k in V4_KEYS if k not in doc]
                if missing:
                    raise KeyError(missing)
            except (OSError, ValueError, KeyError, TypeError) as e:
                errors.append(f"Crane skips {path}: {e!r}")
                continue
            apps[doc["repo-registry-id"]] = doc
        with self.lock:
            self.apps, self.errors = apps, errors
            self.reloads.append((time.monotonic(), apps, errors))

    def fires(self):
        """One poll of the inner loop: True when Crane reloads now."""
        if not self.dirs:
            return True
        try:
            most_recent = max(os.stat(d).st_mtime for d in self.dirs)
        except OSError:
            return True
        if most_recent > self.last_modified:
            self.last_modified = most_recent
            return True
        return False

    def start(self):
        self._thread = threading.Thread(target=self._run, name="crane-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        try:
            while not self._stop.wait(POLL_EVERY):
                if self.fires():
                    self.reload()
        except Exception as e:  # noqa: BLE001 (shown by every check from then on)
            self.crashed = f"the Crane monitor thread died: {type(e).__name__}: {e}"

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def loaded(self):
        """(apps, load errors) as of the last reload."""
        with self.lock:
            return self.apps, self.errors + ([self.crashed] if self.crashed else [])

    def reloads_since(self, n):
        """The reloads after the first n, as (time, apps, errors)."""
        with self.lock:
            crashed = [self.crashed] if self.crashed else []
            return [(t, apps, errors + crashed) for t, apps, errors in self.reloads[n:]]

    def reload_count(self):
        with self.lock:
            return len(self.reloads)


def b64u_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jws_payload(doc):
    """A signed schema1 document without its signatures (libtrust: the document up to
    formatLength, then formatTail), from its first protected header."""
    m = re.search(rb'"protected"\s*:\s*"([A-Za-z0-9_-]*)"', doc)
    if m is None:
        raise ValueError("no protected header")
    header = json.loads(b64u_decode(m.group(1).decode()))
    return doc[: header["formatLength"]] + b64u_decode(header["formatTail"])


def registry_answers(pusher):
    """{(repo, tag, client): (status, Content-Type, Docker-Content-Digest, schema1 payload)}
    for every tag ever pushed."""
    out = {}
    for repo, tag in pusher.refs:
        for label, accepts in CLIENTS:
            r = pusher.reg.get_manifest(repo, tag, accepts)
            ctype = r.header("content-type")
            payload = jws_payload(r.body) if r.status == 200 and ctype == MT_SCHEMA1_SIGNED else None
            out[(repo, tag, label)] = (r.status, ctype, r.header("docker-content-digest"), payload)
    return out


def crane_problems(answers, apps, errors, web):
    """Where Crane's answers (redirect choice from `apps`, then the file below `web`)
    differ from the registry's `answers`."""
    problems = list(errors)
    for (repo, tag, label), (status, ctype, digest, payload) in answers.items():
        accepts = dict(CLIENTS)[label]
        app = apps.get(repo)
        target = crane_redirect(app, f"manifests/{tag}", set(accepts)) if app else None
        where = f"{repo}:{tag} [{label}] -> {target or 'no app file'}"
        body = None
        if target is not None:
            prefix = URL_PATH + "/"
            if not target.startswith(prefix):
                problems.append(f"{where}: outside the tree")
                continue
            try:
                body = read_bytes(os.path.join(web, target[len(prefix):]))
            except FileNotFoundError:
                pass
        if status != 200:
            if body is not None:
                problems.append(f"{where}: a file, registry {status}")
            continue
        if body is None:
            problems.append(f"{where}: no file, registry 200 {ctype}")
            continue
        served = SECTION_TYPES.get(target.split("/")[-2])
        if served != ctype:
            problems.append(f"{where}: Crane serves {served}, registry {ctype}")
        elif ctype == MT_SCHEMA1_SIGNED:
            try:
                ours = jws_payload(body)
            except (ValueError, KeyError) as e:
                problems.append(f"{where}: {e}")
                continue
            if ours != payload or sha256(ours) != digest:
                problems.append(f"{where}: payload {sha256(ours)}, registry's {sha256(payload)} (digest {digest})")
        elif sha256(body) != digest:
            problems.append(f"{where}: {sha256(body)}, registry {digest}")
    return problems


def ask_before_push(mountpoint, refs):
    """Looks up what clients pulling `refs` (repo, tag) too early ask for, so that the
    mount has answered "no such file" (which the kernel caches) before the push."""
    for repo, tag in refs:
        rid = repo_id(repo)
        paths = [("app", rid + ".json"), ("web", rid, "tags", "list")]
        paths += [("web", rid, "manifests", section, tag) for section in SECTION_TYPES]
        for parts in paths:
            try:
                os.stat(os.path.join(mountpoint, *parts))
            except FileNotFoundError:
                pass


def follow_change(report, pusher, monitor, web, what, change, delays):
    """Makes `change` while Crane's monitor polls, then waits until Crane's latest reload
    gives every answer the registry gives (at most POLL_FOR seconds after the push). The
    delay is from the end of the push to the first reload from which on every reload
    gives them. SETTLE seconds later (after any further reload) they still must."""
    first = monitor.reload_count()
    started = time.monotonic()
    change()
    pushed = time.monotonic()
    answers = registry_answers(pusher)
    results = []  # (reload time, problems), one per reload since `first`
    while time.monotonic() - pushed < POLL_FOR:
        for t, apps, errors in monitor.reloads_since(first + len(results)):
            results.append((t, crane_problems(answers, apps, errors, web)))
        if results and not results[-1][1]:
            break
        time.sleep(POLL_EVERY)
    during = sum(1 for t, _ in results if t < pushed)
    stale = sum(1 for _, problems in results if problems)
    counts = (f"{len(results)} reloads, {during} while the push ran ({1000 * (pushed - started):.0f} ms), "
              f"{stale} with answers not yet the registry's")
    if not results or results[-1][1]:
        problems = results[-1][1] if results else ["Crane's reload rule never fired"]
        report.check(f"Crane reloads after {what}", [f"{POLL_FOR} s after the push ({counts})"] + problems)
        return
    right_at = next(t for i, (t, _) in enumerate(results) if not any(p for _, p in results[i:]))
    delay = max(0.0, right_at - pushed)
    delays.append(delay)
    time.sleep(SETTLE)
    apps, errors = monitor.loaded()
    report.check(f"Crane reloads after {what}: the registry's answers {1000 * delay:.1f} ms after the push "
                 f"({counts}; {monitor.reload_count() - first - len(results)} more in {SETTLE} s)",
                 crane_problems(answers, apps, errors, web))


def check_quiet(report, monitor, seconds, when):
    before = monitor.reload_count()
    time.sleep(seconds)
    after = monitor.reload_count()
    report.check(f"Crane's rule stays quiet for {seconds} s {when}",
                 [f"{after - before} reloads with no change in the store"] if after != before else [])


def check_app_folder(report, pusher, monitor, mountpoint):
    """Nothing from the store names a file Crane loads (issue 9, 2.)."""
    app_dir = os.path.join(mountpoint, "app")
    repos = pusher.repositories()
    found, problems = [], []
    for dirpath, dirnames, filenames in os.walk(app_dir, followlinks=True):
        problems += [f"folder {os.path.join(dirpath, d)}" for d in dirnames]
        found += [os.path.relpath(os.path.join(dirpath, f), app_dir) for f in filenames]
    want = sorted(repo_id(r) + ".json" for r in repos)
    if sorted(found) != want:
        problems.append(f"app/ holds {sorted(found)}, want one file per repository {want}")
    report.check(f"app/ holds exactly one <repo_id>.json per repository ({len(repos)})", problems)
    problems = []
    for name in sorted(found):
        path = os.path.join(app_dir, name)
        data = read_bytes(path)
        if b"attacker.invalid" in data:
            problems.append(f"{name} carries the pushed redirect")
        try:
            doc = json.loads(data)
        except ValueError as e:
            problems.append(f"{name}: {e}")
            continue
        rid = name[: -len(".json")]
        own = {"type": "pulp-docker-redirect", "version": 4, "repository": rid,
               "repo-registry-id": rid.replace("___", "/"), "url": f"{URL_PATH}/{rid}/"}
        for key, value in own.items():
            if doc.get(key) != value:
                problems.append(f"{name}: {key} {doc.get(key)!r}, want {value!r}")
    report.check("every app file names itself: repository, repo-registry-id and url of its own repository", problems)
    apps, errors = monitor.loaded()
    plain = apps.get("library/plain", {})
    problems = [] if plain.get("url") == f"{URL_PATH}/library___plain/" else [f"Crane loaded url {plain.get('url')!r}"]
    problems += errors
    for label, accepts in CLIENTS:
        for rest in ("manifests/latest", "manifests/hijack.json", "tags/list", "blobs/" + "sha256:" + "0" * 64):
            target = crane_redirect(plain, rest, set(accepts)) if plain else None
            if target is None or not target.startswith(f"{URL_PATH}/library___plain/"):
                problems.append(f"[{label}] {rest} -> {target}")
    report.check("Crane redirects library/plain only to its own url after the hijack push", problems)


# ---------------------------------------------------------------------------
# stat and nginx across mounts


def stat_tree(root):
    """{relative path: (kind, st_size, st_mtime_ns)} of every folder and file below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [None] + dirnames + filenames:
            path = dirpath if name is None else os.path.join(dirpath, name)
            st = os.stat(path)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
            out[os.path.relpath(path, root)] = (kind, st.st_size, st.st_mtime_ns)
    return out


def compare_trees(report, what, a, b):
    problems = []
    for path in sorted(set(a) | set(b)):
        if path not in a or path not in b:
            problems.append(f"{path} only on the {'first' if path in a else 'second'}")
        elif a[path] != b[path]:
            problems.append(f"{path}: (size, mtime_ns) {a[path][1:]} vs {b[path][1:]}")
    files = sum(1 for v in a.values() if v[0] == "file")
    report.check(f"{what}: identical stat of {len(a)} paths ({files} files)", problems)


class StaticNginx:
    """A stock static nginx serving `root`: nginx -p PREFIX -c PREFIX/nginx.conf."""

    def __init__(self, prefix, root):
        self.prefix, self.root = prefix, root
        self.port = None
        self.proc = None
        self.conf = os.path.join(prefix, "nginx.conf")
        self.log_path = os.path.join(prefix, "error.log")

    def start(self):
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)

        def launch(port):
            with open(self.conf, "w") as f:
                f.write(
                    "worker_processes 1;\npid nginx.pid;\nerror_log error.log warn;\n"
                    "events {\n    worker_connections 64;\n}\n"
                    "http {\n    access_log off;\n    default_type application/octet-stream;\n"
                    "    client_body_temp_path tmp/client_body;\n    proxy_temp_path tmp/proxy;\n"
                    "    fastcgi_temp_path tmp/fastcgi;\n    uwsgi_temp_path tmp/uwsgi;\n    scgi_temp_path tmp/scgi;\n"
                    f"    server {{\n        listen 127.0.0.1:{port};\n        root {self.root};\n    }}\n}}\n"
                )
            return subprocess.Popen(
                ["nginx", "-p", self.prefix, "-c", self.conf, "-e", self.log_path, "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"),
                start_new_session=True,
            )

        return start_on_a_free_port(self, launch, path="/")

    def stop(self):
        proc, self.proc = self.proc, None
        stop_process(proc, signal.SIGTERM)


def nginx_etag(kind_size_mtime):
    """The ETag nginx makes from a file's stat: "<mtime hex>-<size hex>"."""
    _, size, mtime_ns = kind_size_mtime
    return f'"{mtime_ns // 1_000_000_000:x}-{size:x}"'


def compare_nginx(report, what, tree, port_a, port_b):
    problems = []
    files = sorted(p for p, v in tree.items() if v[0] == "file")
    for path in files:
        url = "/" + urllib.parse.quote(path)
        a, b = request(port_a, "GET", url), request(port_b, "GET", url)
        if a.status != 200 or b.status != 200:
            problems.append(f"{path}: {a.status} and {b.status}")
            continue
        for h in ("etag", "last-modified"):
            if a.header(h) != b.header(h):
                problems.append(f"{path}: {h} {a.header(h)} vs {b.header(h)}")
        if a.header("etag") != nginx_etag(tree[path]):
            problems.append(f"{path}: ETag {a.header('etag')}, stat says {nginx_etag(tree[path])}")
        if a.body != b.body:
            problems.append(f"{path}: bodies differ ({len(a.body)} and {len(b.body)} bytes)")
    report.check(f"{what}: GET of {len(files)} files gives identical ETag, Last-Modified and body", problems)


def watches_with_fanotify(mount, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(r"watching \S+ with fanotify", tail(mount.log_path, 200)):
            return []
        time.sleep(0.05)
    return [f"no 'watching ... with fanotify' in {mount.log_path}: {tail(mount.log_path, 5)}"]


# ---------------------------------------------------------------------------


def run(binary, tmp, report, started):
    reg = Registry(tmp)
    started.append(reg)
    reg.start()
    pusher = Pusher(reg)
    plain_a = image("metadata-plain-a")
    pusher.push("library/plain", "latest", plain_a)
    pusher.push("library/plain", "stable", plain_a)
    empty_layers = [("ENV A=1", True), ("ADD e /", False), ("CMD", True)]
    pusher.push("emptylayers", "latest", image("metadata-empty", empty_layers))
    pusher.push("multi/list", "latest", list_of("metadata-list-amd64", "metadata-list-arm64"))
    # More paths for the stat and nginx comparisons: tags on images, lists and both.
    bulk = [image(f"metadata-bulk-{i}") for i in range(4)] + [list_of("metadata-bulk-amd64", "metadata-bulk-arm64")]
    for i in range(20):
        pusher.push("more/tags", f"v{i}", bulk[i % len(bulk)])
    note(f"registry pid {reg.proc.pid} on {reg.host}")

    key = ["--signing-key", reg.keyfile]
    os.environ["RUST_LOG"] = MOUNT_LOG_FILTER

    def mount(name, layout):
        m = Mount(binary, reg.root, os.path.join(tmp, name), key + layout, os.path.join(tmp, name + ".log"))
        started.append(m)
        return m.start()

    # 2. Crane's reload rule after each change.
    crane_layout = ["--layout", "crane", "--crane-url", URL_PATH]
    crane_mount = mount("mnt-crane", crane_layout)
    report.check("Crane mount watches the store with fanotify", watches_with_fanotify(crane_mount))
    web = os.path.join(crane_mount.mountpoint, "web")
    monitor = CraneMonitor(os.path.join(crane_mount.mountpoint, "app"))
    apps, errors = monitor.loaded()
    report.check("Crane's first load answers as the registry",
                 crane_problems(registry_answers(pusher), apps, errors, web))
    started.append(monitor.start())
    check_quiet(report, monitor, 1.0, "after Crane starts")

    list_1 = list_of("metadata-l1-amd64", "metadata-l1-arm64")
    list_2 = list_of("metadata-l2-amd64", "metadata-l1-arm64")
    plain_d = image("metadata-plain-d")
    delays = []
    changes = [
        ("a new tag (library/plain:v2, schema2)",
         lambda: pusher.push("library/plain", "v2", image("metadata-plain-b"))),
        ("a tag moved from schema2 to a list (library/plain:latest)",
         lambda: pusher.push("library/plain", "latest", list_1)),
        ("a new repository (new/repo:latest)",
         lambda: pusher.push("new/repo", "latest", image("metadata-new-repo"))),
        ("a list tag moved to a list with a new amd64 child (library/plain:latest)",
         lambda: pusher.push("library/plain", "latest", list_2)),
        ("a tag moved between two schema2 images (library/plain:v2)",
         lambda: pusher.push("library/plain", "v2", plain_d)),
        ("a tag deleted (DELETE library/plain@<v2's digest>)",
         lambda: pusher.delete("library/plain", plain_d.digest)),
    ]
    # Clients asking for what is not pushed yet: "no such file" answers the mount must
    # drop when the push comes.
    early = [("library/plain", "v2"), ("new/repo", "latest"), ("library/plain.json", "hijack.json"),
             ("emptylayers", "hijack.json")]
    for what, change in changes:
        ask_before_push(crane_mount.mountpoint, early)
        follow_change(report, pusher, monitor, web, what, change, delays)

    # 3. The hijack: Crane's keys inside a manifest, under a tag ending in .json.
    hijack_base = image("metadata-hijack")
    hijack = hijack_manifest(hijack_base)

    def push_hijack():
        pusher.push("library/plain.json", "hijack.json", hijack_base, hijack)
        pusher.push("emptylayers", "hijack.json", hijack_base, hijack)

    ask_before_push(crane_mount.mountpoint, early)
    follow_change(report, pusher, monitor, web, "the hijack.json pushes", push_hijack, delays)
    check_app_folder(report, pusher, monitor, crane_mount.mountpoint)
    served = os.path.join(web, "emptylayers", "manifests", "2", "hijack.json")
    same = os.path.isfile(served) and read_bytes(served) == hijack
    report.check("the hijack manifest is served below web/ as pushed", [] if same else [f"{served} differs"])
    check_quiet(report, monitor, 0.5, "after the last change")
    if delays:
        note(f"push -> Crane reload with the registry's answers: max {1000 * max(delays):.1f} ms "
             f"over {len(delays)} changes (median {1000 * sorted(delays)[len(delays) // 2]:.1f} ms)")

    # 4. Two mounts of the store, one restarted; and the Crane mount against a fresh one.
    # Each mount is walked (its inodes made) in a later second than the one before, so
    # that times taken from when an inode was made would show (files show whole seconds).
    first = mount("mnt-a", [])
    report.check("registry-layout mount watches the store with fanotify", watches_with_fanotify(first))
    tree_a = stat_tree(first.mountpoint)
    time.sleep(1.1)
    second = mount("mnt-b", [])
    compare_trees(report, "two registry-layout mounts", tree_a, stat_tree(second.mountpoint))
    fresh_crane = mount("mnt-crane-fresh", crane_layout)
    compare_trees(report, "the Crane mount that followed every change and a fresh one",
                  stat_tree(crane_mount.mountpoint), stat_tree(fresh_crane.mountpoint))

    # 5. nginx over each registry-layout mount.
    nginx_a = StaticNginx(os.path.join(tmp, "nginx-a"), first.mountpoint)
    nginx_b = StaticNginx(os.path.join(tmp, "nginx-b"), second.mountpoint)
    started += [nginx_a, nginx_b]
    nginx_a.start()
    nginx_b.start()
    compare_nginx(report, "nginx over two mounts", tree_a, nginx_a.port, nginx_b.port)

    second.stop()
    time.sleep(1.1)
    second.start()
    compare_trees(report, "a mount before and after a restart", tree_a, stat_tree(second.mountpoint))
    compare_nginx(report, "nginx over a mount and a restarted one", tree_a, nginx_a.port, nginx_b.port)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registryfs", default=os.path.join(REPO_ROOT, "target", "debug", "registryfs"),
                    help="registryfs binary (default: target/debug/registryfs)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--timeout", type=int, default=300, help="abort (and clean up) after this many seconds")
    args = ap.parse_args(argv)
    binary = os.path.abspath(args.registryfs)
    if not os.access(binary, os.X_OK):
        print(f"error: no registryfs binary at {binary}: cargo build, or pass --registryfs PATH", file=sys.stderr)
        return 2

    stop_cleanly_on_signals(args.timeout)
    report = Report()
    tmp = tempfile.mkdtemp(prefix="registryfs-metadata-")
    # nginx's workers (nobody) must reach the mounts.
    os.chmod(tmp, 0o711)
    started = []
    interrupted = False
    t0 = time.monotonic()
    try:
        run(binary, tmp, report, started)
    except KeyboardInterrupt as e:
        interrupted = True
        report.check("harness", [f"interrupted: {e or 'SIGINT'}"])
    except Exception as e:  # noqa: BLE001 (reported as a failure; everything is still stopped)
        report.check("harness", [f"{type(e).__name__}: {e}"])
    finally:
        signal.alarm(0)
        for s in reversed(started):
            s.stop()
        if args.keep:
            note(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return finish("metadata", report, t0, interrupted)


if __name__ == "__main__":
    sys.exit(main())
