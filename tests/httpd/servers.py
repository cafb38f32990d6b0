"""Processes for the httpd end-to-end test: a registryfs mount, nginx, Apache.

Each class starts one process bound to 127.0.0.1 (with its own config and
prefix directory under the test's temp dir, never the system's), waits for it
with a timeout, and stops it by PID. Standard library only.
"""

import http.client
import os
import signal
import socket
import subprocess
import time

from harness import stop_process, tail  # noqa: F401 (re-exported for the harnesses)


class ServerError(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.header_list = headers
        self.headers = {}
        for k, v in headers:
            self.headers.setdefault(k.lower(), v)
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def all(self, name):
        return [v for k, v in self.header_list if k.lower() == name.lower()]

    def __repr__(self):
        return "<%d %s %d bytes>" % (self.status, self.header("content-type"), len(self.body))


def request(port, method, path, headers=(), timeout=30):
    """One HTTP/1.1 request with exactly these header lines (names may repeat;
    http.client adds only Host and Accept-Encoding: identity). A connection
    closed without an answer gives status 0."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        try:
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return Response(0, [], b"")
        try:
            body = resp.read()
        except http.client.IncompleteRead as e:
            # Go's ServeContent keeps the blob's Content-Length on a 416.
            body = e.partial
        return Response(resp.status, resp.getheaders(), body)
    finally:
        conn.close()


def wait_http(port, proc, log_path, timeout=15, path="/v2/"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"exited with {proc.returncode}:\n" + tail(log_path))
        try:
            if request(port, "GET", path, timeout=2).status:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise ServerError("no answer in time:\n" + tail(log_path))


def run_text(cmd, timeout=60):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if p.returncode != 0:
        raise ServerError(" ".join(cmd) + ": " + p.stderr.decode("utf-8", "replace").strip())
    return p.stdout.decode()


def start_on_a_free_port(server, launch, path="/v2/"):
    """Starts `launch(port)` (which returns the server's Popen) on a fresh loopback port
    until it answers HTTP, at most 3 times: another process can take a free port before
    the server binds it. Sets server.port and server.proc; server.stop() cleans up a
    failed try."""
    last = None
    for _ in range(3):
        server.port = free_port()
        server.proc = launch(server.port)
        try:
            wait_http(server.port, server.proc, server.log_path, path=path)
            return server
        except ServerError as e:
            last = e
            server.stop()
    raise last


def mounted(path):
    """Whether something is mounted at `path` (/proc/self/mountinfo: a mount whose
    daemon died is there too, while a stat of it fails with ENOTCONN and
    os.path.ismount says no)."""
    path = os.path.abspath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ")[4] == path for line in f if line.count(" ") > 4)


class Mount:
    """`registryfs mount STORE MOUNTPOINT --allow-other` in the foreground."""

    def __init__(self, binary, store, mountpoint, args, log_path, mount_args=()):
        """`args` go before `mount` (global flags), `mount_args` after it."""
        self.binary, self.store, self.mountpoint = binary, store, mountpoint
        self.args = list(args)
        self.mount_args = list(mount_args)
        self.log_path = log_path
        self.proc = None
        self._log = None

    def start(self, timeout=20):
        os.makedirs(self.mountpoint, exist_ok=True)
        self._log = open(self.log_path, "ab")
        cmd = [self.binary, *self.args, "mount", self.store, self.mountpoint, "--allow-other", *self.mount_args]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"registryfs mount exited with {self.proc.returncode}:\n" + tail(self.log_path))
            if os.path.ismount(self.mountpoint):
                return self
            time.sleep(0.05)
        raise ServerError("registryfs mount: not mounted in time:\n" + tail(self.log_path))

    def stop(self):
        proc, self.proc = self.proc, None
        # SIGTERM unmounts and exits; a mount left behind is detached lazily.
        stop_process(proc, signal.SIGTERM, timeout=10)
        if mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], capture_output=True, timeout=10)
        if self._log:
            self._log.close()
            self._log = None


class Nginx:
    """nginx -p PREFIX -c PREFIX/nginx.conf, config from `registryfs httpd-config
    nginx --full` (optionally with the njs module)."""

    def __init__(self, binary, prefix, root, njs):
        self.binary, self.prefix, self.root, self.njs = binary, prefix, root, njs
        self.port = None
        self.proc = None
        self.conf = os.path.join(prefix, "nginx.conf")
        self.log_path = os.path.join(prefix, "error.log")

    def start(self, timeout=15):
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        extra = []
        if self.njs:
            js = os.path.join(self.prefix, "registryfs.js")
            with open(js, "w") as f:
                f.write(run_text([self.binary, "httpd-config", "njs"]))
            extra = ["--njs", js]

        def launch(port):
            conf = run_text(
                [self.binary, "httpd-config", "nginx", "--full", "--root", self.root,
                 "--listen", f"127.0.0.1:{port}", *extra]
            )
            # Two workers: enough for the test, less than the default "auto".
            conf = conf.replace("worker_processes auto;", "worker_processes 2;")
            with open(self.conf, "w") as f:
                f.write(conf)
            return subprocess.Popen(
                ["nginx", "-p", self.prefix, "-c", self.conf, "-e", self.log_path, "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"),
                start_new_session=True,
            )

        return start_on_a_free_port(self, launch)

    def stop(self):
        proc, self.proc = self.proc, None
        # SIGTERM: fast shutdown of the master and its workers.
        stop_process(proc, signal.SIGTERM)


class Apache:
    """apache2 -d PREFIX -f PREFIX/apache2.conf -DFOREGROUND, config from
    `registryfs httpd-config apache --full`."""

    def __init__(self, binary, prefix, root):
        self.binary, self.prefix, self.root = binary, prefix, root
        self.port = None
        self.proc = None
        self.conf = os.path.join(prefix, "apache2.conf")
        self.log_path = os.path.join(prefix, "error.log")

    def start(self, timeout=15):
        os.makedirs(self.prefix, exist_ok=True)

        def launch(port):
            conf = run_text(
                [self.binary, "httpd-config", "apache", "--full", "--root", self.root,
                 "--listen", f"127.0.0.1:{port}"]
            )
            with open(self.conf, "w") as f:
                f.write(conf)
            # Debian's apache2 reads APACHE_* from /etc/apache2/envvars only
            # through apache2ctl; our config uses none of them.
            env = {k: v for k, v in os.environ.items() if not k.startswith("APACHE_")}
            return subprocess.Popen(
                ["apache2", "-d", self.prefix, "-f", self.conf, "-DFOREGROUND"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"),
                env=env, start_new_session=True,
            )

        return start_on_a_free_port(self, launch)

    def stop(self):
        proc, self.proc = self.proc, None
        # SIGTERM to the parent stops its children too (graceful-stop would wait).
        stop_process(proc, signal.SIGTERM)
