#!/usr/bin/env python3
"""End-to-end: nginx and Apache serving a registryfs mount, against registry 2.8.2.

    python3 tests/httpd/run.py [--registryfs target/debug/registryfs] [--keep]
    python3 tests/httpd/run.py --serve      # set everything up, print ports, wait

What it does:
  1. starts Debian's docker-registry 2.8.2 on 127.0.0.1 with the oracle's fixed
     signing key and pushes the oracle's fixtures (tests/oracle/fixtures.py);
  2. mounts the registry's store with `registryfs mount --allow-other` (same key,
     --allow-foreign-layers: the registry converts foreign layers too);
  3. starts, each on 127.0.0.1 with configs from `registryfs httpd-config ... --full`:
       nginx   nginx 1.22 with the njs module (every Accept line counts),
       apache  Apache 2.4 (joins repeated Accept lines itself),
       nginx-plain  nginx 1.22 without njs (sees the first Accept line only);
  4. for every tag and manifest digest of every fixture, asks the registry and the
     servers with many Accept combinations (none, each type, several, */*, q=0,
     several header lines as Docker and containers/image send them), GET and HEAD,
     and compares status, error code/message/detail, Content-Type, body (schema1
     modulo the signature and protected header, plus libtrust verification of
     ours), Docker-Content-Digest, Vary; blobs (whole and Range requests) and
     tags/list byte for byte; unknown tags, digests, blobs, repositories;
  5. skopeo inspect --raw and skopeo copy to dir: through nginx and Apache give
     what they give through the registry; an old client (no Accept, GET only)
     verifies the signature and fetches every fsLayers blob through nginx;
  6. prints ok/FAIL per check, the known differences from the registry (what a
     static server cannot do; docs/httpd.md), and "httpd: N passed, M failed".

Everything started here is stopped by PID in a finally block (also on SIGTERM,
SIGINT, SIGHUP and the --timeout alarm); the mount is unmounted. Stdlib only.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
ORACLE = os.path.join(REPO_ROOT, "tests", "oracle")
sys.path.insert(0, ORACLE)
sys.path.insert(0, HERE)

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
    skopeo_env,
)
from servers import Apache, Mount, Nginx, ServerError, request  # noqa: E402
import crane  # noqa: E402

MT_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
JSON_UTF8 = "application/json; charset=utf-8"
ZERO_DIGEST = "sha256:" + "0" * 64

# Accept header lines per combination (a list item is one header line).
TAG_ACCEPTS = [
    ("no Accept", []),
    ("schema2", [MT_SCHEMA2]),
    ("list", [MT_LIST]),
    ("oci", [MT_OCI]),
    ("oci-index", [MT_OCI_INDEX]),
    ("schema2;q=0", [MT_SCHEMA2 + "; q=0"]),
    ("*/*", ["*/*"]),
    ("schema2,list", [MT_SCHEMA2 + ", " + MT_LIST]),
    ("all+*/* one line (containerd)", [", ".join([MT_SCHEMA2, MT_LIST, MT_OCI, MT_OCI_INDEX, "*/*"])]),
    ("lines as Docker (schema1 first)", [MT_SCHEMA1_SIGNED, "application/json", MT_SCHEMA2, MT_LIST, MT_OCI, MT_OCI_INDEX]),
    ("lines as containers/image", [MT_OCI, MT_SCHEMA2, MT_SCHEMA1_SIGNED, MT_SCHEMA1, MT_LIST, MT_OCI_INDEX]),
    ("lines schema1,schema2", [MT_SCHEMA1_SIGNED, MT_SCHEMA2]),
]
DIGEST_ACCEPTS = [c for c, _ in TAG_ACCEPTS]
HEAD_ACCEPTS = ["no Accept", "lines as containers/image"]
ACCEPTS = dict(TAG_ACCEPTS)

# Differences from registry 2.8.2 that static files cannot remove (docs/httpd.md).
KNOWN = {
    "apache-inm-unknown-digest": "If-None-Match with the requested digest, not in the repository: the registry "
    "answers 304 without looking, Apache needs a file to answer from (404)",
    "nginx-inm-star": "nginx answers `If-None-Match: *` on a manifest with 304 (stock nginx's not-modified filter; "
    "the registry compares with the digest and answers 200)",
    "nginx-304-length": "nginx's 304 carries Content-Length: 0 (a `return 304` in stock nginx; the registry sends none)",
    "apache-head-error-length": "Apache answers HEAD of an error (and HEAD /v2/) without Content-Length "
    "(registry: the body's length; Apache sends none for an ErrorDocument, and one set by mod_headers "
    "would be a second one)",
    "no-rootfs": "config without rootfs: registry 2.8.2 panics and closes the connection; we answer 400 MANIFEST_INVALID",
    "error-detail": "a refused schema1 conversion answers 400 MANIFEST_INVALID with detail {} "
    "(the registry's detail names the Go error, e.g. {\"Offset\":10})",
    "first-accept-line": "nginx 1.22 without njs reads only the first Accept line",
    "digest-grammar": "a digest the namespace does not hold (upper-case hex): 404 "
    "(Debian's registry build: 500 for manifests, 400 DIGEST_INVALID for blobs)",
    "unsupported-method": "anything but GET/HEAD: 405 UNSUPPORTED (the registry accepts pushes)",
    "range-416-body": "unsatisfiable Range: same 416 status and Content-Range, server-specific body",
    "crane-oci": "Crane layout: OCI manifests and indexes are not in the tree (Crane metadata v4 has no place for them)",
    "crane-digest-accept": "Crane: a manifest by digest is redirected by Accept like a tag, so a schema2 or list "
    "digest is 404 to a client that does not accept its type (the registry serves it)",
    "crane-errors": "Crane layout: errors are the web server's 404 (the registry: 400/500/closed connection)",
}

SIG_VALUE_RE = re.compile(rb'("(?:signature|protected)"\s*:\s*")[A-Za-z0-9_-]*(")')


def mask_signatures(doc):
    return SIG_VALUE_RE.sub(rb"\1...\2", doc)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []
        self.known = {}

    def check(self, what, problems, known=()):
        known = sorted(set(known))
        for k in known:
            self.known.setdefault(k, []).append(what)
        if problems:
            self.failed += 1
            self.failures.append(what)
            print(f"FAIL {what}: " + "; ".join(" ".join(str(p).split()) for p in problems), flush=True)
        else:
            self.passed += 1
            note = f" [known: {', '.join(known)}]" if known else ""
            print(f"ok {what}{note}", flush=True)


def error_triplet(resp):
    """(code, message, detail) of a registry-style error body, or None."""
    try:
        doc = json.loads(resp.body)
        e = doc["errors"][0]
        return e.get("code"), e.get("message"), e.get("detail", "<absent>")
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class Checker:
    def __init__(self, reg, servers, verifier, report):
        self.reg = reg
        self.servers = servers  # {name: port}
        self.verifier = verifier
        self.report = report
        self._reg_cache = {}
        self._verified = {}

    # -- requests ----------------------------------------------------------

    def reg_req(self, method, path, lines=()):
        key = (method, path, tuple(lines))
        if key not in self._reg_cache:
            self._reg_cache[key] = request(self.reg.port, method, path, [("Accept", a) for a in lines])
        return self._reg_cache[key]

    def verify(self, body):
        if body not in self._verified:
            self._verified[body] = libtrust_verify(self.verifier, body)
        return self._verified[body]

    # -- comparisons -------------------------------------------------------

    def compare(self, reg, ours, kind, by_digest=False, method="GET", inm=None):
        """Problems and known differences of our answer against the registry's.
        kind: "manifest", "blob", "tags", "other"."""
        problems, known = [], []
        if len(ours.all("content-length")) > 1:
            problems.append(f"{len(ours.all('content-length'))} Content-Length headers {ours.all('content-length')}")
        if ours.header("docker-distribution-api-version") != "registry/2.0":
            problems.append(f"Docker-Distribution-Api-Version {ours.header('docker-distribution-api-version')!r}")
        if reg.status != ours.status:
            k = self.known_status_difference(reg, ours, kind, inm)
            if k:
                return problems, [k]
            problems.append(f"status {ours.status} (registry {reg.status}: {reg.body[:160]!r}; ours {ours.body[:160]!r})")
            return problems, known
        ct_reg, ct_ours = reg.header("content-type"), ours.header("content-type")
        if reg.status in (200, 206):
            if ct_reg != ct_ours:
                problems.append(f"Content-Type {ct_ours!r}, registry {ct_reg!r}")
            if method == "HEAD":
                if ours.body:
                    problems.append("HEAD answered with a body")
                if ours.header("content-length") is None and kind == "other":
                    known.append("apache-head-error-length")
                elif ours.header("content-length") != reg.header("content-length") and ct_reg != MT_SCHEMA1_SIGNED:
                    problems.append(f"Content-Length {ours.header('content-length')}, registry {reg.header('content-length')}")
            elif ct_reg == MT_SCHEMA1_SIGNED:
                problems += self.compare_schema1(reg, ours)
            elif reg.body != ours.body:
                problems.append(f"body differs ({len(ours.body)} bytes, registry {len(reg.body)}): "
                                f"{ours.body[:120]!r} vs {reg.body[:120]!r}")
            if method == "GET" and ours.header("content-length") not in (None, str(len(ours.body))):
                problems.append(f"Content-Length {ours.header('content-length')} for {len(ours.body)} bytes")
            if kind == "manifest":
                if "Accept" not in ", ".join(ours.all("vary")):
                    problems.append(f"no Vary: Accept ({ours.all('vary')})")
                dcd_reg, dcd_ours = reg.header("docker-content-digest"), ours.header("docker-content-digest")
                if dcd_ours != dcd_reg:
                    problems.append(f"Docker-Content-Digest {dcd_ours}, registry {dcd_reg}")
                if ours.all("etag") != reg.all("etag"):
                    problems.append(f"Etag {ours.all('etag')}, registry {reg.all('etag')}")
                if method == "GET" and ct_reg != MT_SCHEMA1_SIGNED and dcd_ours and sha256(ours.body) != dcd_ours:
                    problems.append(f"body hashes to {sha256(ours.body)}, not its Docker-Content-Digest")
            if kind == "blob":
                for h in ("docker-content-digest", "etag", "cache-control", "content-range"):
                    if ours.header(h) != reg.header(h):
                        problems.append(f"{h} {ours.header(h)!r}, registry {reg.header(h)!r}")
        elif reg.status == 416:
            if ours.header("content-range") != reg.header("content-range"):
                problems.append(f"Content-Range {ours.header('content-range')!r}, registry {reg.header('content-range')!r}")
            if ours.body != reg.body:
                known.append("range-416-body")
        elif reg.status == 304:
            problems, known = self.compare_not_modified(reg, ours, problems)
        else:
            if ct_reg != ct_ours:
                problems.append(f"error Content-Type {ct_ours!r}, registry {ct_reg!r}")
            if method == "HEAD" and ours.header("content-length") != reg.header("content-length"):
                if reg.status == 400 and kind == "manifest":
                    known.append("error-detail")
                elif ours.header("content-length") is None:
                    known.append("apache-head-error-length")
                else:
                    problems.append(f"HEAD Content-Length {ours.header('content-length')}, registry {reg.header('content-length')}")
            if method == "GET" and reg.body != ours.body:
                er, eo = error_triplet(reg), error_triplet(ours)
                if er and eo and er[:2] == eo[:2] and er[0] == "MANIFEST_INVALID":
                    known.append("error-detail")
                else:
                    problems.append(f"error body {ours.body[:200]!r}, registry {reg.body[:200]!r}")
        return problems, known

    def compare_not_modified(self, reg, ours, problems):
        """A 304: the registry's validators and digest (blobs), no type, no body."""
        known = []
        for h in ("docker-content-digest", "etag", "cache-control", "content-type"):
            if ours.all(h) != reg.all(h):
                problems.append(f"304 {h} {ours.all(h)}, registry {reg.all(h)}")
        if ours.body:
            problems.append("304 with a body")
        if ours.all("content-length") != reg.all("content-length"):
            if ours.all("content-length") == ["0"]:
                known.append("nginx-304-length")
            else:
                problems.append(f"304 Content-Length {ours.all('content-length')}, registry {reg.all('content-length')}")
        return problems, known

    def check_conditional(self, label, path, kind, values, combos=("no Accept",)):
        """GET and HEAD with each If-None-Match value, against the registry (not the
        nginx without njs: it differs in Accept only)."""
        for combo in combos:
            lines = ACCEPTS[combo]
            for value in values:
                headers = [("Accept", a) for a in lines] + [("If-None-Match", value)]
                for method in ("GET", "HEAD"):
                    reg = request(self.reg.port, method, path, headers)
                    for name, port in self.servers.items():
                        if name == "nginx-plain":
                            continue
                        ours = request(port, method, path, headers)
                        problems, known = self.compare(reg, ours, kind, method=method, inm=value)
                        self.report.check(f"{name} {method} {label} [{combo}] If-None-Match: {value[:24]}", problems, known)

    def known_status_difference(self, reg, ours, kind, inm=None):
        # HEAD answers have no body: judge them by status and type alone.
        eo = error_triplet(ours) or (None, None, None)
        head = not ours.body
        if kind == "manifest" and inm == "*" and reg.status == 200 and ours.status == 304:
            return "nginx-inm-star"
        if kind == "manifest" and reg.status == 0 and ours.status == 400 and (head or eo[0] == "MANIFEST_INVALID"):
            return "no-rootfs"
        return None

    def compare_schema1(self, reg, ours):
        problems = []
        if mask_signatures(reg.body) != mask_signatures(ours.body):
            problems.append(f"schema1 differs outside signature/protected ({len(ours.body)} bytes, registry {len(reg.body)})")
        ok, dgst, kids, err = self.verify(ours.body)
        if not ok:
            problems.append(f"libtrust-verify rejects ours: {err}")
        else:
            if dgst != reg.header("docker-content-digest"):
                problems.append(f"payload digest {dgst} != registry Docker-Content-Digest {reg.header('docker-content-digest')}")
            if kids != [SIGNING_KEY_KID]:
                problems.append(f"signed by {kids}")
        return problems

    # -- manifests -----------------------------------------------------------

    def check_manifest(self, label, repo, ref, combos, by_digest):
        path = f"/v2/{repo}/manifests/{ref}"
        for combo in combos:
            lines = ACCEPTS[combo]
            reg = self.reg_req("GET", path, lines)
            for name, port in self.servers.items():
                ours = request(port, "GET", path, [("Accept", a) for a in lines])
                if name == "nginx-plain":
                    # nginx 1.22 without njs: judged on the first Accept line only.
                    first = self.reg_req("GET", path, lines[:1])
                    problems, known = self.compare(first, ours, "manifest", by_digest)
                    if (first.status, first.header("content-type")) != (reg.status, reg.header("content-type")):
                        known.append("first-accept-line")
                else:
                    problems, known = self.compare(reg, ours, "manifest", by_digest)
                self.report.check(f"{name} GET {repo}:{ref} [{combo}] {label}".rstrip(), problems, known)
            if combo in HEAD_ACCEPTS and (not by_digest or combo == "no Accept"):
                reg_head = self.reg_req("HEAD", path, lines)
                for name, port in self.servers.items():
                    if name == "nginx-plain":
                        continue
                    ours = request(port, "HEAD", path, [("Accept", a) for a in lines])
                    problems, known = self.compare(reg_head, ours, "manifest", by_digest, method="HEAD")
                    if ours.status == 200:
                        got = request(port, "GET", path, [("Accept", a) for a in lines])
                        if ours.header("content-length") != str(len(got.body)):
                            problems.append(f"HEAD Content-Length {ours.header('content-length')}, GET has {len(got.body)} bytes")
                    self.report.check(f"{name} HEAD {repo}:{ref} [{combo}]", problems, known)

    def check_manifest_conditional(self, repo, ref):
        """If-None-Match with the digests a client could hold: the revision, the digest
        served to this client, bare, quoted, weak, listed, and `*`."""
        path = f"/v2/{repo}/manifests/{ref}"
        revision = self.reg_req("GET", path, [MT_SCHEMA2, MT_LIST, MT_OCI, MT_OCI_INDEX]).header("docker-content-digest")
        served = self.reg_req("GET", path).header("docker-content-digest")
        values = ["*", f'"{ZERO_DIGEST}"']
        for d in dict.fromkeys(x for x in (revision, served) if x):
            values += [f'"{d}"', d, f'W/"{d}"', f'"{d}", "x"']
        self.check_conditional(f"{repo}:{ref}", path, "manifest", values, combos=HEAD_ACCEPTS)

    def referenced_blobs(self, repo, digest):
        r = self.reg_req("GET", f"/v2/{repo}/manifests/{digest}", [MT_SCHEMA2, MT_LIST, MT_OCI, MT_OCI_INDEX])
        if r.status != 200:
            return []
        doc = json.loads(r.body)
        if "fsLayers" in doc:
            return [l["blobSum"] for l in doc["fsLayers"]]
        out = [doc["config"]["digest"]] if "config" in doc else []
        return out + [l["digest"] for l in doc.get("layers", [])]

    # -- blobs -----------------------------------------------------------------

    def check_blob(self, repo, digest, ranges):
        path = f"/v2/{repo}/blobs/{digest}"
        reg = self.reg_req("GET", path)
        for name, port in self.servers.items():
            ours = request(port, "GET", path)
            problems, known = self.compare(reg, ours, "blob")
            if ours.status == 200 and sha256(ours.body) != digest:
                problems.append(f"body hashes to {sha256(ours.body)}")
            self.report.check(f"{name} GET {repo}@{digest[:19]} blob", problems, known)
            head = request(port, "HEAD", path)
            problems, known = self.compare(self.reg_req("HEAD", path), head, "blob", method="HEAD")
            self.report.check(f"{name} HEAD {repo}@{digest[:19]} blob", problems, known)
            if ranges:
                values = [f'"{digest}"', digest, f'W/"{digest}"', "*", f'"x", "{digest}"', f'x, "{digest}"',
                          f'"{ZERO_DIGEST}"']
                self.check_conditional(f"{repo}@{digest[:19]} blob", path, "blob", values)
            if ranges and reg.status == 200:
                for rng in ("bytes=0-9", "bytes=5-", "bytes=-7", f"bytes={len(reg.body) + 100}-"):
                    rr = request(self.reg.port, "GET", path, [("Range", rng)])
                    ro = request(port, "GET", path, [("Range", rng)])
                    problems, known = self.compare(rr, ro, "blob")
                    self.report.check(f"{name} GET {repo}@{digest[:19]} blob Range {rng}", problems, known)

    # -- everything of a fixture --------------------------------------------------

    def check_repo(self, repo, pushed):
        r = self.reg_req("GET", f"/v2/{repo}/tags/list")
        for name, port in self.servers.items():
            problems, known = self.compare(r, request(port, "GET", f"/v2/{repo}/tags/list"), "tags")
            self.report.check(f"{name} GET {repo} tags/list", problems, known)
        tags = json.loads(r.body)["tags"] if r.status == 200 else []
        for tag in sorted(tags or []):
            self.check_manifest("", repo, tag, [c for c, _ in TAG_ACCEPTS], by_digest=False)
            self.check_manifest_conditional(repo, tag)
        # Every stored revision, and deleted ones (the registry 404s them).
        digests = set(pushed)
        rev_dir = os.path.join(self.reg.root, "docker/registry/v2/repositories", repo, "_manifests/revisions/sha256")
        if os.path.isdir(rev_dir):
            digests |= {"sha256:" + h for h in os.listdir(rev_dir)}
        blobs = set()
        for d in sorted(digests):
            self.check_manifest("(digest)", repo, d, DIGEST_ACCEPTS, by_digest=True)
            self.check_manifest_conditional(repo, d)
            blobs |= set(self.referenced_blobs(repo, d))
        layers_dir = os.path.join(self.reg.root, "docker/registry/v2/repositories", repo, "_layers/sha256")
        if os.path.isdir(layers_dir):
            blobs |= {"sha256:" + h for h in os.listdir(layers_dir)}
        for i, b in enumerate(sorted(blobs)):
            self.check_blob(repo, b, ranges=(i == 0))

    def check_catalog(self):
        """/v2/_catalog: pages (n, last, Link, the default and maximum page sizes, the
        order), every page of a walk along the Link headers, HEAD (405). The store holds
        more repositories than a default page (push_catalog_filler)."""
        total = len(json.loads(self.reg_req("GET", "/v2/_catalog?n=1000").body)["repositories"])
        self.report.check(f"registry _catalog holds {total} repositories, more than the default page of 100",
                          [] if total > 100 else [f"only {total}"])
        queries = ["", "?n=0", "?n=1", "?n=2", "?n=1000", "?n=1001", "?n=%2B3", "?n=-1", "?n=x", "?n=99999999999999999999",
                   "?last=", "?last=a", "?last=a-", "?last=a%2Fb", "?n=2&last=a%2Fb%2Fc", "?last=zzz", "?n=3&last=oci",
                   "?n=2&n=5", "?last=single&n=1", "?n=1;x", "?n=2&last=%zz", "?last=catalog%2Ffill-05",
                   "?n=100&last=catalog"]
        for q in queries:
            path = f"/v2/_catalog{q}"
            reg = self.reg_req("GET", path)
            for name, port in self.servers.items():
                ours = request(port, "GET", path)
                problems, known = self.compare(reg, ours, "catalog")
                if ours.all("link") != reg.all("link"):
                    problems.append(f"Link {ours.all('link')}, registry {reg.all('link')}")
                self.report.check(f"{name} GET {path}", problems, known)
        for n in (1, 7, 50, 100):
            for name, port in self.servers.items():
                path, pages, problems = f"/v2/_catalog?n={n}", 0, []
                while path and pages < 500:
                    reg, ours = self.reg_req("GET", path), request(port, "GET", path)
                    if (reg.status, reg.body, reg.all("link")) != (ours.status, ours.body, ours.all("link")):
                        problems.append(f"{path}: {ours.status} {ours.body[:80]!r} {ours.all('link')}, "
                                        f"registry {reg.status} {reg.body[:80]!r} {reg.all('link')}")
                        break
                    link = reg.header("link")
                    path = link[1:link.index(">")] if link else None
                    pages += 1
                self.report.check(f"{name} _catalog walk n={n} ({pages} pages)", problems)
        reg = self.reg_req("HEAD", "/v2/_catalog")
        for name, port in self.servers.items():
            problems, known = self.compare(reg, request(port, "HEAD", "/v2/_catalog"), "other", method="HEAD")
            self.report.check(f"{name} HEAD /v2/_catalog", problems, known)

    def check_negative(self, repo):
        """Unknown tag, digest, blob, repository; the root and unrouted paths."""
        cases = [
            ("GET", "/v2/", "other"),
            ("HEAD", "/v2/", "other"),
            ("GET", f"/v2/{repo}/manifests/no-such-tag", "manifest"),
            ("HEAD", f"/v2/{repo}/manifests/no-such-tag", "manifest"),
            ("GET", f"/v2/{repo}/manifests/{ZERO_DIGEST}", "manifest"),
            ("HEAD", f"/v2/{repo}/manifests/{ZERO_DIGEST}", "manifest"),
            ("HEAD", "/v2/no/such/repo/tags/list", "tags"),
            ("HEAD", f"/v2/{repo}/nothing", "other"),
            ("GET", "/v2/no/such/repo/manifests/latest", "manifest"),
            ("GET", f"/v2/{repo}/blobs/{ZERO_DIGEST}", "blob"),
            ("HEAD", f"/v2/{repo}/blobs/{ZERO_DIGEST}", "blob"),
            ("GET", "/v2/no/such/repo/tags/list", "tags"),
            ("GET", f"/v2/{repo}/nothing", "other"),
            ("GET", "/nothing", "other"),
        ]
        for method, path, kind in cases:
            reg = self.reg_req(method, path)
            for name, port in self.servers.items():
                problems, known = self.compare(reg, request(port, method, path), kind, method=method)
                self.report.check(f"{name} {method} {path}", problems, known)
        # If-None-Match with a digest the repository does not hold: the registry answers
        # 304 without looking.
        path = f"/v2/{repo}/manifests/{ZERO_DIGEST}"
        for method in ("GET", "HEAD"):
            reg = request(self.reg.port, method, path, [("If-None-Match", f'"{ZERO_DIGEST}"')])
            for name, port in self.servers.items():
                ours = request(port, method, path, [("If-None-Match", f'"{ZERO_DIGEST}"')])
                if name == "apache" and reg.status == 304 and ours.status == 404:
                    problems, known = [], ["apache-inm-unknown-digest"]
                else:
                    problems, known = self.compare(reg, ours, "manifest", method=method)
                self.report.check(f"{name} {method} {path} If-None-Match: itself", problems, known)
        # Upper-case hex: nothing is served anywhere; Debian's registry build
        # answers 500/400 where upstream 2.8.2 answers 404.
        up = "sha256:" + "A" * 64
        for path in (f"/v2/{repo}/manifests/{up}", f"/v2/{repo}/blobs/{up}"):
            reg = self.reg_req("GET", path)
            for name, port in self.servers.items():
                ours = request(port, "GET", path)
                problems = [] if ours.status == 404 and reg.status != 200 else [f"{ours.status} (registry {reg.status})"]
                self.report.check(f"{name} GET {path}", problems, ["digest-grammar"] if reg.status != 404 else [])
        # Read-only.
        for name, port in self.servers.items():
            ours = request(port, "POST", f"/v2/{repo}/blobs/uploads/")
            e = error_triplet(ours)
            problems = [] if ours.status == 405 and e and e[0] == "UNSUPPORTED" else [f"{ours.status} {ours.body[:100]!r}"]
            self.report.check(f"{name} POST /v2/{repo}/blobs/uploads/ refused", problems, ["unsupported-method"])


