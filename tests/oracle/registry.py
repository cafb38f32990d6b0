"""Start and talk to a real Debian `docker-registry` (distribution 2.8.2) on loopback.

Shared by the oracle harness (run.py) and the sample-store generator
(make_sample_store.py). Standard library only.

Why a real registry: registryfs must reproduce distribution's bytes (stored
manifests, converted+signed schema1 documents, tag lists) from the same
on-disk store. The only trustworthy reference for those bytes is the real
program, run against a store we fill ourselves.
"""

import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse

from harness import stop_process, tail

# The Debian package installs the binary here (dpkg -L docker-registry).
REGISTRY_BIN = os.environ.get("DOCKER_REGISTRY_BIN", "/usr/bin/docker-registry")
SKOPEO_BIN = os.environ.get("SKOPEO_BIN", "skopeo")

# Media types (registry-store-layout.md §8).
MT_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MT_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
MT_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_OCI = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"

# registryfs file names for each served manifest kind, and the media type a
# registry answer must carry for that kind to "exist".
KIND_MEDIA_TYPES = {
    "schema1": MT_SCHEMA1_SIGNED,
    "schema2": MT_SCHEMA2,
    "list": MT_LIST,
    "oci": MT_OCI,
    "oci-index": MT_OCI_INDEX,
}
ACCEPT_KINDS = ["schema2", "list", "oci", "oci-index"]

# The fixed libtrust signing key (schema1-signing.md §9). It is a synthetic
# test key; both the registry and registryfs sign with it so that everything in
# a converted schema1 document except "signature" and "protected" (random
# ECDSA nonce, wall-clock time) must be byte-identical.
SIGNING_KEY_KID = "6HKZ:ISNX:E4LF:3ZZS:X4UD:GOAS:FOMW:FCTB:LEMP:5XDH:3B4P:77HU"
# Written like libtrust's SaveKey: keys sorted, 4-space indent, no trailing
# newline, and *no extra members*: extras would leak into the served jwk
# (schema1-signing.md §5.2) and registryfs would have to copy them too.
SIGNING_KEY_JWK = (
    "{\n"
    '    "crv": "P-256",\n'
    '    "d": "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA",\n'
    '    "kid": "' + SIGNING_KEY_KID + '",\n'
    '    "kty": "EC",\n'
    '    "x": "UVw9brnjlrkE0_7Kf1T9zQzB6Ze_N13KUVrQpsO0A18",\n'
    '    "y": "RTa-OlDzGPv5pUdZAqIhUCvvDVfgjFOyzApW8X2fk1Q"\n'
    "}"
)


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port():
    """Ask the kernel for a free loopback port.

    There is a small race between closing this socket and the registry
    binding it; start() retries with a new port if the registry dies early.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def skopeo_env(workdir, hosts):
    """An environment that keeps skopeo away from the user's config, and its policy file.

    - registries.conf naming only `hosts` as insecure, so skopeo talks plain HTTP to
      them straight away (no mirrors, no TLS probing);
    - an empty auth file, so no stored credentials are looked up or sent;
    - XDG_RUNTIME_DIR/TMPDIR inside `workdir`.
    """
    d = os.path.join(workdir, "skopeo")
    os.makedirs(os.path.join(d, "xdg"), mode=0o700, exist_ok=True)
    regconf = os.path.join(d, "registries.conf")
    with open(regconf, "w") as f:
        for h in hosts:
            f.write(f'[[registry]]\nlocation = "{h}"\ninsecure = true\n')
    auth = os.path.join(d, "auth.json")
    with open(auth, "w") as f:
        f.write('{"auths":{}}')
    policy = os.path.join(d, "policy.json")
    with open(policy, "w") as f:
        f.write('{"default":[{"type":"insecureAcceptAnything"}]}')
    env = dict(os.environ)
    env.update(
        CONTAINERS_REGISTRIES_CONF=regconf,
        REGISTRY_AUTH_FILE=auth,
        XDG_RUNTIME_DIR=os.path.join(d, "xdg"),
        TMPDIR=d,
    )
    return env, policy


class RegistryError(Exception):
    pass


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        # Header names are case-insensitive; keep the last value per name
        # (the registry never repeats the headers we look at).
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "<Response %d %s %d bytes>" % (
            self.status,
            self.header("content-type"),
            len(self.body),
        )


class Registry:
    """One docker-registry process serving a temp filesystem store.

    Use as a context manager, or call start()/stop() yourself in try/finally:
    the process is always stopped by its PID.
    """

    def __init__(self, workdir, log_name="registry.log"):
        self.workdir = os.path.abspath(workdir)
        self.root = os.path.join(self.workdir, "store")
        self.keyfile = os.path.join(self.workdir, "signing-key.json")
        self.config_path = os.path.join(self.workdir, "registry.yml")
        self.log_path = os.path.join(self.workdir, log_name)
        self.port = None
        self.proc = None
        self._log = None

    # ---- lifecycle -------------------------------------------------------

    def _write_files(self):
        os.makedirs(self.root, exist_ok=True)
        # The key file name must end in .json: libtrust's LoadKeyFile picks the
        # JWK parser by extension (schema1-signing.md §7).
        with open(self.keyfile, "w") as f:
            f.write(SIGNING_KEY_JWK)
        os.chmod(self.keyfile, 0o600)
        config = f"""\
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: "{self.root}"
  delete:
    enabled: true
  # No background purger walking _uploads while we read the store.
  maintenance:
    uploadpurging:
      enabled: false
