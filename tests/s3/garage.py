"""A single-node Garage (a real S3-compatible server) on loopback, for the S3 tests.

    g = Garage(workdir, binary).start()   # or: with Garage(workdir, binary) as g:
    g.endpoint, g.region, g.access_key_id, g.secret_access_key, g.bucket
    g.aws_env()        # AWS_* variables for a client of this bucket
    g.client()         # s3client.S3Client signed with the key
    g.stop(); g.start()  # stop and start again on the same data, ports and key

start() writes its own config into `workdir` (replication factor 1, lmdb or sqlite
metadata, a generated rpc_secret, S3 API / RPC / admin API on free 127.0.0.1 ports),
starts `garage server`, and the first time assigns and applies the layout, imports a
key and creates a bucket the key may read, write and own. The server is stopped by
its PID (SIGTERM, then SIGKILL), also when start() fails. Standard library only.

The binary comes from scripts/install-garage.sh (find_garage()).
"""

import os
import secrets
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "oracle"))

from harness import SetupError, stop_process, tail  # noqa: E402
from registry import free_port  # noqa: E402
from s3client import S3Client  # noqa: E402


class GarageError(Exception):
    pass


def find_garage():
    """The garage binary: $GARAGE_BIN, else what scripts/install-garage.sh prints
    (instant when the cached build exists, a ~10 minute build otherwise)."""
    binary = os.environ.get("GARAGE_BIN")
    if not binary:
        script = os.path.join(REPO_ROOT, "scripts", "install-garage.sh")
        p = subprocess.run([script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise SetupError(f"{script} failed (exit {p.returncode})")
        binary = p.stdout.decode().strip().splitlines()[-1]
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise SetupError(f"garage binary {binary!r} is not an executable file")
    return binary


class Garage:
    def __init__(
        self,
        workdir,
        binary,
        bucket="registry",
        region="garage",
        db_engine="lmdb",
        log_name="garage.log",
    ):
        if db_engine not in ("lmdb", "sqlite"):
            raise ValueError(f"db_engine must be lmdb or sqlite, not {db_engine!r}")
        self.workdir = os.path.abspath(workdir)
        self.binary = binary
        self.bucket = bucket
        self.region = region
        self.db_engine = db_engine
        self.config_path = os.path.join(self.workdir, "garage.toml")
        self.log_path = os.path.join(self.workdir, log_name)
        # Garage's key format: "GK" + 12 bytes hex, secret 32 bytes hex. Generated
        # here and imported, so nothing has to be parsed out of CLI output.
        self.access_key_id = "GK" + secrets.token_hex(12)
        self.secret_access_key = secrets.token_hex(32)
        self.s3_port = self.rpc_port = self.admin_port = None
        self.node_id = None
        self.proc = None
        self.initialized = False
        # Seconds the last start() took (server start, and the first time layout,
        # key and bucket), until the bucket answered an S3 request.
        self.start_seconds = None
        self._log = None

    # ---- what clients need --------------------------------------------------

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def aws_env(self):
        """The standard AWS variables a client of this bucket needs."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def export_aws_env(self, endpoint=None):
        """Sets this process's environment (and so its children's) to reach the bucket
        through only the standard variables (`endpoint` instead of Garage's, e.g. a
        proxy), without the ones that would add to or override them."""
        os.environ.update(self.aws_env())
        if endpoint:
            os.environ["AWS_ENDPOINT_URL"] = endpoint
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            os.environ.pop(name, None)

    def client(self, timeout=30):
        return S3Client(self.endpoint, self.region, self.access_key_id, self.secret_access_key, timeout)

    # ---- lifecycle -------------------------------------------------------------

    def _write_config(self):
        os.makedirs(os.path.join(self.workdir, "meta"), exist_ok=True)
        os.makedirs(os.path.join(self.workdir, "data"), exist_ok=True)
        self.s3_port, self.rpc_port, self.admin_port = free_port(), free_port(), free_port()
        config = f"""\
metadata_dir = "{self.workdir}/meta"
data_dir = "{self.workdir}/data"
db_engine = "{self.db_engine}"
replication_factor = 1
# A test server: losing its data in a power cut does not matter, speed does.
metadata_fsync = false
data_fsync = false

rpc_bind_addr = "127.0.0.1:{self.rpc_port}"
rpc_public_addr = "127.0.0.1:{self.rpc_port}"
rpc_secret = "{secrets.token_hex(32)}"

[s3_api]
s3_region = "{self.region}"
api_bind_addr = "127.0.0.1:{self.s3_port}"

[admin]
api_bind_addr = "127.0.0.1:{self.admin_port}"
admin_token = "{secrets.token_hex(16)}"
"""
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(config)

    def start(self, timeout=60.0):
        """Start the server; the first time also layout, key and bucket. Returns self."""
        started = time.monotonic()
        attempts = 1 if self.initialized else 3
        for attempt in range(attempts):
            if not self.initialized:
                # Fresh ports each attempt: a free port may be taken before we bind it.
                self._write_config()
            self._spawn()
            try:
                self._wait_rpc(started + timeout)
                break
            except GarageError:
                self.stop()
                if attempt == attempts - 1:
                    raise
        try:
            if not self.initialized:
                self._initialize()
                self.initialized = True
            self._wait_bucket(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _spawn(self):
        self._log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GARAGE_")}
        env.setdefault("RUST_LOG", "garage=info")
        self.proc = subprocess.Popen(
            [self.binary, "-c", self.config_path, "server"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            # Own session: a terminal's Ctrl-C reaches us, and we stop it by PID.
            start_new_session=True,
        )

    def cli(self, *args, timeout=30):
        """Run `garage -c CONFIG ARGS...` against this node; its stdout as text."""
        p = subprocess.run(
            [self.binary, "-c", self.config_path, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        if p.returncode != 0:
            raise GarageError(
                f"garage {' '.join(args)} exited with {p.returncode}: "
                + p.stderr.decode("utf-8", "replace").strip()
            )
        return p.stdout.decode("utf-8", "replace")

    def _check_alive(self):
        if self.proc is None or self.proc.poll() is not None:
            code = self.proc.returncode if self.proc else None
            raise GarageError(f"garage server exited with {code}:\n{self.log_tail()}")

    def _wait_rpc(self, deadline):
        """Until the CLI can reach the node over RPC (`garage status`; `garage node id`
        answers from the metadata directory even before the server listens)."""
        last = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self.cli("status", timeout=10)
                self.node_id = self.cli("node", "id", "-q", timeout=10).strip().split("@")[0]
                return
            except (GarageError, subprocess.TimeoutExpired) as e:
                last = e
            time.sleep(0.05)
        raise GarageError(f"garage did not answer RPC in time ({last}):\n{self.log_tail()}")

    def _initialize(self):
        self.cli("layout", "assign", "-z", "dc1", "-c", "1G", self.node_id)
        self.cli("layout", "apply", "--version", "1")
        self.cli("key", "import", "--yes", "-n", "registryfs-test", self.access_key_id, self.secret_access_key)
        self.cli("bucket", "create", self.bucket)
        self.cli("bucket", "allow", "--read", "--write", "--owner", self.bucket, "--key", self.access_key_id)

    def _wait_bucket(self, deadline):
        """Until the S3 API answers for the bucket with the key (the layout is live)."""
        client = self.client(timeout=5)
        last = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                r = client.head_bucket(self.bucket)
                if r.status == 200:
                    return
                last = f"HEAD /{self.bucket}: {r.status}"
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise GarageError(f"garage S3 API not ready in time ({last}):\n{self.log_tail()}")

    def stop(self):
        """Stop the server by its PID: SIGTERM, then SIGKILL after 10 s."""
        proc, self.proc = self.proc, None
        stop_process(proc, timeout=10)
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