# ---------------------------------------------------------------------------
# clients


def skopeo(env, policy, args, timeout=60):
    p = subprocess.run(["skopeo", "--policy", policy, *args], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace").strip()


def dir_contents(path):
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out[name] = f.read()
    return out


def check_skopeo(reg, servers, workdir, report):
    """skopeo through each server gives what it gets through the registry."""
    hosts = {"registry": f"127.0.0.1:{reg.port}", **{n: f"127.0.0.1:{p}" for n, p in servers.items()}}
    env, policy = skopeo_env(workdir, hosts.values())
    refs = ["single:latest", "multi:latest", "a/b/c:latest", "oci/image:latest", "legacy/schema1:latest",
            "several/tags:moving"]
    copies = ["single:latest", "multi:latest", "a/b/c:latest"]
    for ref in refs:
        rc, want, err = skopeo(env, policy, ["inspect", "--raw", "--tls-verify=false", f"docker://{hosts['registry']}/{ref}"])
        for name, host in hosts.items():
            if name in ("registry", "nginx-plain"):
                continue
            rc2, got, err2 = skopeo(env, policy, ["inspect", "--raw", "--tls-verify=false", f"docker://{host}/{ref}"])
            problems = []
            if rc != 0:
                problems.append(f"through the registry: {err}")
            elif rc2 != 0:
                problems.append(f"exit {rc2}: {err2}")
            elif want != got and not (want.startswith(b"{") and mask_signatures(want) == mask_signatures(got)):
                problems.append(f"raw manifest differs: {got[:100]!r} vs {want[:100]!r}")
            report.check(f"{name} skopeo inspect --raw {ref}", problems)
    for ref in copies:
        os.makedirs(os.path.join(workdir, "copies"), exist_ok=True)
        base = os.path.join(workdir, "copies", ref.replace("/", "_").replace(":", "_"))
        want_dir = base + "-registry"
        rc, _, err = skopeo(env, policy, ["copy", "--quiet", "--src-tls-verify=false",
                                          f"docker://{hosts['registry']}/{ref}", f"dir:{want_dir}"])
        for name, host in hosts.items():
            if name in ("registry", "nginx-plain"):
                continue
            got_dir = f"{base}-{name}"
            rc2, _, err2 = skopeo(env, policy, ["copy", "--quiet", "--src-tls-verify=false",
                                                f"docker://{host}/{ref}", f"dir:{got_dir}"])
            problems = []
            if rc != 0:
                problems.append(f"copy from the registry: {err}")
            elif rc2 != 0:
                problems.append(f"exit {rc2}: {err2}")
            else:
                want, got = dir_contents(want_dir), dir_contents(got_dir)
                if sorted(want) != sorted(got):
                    problems.append(f"files {sorted(got)} vs {sorted(want)}")
                else:
                    for fname in want:
                        if want[fname] != got[fname]:
                            problems.append(f"{fname} differs")
                    m = json.loads(got["manifest.json"])
                    for d in [m.get("config", {}).get("digest")] + [l["digest"] for l in m.get("layers", [])]:
                        if d and sha256(got.get(d.split(":", 1)[1], b"")) != d:
                            problems.append(f"blob {d[:19]} does not hash to its digest")
            report.check(f"{name} skopeo copy {ref} to dir: equals the registry's copy", problems)


PULL_STYLES = {
    # Docker's distribution client: one Accept line per type; trusts the header.
    "docker": (ACCEPTS["lines as Docker (schema1 first)"], False),
    # containerd: one line with */*; trusts the header only with a Content-Length.
    "containerd": (ACCEPTS["all+*/* one line (containerd)"], True),
}


def pull_requests(port, repo, tag, style):
    """The manifest requests a pull makes: HEAD by tag; the digest from
    Docker-Content-Digest, else GET by tag and hash the body; then GET by digest
    (and the linux/amd64 child of an index by digest). Returns (count, digests)."""
    lines, wants_length = PULL_STYLES[style]
    accept = [("Accept", a) for a in lines]
    head = request(port, "HEAD", f"/v2/{repo}/manifests/{tag}", accept)
    count, digests = 1, []
    digest = head.header("docker-content-digest")
    if head.status != 200:
        return count, digests
    if not digest or (wants_length and head.header("content-length") is None):
        got = request(port, "GET", f"/v2/{repo}/manifests/{tag}", accept)
        count += 1
        digest = sha256(got.body)
    while digest:
        got = request(port, "GET", f"/v2/{repo}/manifests/{digest}", accept)
        count += 1
        digests.append(digest)
        digest = None
        if got.status == 200 and got.header("content-type") in (MT_LIST, MT_OCI_INDEX):
            for m in json.loads(got.body).get("manifests", []):
                p = m.get("platform", {})
                if (p.get("os"), p.get("architecture")) == ("linux", "amd64"):
                    digest = m["digest"]
                    break
    return count, digests


def check_pull_requests(reg, servers, report, refs):
    """A Docker-style and a containerd-style pull cost as many requests through the
    servers as through the registry, and resolve the same digests."""
    for repo, tag in refs:
        for style in PULL_STYLES:
            want = pull_requests(reg.port, repo, tag, style)
            for name, port in servers.items():
                if name == "nginx-plain":
                    continue
                got = pull_requests(port, repo, tag, style)
                problems = [] if got == want else [f"{got[0]} requests for {got[1]}, registry {want[0]} for {want[1]}"]
                report.check(f"{name} {style}-style pull {repo}:{tag}: {want[0]} requests", problems)


def check_old_client(reg, name, port, verifier, report, tags):
    """An old Docker engine: GET by tag with no Accept, verify the libtrust
    signature, fetch every fsLayers blob and check its digest."""
    for repo, tag in tags:
        r = request(port, "GET", f"/v2/{repo}/manifests/{tag}")
        want = request(reg.port, "GET", f"/v2/{repo}/manifests/{tag}")
        problems = []
        if r.status != 200 or r.header("content-type") != MT_SCHEMA1_SIGNED:
            problems.append(f"answered {r.status} {r.header('content-type')}")
        else:
            ok, dgst, kids, err = libtrust_verify(verifier, r.body)
            if not ok:
                problems.append(f"signature: {err}")
            elif dgst != want.header("docker-content-digest"):
                problems.append(f"payload digest {dgst}, registry {want.header('docker-content-digest')}")
            for blob in dict.fromkeys(l["blobSum"] for l in json.loads(r.body)["fsLayers"]):
                b = request(port, "GET", f"/v2/{repo}/blobs/{blob}")
                rb = request(reg.port, "HEAD", f"/v2/{repo}/blobs/{blob}")
                if b.status != rb.status:
                    problems.append(f"blob {blob[:19]}: {b.status}, registry {rb.status}")
                elif b.status == 200 and sha256(b.body) != blob:
                    problems.append(f"blob {blob[:19]} hashes to {sha256(b.body)[:19]}")
        report.check(f"{name} old client pull {repo}:{tag}", problems)


# ---------------------------------------------------------------------------


CATALOG_FILLER = 90


def push_catalog_filler(reg, count):
    """More repositories than the catalog's default page (100) holds: `count` tiny
    images (a config, no layers) named catalog/fill-NN, so that the default page size
    and the pages after it are compared with the registry's."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    for i in range(count):
        repo = f"catalog/fill-{i:02d}"
        digest = reg.push_blob(repo, config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MT_SCHEMA2, "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
            "digest": digest}, "layers": []}).encode()
        reg.push_manifest(repo, "latest", MT_SCHEMA2, manifest)


def resolve_binary(arg):
    for c in [arg] if arg else [os.environ.get("REGISTRYFS_BIN") or "", os.path.join(REPO_ROOT, "target", "debug", "registryfs")]:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    raise SetupError("registryfs binary not found: cargo build, or pass --registryfs PATH")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registryfs", help="registryfs binary (default: $REGISTRYFS_BIN, target/debug/registryfs)")
    ap.add_argument("--filter", action="append", default=[], help="only fixtures whose name contains SUBSTR")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--serve", action="store_true", help="set up, print the ports, wait for Ctrl-C (or --timeout)")
    ap.add_argument("--no-plain-nginx", action="store_true", help="skip nginx without njs")
    ap.add_argument("--timeout", type=int, default=600, help="abort (and clean up) after this many seconds")
    args = ap.parse_args(argv)

    try:
        binary = resolve_binary(args.registryfs)
        verifier = ensure_verifier()
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    selected = [fx for fx in fixtures.all_fixtures() if not args.filter or any(s in fx.name for s in args.filter)]

    stop_cleanly_on_signals(args.timeout)

    report = Report()
    tmp = tempfile.mkdtemp(prefix="registryfs-httpd-")
    # nginx's and Apache's workers (nobody, www-data) must reach the mount.
    os.chmod(tmp, 0o711)
    reg = Registry(tmp)
    mount = None
    started = []
    t0 = time.monotonic()
    interrupted = False
    try:
        reg.start()
        pushed = {}
        for fx in selected:
            for i, p in enumerate(fx.pushes):
                fixtures.push(reg, p, os.path.join(tmp, "layouts", f"{fx.name}-{i}"))
                if p.via == "delete":
                    pushed.setdefault(p.repo, set()).add(p.obj.digest)
                elif p.via != "skopeo-v2s1":
                    for o in [p.obj] + p.obj.children():
                        pushed.setdefault(p.repo, set()).add(o.digest)
        if not args.filter:
            push_catalog_filler(reg, CATALOG_FILLER)
        print(f"# registry pid {reg.proc.pid} on {reg.host}; pushed in {time.monotonic() - t0:.1f}s", flush=True)

        mp = os.path.join(tmp, "mnt")
        mount = Mount(binary, reg.root, mp, ["--signing-key", reg.keyfile, "--allow-foreign-layers"],
                      os.path.join(tmp, "mount.log")).start()
        servers = {}
        nginx = Nginx(binary, os.path.join(tmp, "nginx"), mp, njs=True)
        started.append(nginx)
        servers["nginx"] = nginx.start().port
        apache = Apache(binary, os.path.join(tmp, "apache"), mp)
        started.append(apache)
        servers["apache"] = apache.start().port
        if not args.no_plain_nginx:
            plain = Nginx(binary, os.path.join(tmp, "nginx-plain"), mp, njs=False)
            started.append(plain)
            servers["nginx-plain"] = plain.start().port
        print("# " + ", ".join(f"{n} on 127.0.0.1:{p}" for n, p in servers.items()) + f"; mount {mp}", flush=True)
        # The Crane layout of the same store, served by Apache with Pulp's directives.
        crane_mp = os.path.join(tmp, "mnt-crane")
        crane_mount = Mount(binary, reg.root, crane_mp,
                            ["--signing-key", reg.keyfile, "--allow-foreign-layers", "--layout", "crane",
                             "--crane-url", crane.URL_PATH], os.path.join(tmp, "mount-crane.log")).start()
        started.insert(0, crane_mount)
        pulp = crane.PulpApache(os.path.join(tmp, "apache-pulp"), crane_mp)
        started.append(pulp)
        pulp.start()
        print(f"# crane layout at {crane_mp}, Pulp-configured apache on 127.0.0.1:{pulp.port}", flush=True)
        if args.serve:
            print("# serving; Ctrl-C to stop", flush=True)
            while True:
                time.sleep(1)

        checker = Checker(reg, servers, verifier, report)
        for fx in selected:
            for repo in fx.repos():
                checker.check_repo(repo, pushed.get(repo, set()))
        if selected:
            checker.check_negative(selected[0].repos()[0])
            if not args.filter:
                checker.check_catalog()
            no_nginx_plain = {n: p for n, p in servers.items() if n != "nginx-plain"}
            if not args.filter:
                check_skopeo(reg, no_nginx_plain, tmp, report)
            old = []
            for fx in selected:
                for repo in fx.repos():
                    r = checker.reg_req("GET", f"/v2/{repo}/tags/list")
                    for tag in sorted(json.loads(r.body)["tags"] or []) if r.status == 200 else []:
                        g = checker.reg_req("GET", f"/v2/{repo}/manifests/{tag}")
                        if g.status == 200 and g.header("content-type") == MT_SCHEMA1_SIGNED:
                            old.append((repo, tag))
            check_old_client(reg, "nginx", servers["nginx"], verifier, report, old)
            check_pull_requests(reg, servers, report, [(r, t) for r, t in
                                [("single", "latest"), ("multi", "latest"), ("a/b/c", "latest"),
                                 ("oci/image", "latest"), ("oci/index", "latest"), ("legacy/schema1", "latest")]
                                if any(r in fx.repos() for fx in selected)])
            repos_refs = []
            for fx in selected:
                for repo in fx.repos():
                    r = checker.reg_req("GET", f"/v2/{repo}/tags/list")
                    tags = sorted(json.loads(r.body)["tags"] or []) if r.status == 200 else []
                    rev_dir = os.path.join(reg.root, "docker/registry/v2/repositories", repo, "_manifests/revisions/sha256")
                    digests = sorted("sha256:" + h for h in os.listdir(rev_dir)) if os.path.isdir(rev_dir) else []
                    repos_refs.append((repo, tags, digests))
            crane.check_crane(checker, report, crane_mp, pulp.port, repos_refs)
    except KeyboardInterrupt as e:
        interrupted = True
        report.check("harness", [f"interrupted: {e or 'SIGINT'}"])
    except (RegistryError, ServerError, SetupError, OSError, subprocess.TimeoutExpired) as e:
        report.check("harness setup", [e])
    finally:
        signal.alarm(0)
        for s in reversed(started):
            s.stop()
        if mount is not None:
            mount.stop()
        reg.stop()
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if report.known:
        print("# known differences from registry 2.8.2 (docs/httpd.md):")
        for k, whats in sorted(report.known.items()):
            print(f"#   {k} ({len(whats)} checks, e.g. {whats[0]}): {KNOWN.get(k, '?')}")
    return finish("httpd", report, t0, interrupted)


if __name__ == "__main__":
    sys.exit(main())
