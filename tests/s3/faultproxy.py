"""An HTTP proxy on 127.0.0.1 in front of an S3 server that injects faults on demand.

    proxy = FaultProxy(upstream_port).start()
    proxy.mode = "pass" | "503" | "403" | "slow"     (proxy.delay: seconds for "slow")
    proxy.only = lambda method, path: ...            (faults only for these requests)
    ...
    proxy.stop()

One request per client connection: the request goes upstream unchanged but for a
`Connection: close` header (SigV4 signs neither it nor anything the proxy touches), and
the answer comes back with `Connection: close`, so the mode in force when a request
arrives decides its fate and a keep-alive connection cannot carry a request past a
mode change. "503" answers `503 SlowDown` and "403" `403 AccessDenied` (S3 XML errors)
without asking the server; "slow" waits `delay` seconds before passing the request on.
With `only` set, requests it says no to pass. `requests` counts the requests seen,
`by_path` per method and path (for caching checks).
Standard library only.
"""

import socket
import threading

ERROR_BODIES = {
    "503": (b"503 Service Unavailable", b"SlowDown", b"Please reduce your request rate (injected)"),
    "403": (b"403 Forbidden", b"AccessDenied", b"Access Denied (injected)"),
}


def read_head(sock):
    """The bytes up to and including the blank line, and what came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def with_close(head):
    """`head` with its Connection header replaced by `Connection: close`."""
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n"


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


class FaultProxy:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.delay = 0.0
        self.only = None
        self.requests = 0
        self.by_path = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = None
        self._thread = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._listener:
            self._listener.close()

    def count(self, path_part="", method=None):
        """Requests seen whose path contains `path_part` (and of `method`, if given)."""
        with self._lock:
            return sum(n for (m, p), n in self.by_path.items()
                       if path_part in p and method in (None, m))

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            with conn:
                conn.settimeout(30)
                head, rest = read_head(conn)
                if head is None:
                    return
                body = rest
                while len(body) < content_length(head):
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    body += chunk
                method, path = head.split(b"\r\n", 1)[0].decode(errors="replace").split(" ")[:2]
                only = self.only
                mode = self.mode if only is None or only(method, path) else "pass"
                with self._lock:
                    self.requests += 1
                    self.by_path[(method, path)] = self.by_path.get((method, path), 0) + 1
                if mode in ERROR_BODIES:
                    status, code, message = ERROR_BODIES[mode]
                    xml = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>' + code + \
                        b"</Code><Message>" + message + b"</Message></Error>"
                    conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/xml\r\n"
                                 b"Content-Length: " + str(len(xml)).encode() + b"\r\nConnection: close\r\n\r\n" + xml)
                    return
                if mode == "slow" and self._stop.wait(self.delay):
                    return
                self._forward(conn, head, body)
        except OSError:
            pass  # the client gave up (a timeout) or the server went away

    def _forward(self, conn, head, body):
        with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30) as up:
            up.sendall(with_close(head) + body)
            answer_head, rest = read_head(up)
            if answer_head is None:
                return
            conn.sendall(with_close(answer_head) + rest)
            while True:
                chunk = up.recv(1 << 20)
                if not chunk:
                    return
                conn.sendall(chunk)

