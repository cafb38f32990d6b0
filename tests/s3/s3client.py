"""A minimal S3 client (path-style, AWS Signature Version 4) for the S3 tests.

Standard library only. It exists to look at a bucket exactly as the server answers:
keys in the server's raw order (no re-sorting), ETags as sent, and errors with the
server's own code. Enough for listing, HEAD/GET of objects and probing the server.
"""

import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "oracle"))

from registry import Response  # noqa: E402

S3_XMLNS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Error(Exception):
    """A non-2xx answer: status, the server's error code and message, and the request."""

    def __init__(self, method, target, status, code, message):
        super().__init__(f"{method} {target}: {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _quote(s, safe=""):
    # RFC 3986 unreserved characters stay; everything else is %XX (SigV4's UriEncode).
    return urllib.parse.quote(s, safe="-_.~" + safe)


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class S3Client:
    def __init__(self, endpoint, region, access_key_id, secret_access_key, timeout=30):
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme != "http":
            raise ValueError(f"only plain http endpoints are supported here: {endpoint}")
        self.host, self.port = url.hostname, url.port or 80
        self.region = region
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.timeout = timeout

    def _host_header(self):
        return self.host if self.port == 80 else f"{self.host}:{self.port}"

    def signed_headers(self, method, path, query, payload=b"", content_sha256=True, now=None):
        """Headers carrying a SigV4 signature for one request.

        content_sha256=False leaves out x-amz-content-sha256 (signing the payload hash
        anyway), to see what a server says to a client that does not send it."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        payload_hash = hashlib.sha256(payload).hexdigest()
        headers = {"host": self._host_header(), "x-amz-date": amz_date}
        if content_sha256:
            headers["x-amz-content-sha256"] = payload_hash
        names = sorted(headers)
        canonical_query = "&".join(
            f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items())
        )
        canonical_request = "\n".join(
            [
                method,
                _quote(path, safe="/"),
                canonical_query,
                "".join(f"{n}:{headers[n]}\n" for n in names),
                ";".join(names),
                payload_hash,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        )
        key = _hmac(("AWS4" + self.secret_access_key).encode(), day)
        for part in (self.region, "s3", "aws4_request"):
            key = _hmac(key, part)
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key_id}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return headers

    def request(self, method, path, query=None, payload=b"", content_sha256=True):
        """One signed request; returns a registry.Response whatever the status."""
        query = query or {}
        headers = self.signed_headers(method, path, query, payload, content_sha256)
        target = _quote(path, safe="/")
        if query:
            target += "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            if payload or method in ("PUT", "POST"):
                conn.putheader("content-length", str(len(payload)))
            conn.endheaders(payload or None)
            resp = conn.getresponse()
            return Response(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()

    def checked(self, method, path, query=None, payload=b""):
        """request(), raising S3Error (with the server's code) unless 2xx."""
        r = self.request(method, path, query, payload)
        if not 200 <= r.status < 300:
            code, message = error_code(r.body)
            raise S3Error(method, path, r.status, code, message)
        return r

    # ---- operations -----------------------------------------------------

    def head_bucket(self, bucket):
        return self.request("HEAD", f"/{bucket}")

    def get_object(self, bucket, key):
        return self.checked("GET", f"/{bucket}/{key}")

    def head_object(self, bucket, key):
        return self.checked("HEAD", f"/{bucket}/{key}")

    def put_object(self, bucket, key, data):
        return self.checked("PUT", f"/{bucket}/{key}", payload=data)

    def list_objects(self, bucket, prefix="", delimiter=None, max_keys=None):
        """ListObjectsV2 over all pages, in the server's order.

        Returns (objects, common_prefixes): objects as dicts with key, size, etag,
        last_modified, exactly as the server sent them."""
        objects, prefixes = [], []
        token = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if delimiter:
                query["delimiter"] = delimiter
            if max_keys:
                query["max-keys"] = str(max_keys)
            if token:
                query["continuation-token"] = token
            root = ET.fromstring(self.checked("GET", f"/{bucket}", query).body)
            for c in root.findall(S3_XMLNS + "Contents"):
                objects.append(
                    {
                        "key": c.findtext(S3_XMLNS + "Key"),
                        "size": int(c.findtext(S3_XMLNS + "Size")),
                        "etag": c.findtext(S3_XMLNS + "ETag"),
                        "last_modified": c.findtext(S3_XMLNS + "LastModified"),
                    }
                )
            for p in root.findall(S3_XMLNS + "CommonPrefixes"):
                prefixes.append(p.findtext(S3_XMLNS + "Prefix"))
            if root.findtext(S3_XMLNS + "IsTruncated") != "true":
                return objects, prefixes
            token = root.findtext(S3_XMLNS + "NextContinuationToken")


def error_code(body):
    """(Code, Message) from an S3 XML error body, or ("", raw text)."""
    try:
        root = ET.fromstring(body)
        return root.findtext("Code") or "", root.findtext("Message") or ""
    except ET.ParseError:
        return "", body[:200].decode("utf-8", "replace")