http:
  # Loopback only: nothing outside this machine may reach it.
  addr: "127.0.0.1:{self.port}"
  secret: registryfs-oracle-local-only
compatibility:
  schema1:
    # Fixed key so the converted documents are comparable (see SIGNING_KEY_JWK).
    signingkeyfile: "{self.keyfile}"
    # Accept schema1 pushes, so one fixture can store a real schema1 manifest.
    enabled: true
validation:
  manifests:
    urls:
      # Foreign-layer URLs are rejected unless allowed (schema1-conversion.md §13).
      allow:
        - "^https?://"
"""
        with open(self.config_path, "w") as f:
            f.write(config)

    def start(self, timeout=20.0):
        if not (os.path.isfile(REGISTRY_BIN) and os.access(REGISTRY_BIN, os.X_OK)):
            raise RegistryError(
                f"{REGISTRY_BIN} not found: install the Debian package "
                "docker-registry (scripts/install-deps.sh)"
            )
        last_err = None
        for _attempt in range(3):
            self.port = free_port()
            self._write_files()
            # REGISTRY_* environment variables override the config file in
            # distribution; drop any the caller may have set.
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", self.config_path],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                # Own process group: a Ctrl-C in the terminal goes to us, and we
                # decide how to stop the registry (by PID, in stop()).
                start_new_session=True,
            )
            try:
                self._wait_ready(timeout)
                return self
            except RegistryError as e:
                last_err = e
                self.stop()
        raise last_err

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RegistryError(
                    f"docker-registry exited with {self.proc.returncode}:\n" + self.log_tail()
                )
            try:
                r = self.request("GET", "/v2/", timeout=2)
                if r.status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RegistryError("docker-registry did not answer /v2/ in time:\n" + self.log_tail())

    def stop(self):
        """Stop the registry by its PID: SIGTERM, then SIGKILL after 5 s."""
        proc, self.proc = self.proc, None
        stop_process(proc, timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def log_tail(self, n=30):
        return tail(self.log_path, n)

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    # ---- HTTP ------------------------------------------------------------

    def request(self, method, path, headers=(), body=None, timeout=30):
        """One HTTP request with exactly the given headers.

        http.client adds only Host, Accept-Encoding: identity and (for bodies)
        Content-Length; in particular it sends *no* Accept header unless we do,
        which matters: "no Accept" is what triggers schema1 conversion.
        headers is a list of (name, value) pairs so a name may repeat (Docker
        clients send one Accept line per media type).
        """
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=False)
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, resp.getheaders(), data)
        finally:
            conn.close()

    def get_manifest(self, repo, ref, accept=()):
        return self.request(
            "GET", f"/v2/{repo}/manifests/{ref}", [("Accept", a) for a in accept]
        )

    def get_blob(self, repo, digest):
        return self.request("GET", f"/v2/{repo}/blobs/{digest}")

    def get_tags(self, repo):
        return self.request("GET", f"/v2/{repo}/tags/list")

    def push_blob(self, repo, data):
        """Upload a blob with POST (start) + one PUT carrying all bytes.

        The "monolithic PUT" form is what every distribution version accepts.
        """
        digest = sha256_digest(data)
        r = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if r.status == 200:
            return digest
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"")
        if r.status != 202:
            raise RegistryError(f"POST upload {repo}: {r.status} {r.body[:300]!r}")
        loc = urllib.parse.urlsplit(r.header("location"))
        query = loc.query + ("&" if loc.query else "") + "digest=" + urllib.parse.quote(digest)
        r = self.request(
            "PUT",
            f"{loc.path}?{query}",
            [("Content-Type", "application/octet-stream")],
            data,
        )
        if r.status != 201:
            raise RegistryError(f"PUT blob {repo} {digest}: {r.status} {r.body[:300]!r}")
        got = r.header("docker-content-digest")
        if got != digest:
            raise RegistryError(f"blob digest mismatch: pushed {digest}, registry says {got}")
        return digest

    def push_manifest(self, repo, ref, media_type, body):
        """PUT exact manifest bytes; returns the registry's digest for them."""
        r = self.request(
            "PUT", f"/v2/{repo}/manifests/{ref}", [("Content-Type", media_type)], body
        )
        if r.status != 201:
            raise RegistryError(
                f"PUT manifest {repo}:{ref} ({media_type}): {r.status} {r.body[:500]!r}"
            )
        return r.header("docker-content-digest")

    # ---- skopeo ----------------------------------------------------------

    def skopeo_env(self):
        """skopeo's environment for this registry (see the module's skopeo_env)."""
        return skopeo_env(self.workdir, [self.host])

    def skopeo_copy(self, src, repo, tag, extra_args=(), timeout=120):
        """skopeo copy SRC docker://127.0.0.1:PORT/REPO:TAG."""
        env, policy = self.skopeo_env()
        cmd = [
            SKOPEO_BIN,
            "--policy",
            policy,
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            *extra_args,
            src,
            f"docker://{self.host}/{repo}:{tag}",
        ]
        p = subprocess.run(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        if p.returncode != 0:
            raise RegistryError(
                "skopeo failed: "
                + " ".join(cmd)
                + "\n"
                + p.stderr.decode("utf-8", "replace")
            )


def write_oci_layout(path, blobs, index_entries):
    """Write an OCI image layout directory (registry-store-layout.md §9).

    blobs: iterable of bytes; index_entries: list of descriptor dicts (with
    the org.opencontainers.image.ref.name annotation skopeo resolves tags by).
    """
    if os.path.exists(path):
        shutil.rmtree(path)
    bdir = os.path.join(path, "blobs", "sha256")
    os.makedirs(bdir)
    for data in blobs:
        with open(os.path.join(bdir, hashlib.sha256(data).hexdigest()), "wb") as f:
            f.write(data)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump(
            {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": index_entries}, f
        )


def write_dir_image(path, manifest, child_manifests, blobs):
    """Write a containers/image `dir:` transport directory.

    Layout (containers/image dir transport, version 1.1): `manifest.json`
    holds the top manifest bytes as-is, each list child is
    `<hex>.manifest.json`, and every blob is a file named by its hex digest.
    """
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    with open(os.path.join(path, "version"), "w") as f:
        f.write("Directory Transport Version: 1.1\n")
    with open(os.path.join(path, "manifest.json"), "wb") as f:
        f.write(manifest)
    for digest, data in child_manifests.items():
        with open(os.path.join(path, digest.split(":", 1)[1] + ".manifest.json"), "wb") as f:
            f.write(data)
    for data in blobs:
        with open(os.path.join(path, hashlib.sha256(data).hexdigest()), "wb") as f:
            f.write(data)
