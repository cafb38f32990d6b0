"""Deterministic fixture images for the registryfs oracle.

Every byte that ends up in the registry is produced here: tiny gzip'd tar
layers (fixed mtimes/owners, gzip mtime 0) and config JSON written out by hand
as bytes, so each fixture controls the exact input of distribution's schema1
conversion (key order, whitespace, escapes, number spellings, timestamps).

A fixture is a list of pushes (repo, tag, image or index, transport) plus
what we expect the registry to answer for a plain GET by tag. The
expectations are sanity checks that the fixture really exercises the case it
is named after (they come from the fact sheets in shared/docs); the actual
registryfs checks compare against whatever the registry answers.
"""

import gzip
import io
import json
import re
import tarfile

from registry import (
    MT_LIST,
    MT_OCI,
    MT_OCI_INDEX,
    MT_SCHEMA2,
    sha256_digest,
)

MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

EMPTY_TAR_GZ_DIGEST = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"


# ---------------------------------------------------------------------------
# building blocks


class Layer:
    """A gzip'd tar layer. Foreign layers are never uploaded (clients fetch
    them from their URLs), so their bytes exist only to give a digest."""

    def __init__(self, seed, foreign_urls=None, media_type=MT_LAYER):
        self.seed = seed
        raw = _tar({f"layer/{seed}.txt": f"content of {seed}\n".encode()})
        self.diff_id = sha256_digest(raw)
        # mtime=0 and a fixed level make the gzip bytes reproducible.
        self.data = gzip.compress(raw, compresslevel=9, mtime=0)
        self.digest = sha256_digest(self.data)
        self.size = len(self.data)
        self.foreign_urls = foreign_urls
        self.media_type = MT_FOREIGN if foreign_urls else media_type

    def descriptor(self):
        d = {"mediaType": self.media_type, "size": self.size, "digest": self.digest}
        if self.foreign_urls:
            d["urls"] = list(self.foreign_urls)
        return d


def _tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1700000000
            ti.mode = 0o644
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


class DescriptorLayer:
    """A foreign layer known only by its descriptor (digest, size, urls).

    The registry never checks that a foreign layer's blob exists, so this lets
    a fixture use made-up digests, e.g. the worked example's sha256:aaaa...;
    the conversion only uses the digest string."""

    def __init__(self, digest, size, urls, diff_id):
        self.digest, self.size, self.foreign_urls, self.diff_id = digest, size, urls, diff_id
        self.media_type = MT_FOREIGN
        self.data = None

    def descriptor(self):
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest, "urls": list(self.foreign_urls)}


def diff_ids_json(layers):
    """The JSON array text of the layers' diff_ids, for splicing into
    hand-written configs."""
    return ("[" + ",".join(f'"{l.diff_id}"' for l in layers) + "]").encode()


def fill(template, layers, **subst):
    """Replace @DIFF_IDS@ (and @NAME@ for each keyword) in a bytes template.

    @...@ markers instead of str.format because configs are full of braces."""
    out = template.replace(b"@DIFF_IDS@", diff_ids_json(layers))
    for k, v in subst.items():
        out = out.replace(b"@" + k.upper().encode() + b"@", v if isinstance(v, bytes) else v.encode())
    leftover = re.search(rb"@[A-Z_]+@", out)
    assert leftover is None, f"unfilled marker {leftover.group()!r}"
    return out


def simple_config(arch, layers, history, os_name="linux", variant=None, created="2024-01-02T03:04:05Z"):
    """An ordinary config: compact JSON in Docker's usual key order.

    history: list of (created_by, empty_layer) pairs.
    """
    doc = {"architecture": arch}
    if variant:
        doc["variant"] = variant
    doc["config"] = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]}
    doc["created"] = created
    hist = []
    for i, (created_by, empty) in enumerate(history):
        h = {"created": f"2024-01-02T03:04:{i % 60:02d}Z", "created_by": created_by}
        if empty:
            h["empty_layer"] = True
        hist.append(h)
    doc["history"] = hist
    doc["os"] = os_name
    doc["rootfs"] = {"type": "layers", "diff_ids": [l.diff_id for l in layers]}
    return json.dumps(doc, separators=(",", ":")).encode()


def _pretty(doc):
    # 3-space indent like the docker CLI's manifests; any exact bytes would do,
    # since stored manifests are served as pushed.
    return json.dumps(doc, indent=3).encode()


class Image:
    """A single-platform manifest (schema2 or OCI) with its config and layers."""

    def __init__(self, config, layers, oci=False, platform=None, omit_media_type=False):
        self.config = config
        self.layers = layers
        self.oci = oci
        self.platform = platform  # used when this image is a list/index child
        self.media_type = MT_OCI if oci else MT_SCHEMA2
        cfg_mt = MT_OCI_CONFIG if oci else MT_CONFIG
        descs = []
        for l in layers:
            d = l.descriptor()
            if oci and not l.foreign_urls:
                d["mediaType"] = MT_OCI_LAYER
            descs.append(d)
        doc = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": {"mediaType": cfg_mt, "size": len(config), "digest": sha256_digest(config)},
            "layers": descs,
        }
        if omit_media_type:
            # Allowed for OCI; distribution then classifies by shape (§1 step 5).
            del doc["mediaType"]
        self.manifest = _pretty(doc)
        self.digest = sha256_digest(self.manifest)

    def upload_blobs(self):
        return [self.config] + [l.data for l in self.layers if not l.foreign_urls]

    def all_blob_digests(self):
        return [sha256_digest(self.config)] + [l.digest for l in self.layers]

    def children(self):
        return []


class Index:
    """A Docker manifest list or OCI index over Image children (in order)."""

    def __init__(self, children, oci=False, omit_media_type=False):
        self.children_ = children
        self.oci = oci
        self.media_type = MT_OCI_INDEX if oci else MT_LIST
        entries = []
        for c in children:
            plat = dict(c.platform)
            entries.append({"mediaType": c.media_type, "size": len(c.manifest), "digest": c.digest, "platform": plat})
        doc = {"schemaVersion": 2, "mediaType": self.media_type, "manifests": entries}
        if omit_media_type:
            del doc["mediaType"]
        self.manifest = _pretty(doc)
        self.digest = sha256_digest(self.manifest)

    def upload_blobs(self):
        out = []
        for c in self.children_:
            out += c.upload_blobs()
        return out

    def all_blob_digests(self):
        out = []
        for c in self.children_:
            out += c.all_blob_digests()
        return out

    def children(self):
        return list(self.children_)


class Push:
    """Push obj to repo:tag.

    via:
      "http"       raw blob uploads + manifest PUT with our exact bytes
                   (for crafted cases a client might reject or rewrite);
      "skopeo"     skopeo copy --preserve-digests from an OCI layout;
      "skopeo-v2s1" skopeo copy --format v2s1: skopeo converts to a signed
                   schema1 manifest, which the registry stores unsigned.
    """

    def __init__(self, repo, tag, obj, via="http"):
        self.repo, self.tag, self.obj, self.via = repo, tag, obj, via


class Delete:
    """DELETE /v2/<repo>/manifests/<digest of obj> (needs storage.delete).

    Leaves an empty revisions/<alg>/<hex>/ directory and removes the tags that
    pointed at it (registry-store-layout.md §5); the layer links stay."""

    via = "delete"

    def __init__(self, repo, obj):
        self.repo, self.obj, self.tag = repo, obj, None


class Fixture:
    def __init__(self, name, doc, pushes, expect=None, rfs_args=()):
        self.name = name
        # Extra registryfs options for this fixture's checks (the foreign-layer
        # fixtures need --allow-foreign-layers to behave like distribution,
        # which converts foreign layers without complaint).
        self.rfs_args = list(rfs_args)
        self.doc = doc
        self.pushes = pushes
        # {(repo, tag): {"status": int, "child": digest}} for sanity checks of
        # the plain (no Accept) GET by tag.
        self.expect = expect or {}

    def repos(self):
        out = []
        for p in self.pushes:
            if p.repo not in out:
                out.append(p.repo)
        return out


def L(*seeds, **kw):
    return [Layer(s, **kw) for s in seeds]


# ---------------------------------------------------------------------------
# the fixtures


def fx_single():
    layers = L("single-0")
    img = Image(simple_config("amd64", layers, [("/bin/sh -c #(nop) ADD file:0123abcd in / ", False)]), layers)
    return Fixture(
        "single",
        "one layer, one history entry (skopeo)",
        [Push("single", "latest", img, "skopeo")],
        {("single", "latest"): {"status": 200}},
    )


def fx_throwaway():
    layers = L("throwaway-0", "throwaway-1")
    top_empty = Image(
        simple_config(
            "amd64",
            layers,
            [
                ("/bin/sh -c #(nop) ADD file:aa in / ", False),
                ("/bin/sh -c #(nop)  ENV A=1", True),
                ("/bin/sh -c apk add curl && rm -rf /var/cache/apk/*", False),
                ('/bin/sh -c #(nop)  CMD ["sh"]', True),
            ],
        ),
        layers,
    )
    l2 = L("throwaway-base-empty")
    base_empty = Image(
        simple_config("amd64", l2, [("/bin/sh -c #(nop)  LABEL x=y", True), ("COPY f /f", False)]),
        l2,
    )
    return Fixture(
        "throwaway",
        "empty_layer history entries: top entry empty (throwaway), and a base entry empty",
        [
            Push("throwaway", "latest", top_empty, "skopeo"),
            Push("throwaway", "base-empty", base_empty, "skopeo"),
        ],
        {("throwaway", "latest"): {"status": 200}, ("throwaway", "base-empty"): {"status": 200}},
    )


def fx_nohistory():
    layers = L("nohistory-0")
    base = b'{"architecture":"amd64","config":{"Cmd":["sh"]},"created":"2024-01-01T00:00:00Z",@HIST@"os":"linux","rootfs":{"type":"layers","diff_ids":@DIFF_IDS@}}'
    pushes, expect = [], {}
    for tag, hist in (("absent", b""), ("null", b'"history":null,'), ("empty", b'"history":[],')):
        img = Image(fill(base, layers, hist=hist), layers)
        pushes.append(Push("nohistory", tag, img))
        expect[("nohistory", tag)] = {"status": 400}
    return Fixture("nohistory", "config history absent / null / [] (registry: 400)", pushes, expect)


ESCAPES_CONFIG = (
    # Insignificant whitespace everywhere (dropped in the top v1Compatibility),
    # keys out of order (top level gets sorted, nested order is kept), keys
    # that sort before lowercase ones, and a trailing newline (part of the
    # raw bytes that feed the top v1 id).
    b'{ "architecture" : "amd64",\n'
    b'  "Zed": "upper-case key sorts first", "_u": 1, "a&b": "<tag>&amp;",\n'
    b'  "author": "J\xc3\xa9r\xc3\xb4me \\u00e9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x90\xb3",\n'
    b'  "config": {\n'
    b'    "Labels": {"z": "last", "a": "first", "html": "<script>&</script>",\n'
    b'               "ctl": "\\b\\f\\t\\n\\/\\"", "ls": "a\xe2\x80\xa8b\xe2\x80\xa9c", "del": "x\x7fy",\n'
    b'               "esc": "\\u00e9\\u003c\\ud83d\\udc33"},\n'
    b'    "Env": ["N=1.50e3"],\n'
    b'    "Numbers": [1.50e3, -0, 1E+2, 0.10, 12345678901234567890, -1.0e-7],\n'
    b'    "Nested": {"y": {"b": 2, "a": 1}, "x": null, "t": true, "f": false, "e": {}, "l": []}\n'
    b"  },\n"
    b'  "created": "2024-02-03T04:05:06.789Z",\n'
    b'  "history": [\n'
    b'    {"created": "2024-02-03T04:05:06Z",\n'
    b'     "created_by": "/bin/sh -c echo \'<>&\' \\"quoted\\" back\\\\slash \\b\\f\\t \xe2\x80\xa8 \\u2029 \\u00e9 \xc3\xa9 \xe6\x97\xa5 \x7f",\n'
    b'     "author": "A <a@example.com>", "comment": "c\\u0026d \\ud83d\\udc33 \\/"},\n'
    b'    {"created": "2024-02-03T04:05:07Z", "created_by": "ENV x=1", "empty_layer": true,\n'
    b'     "comment": "lone \\ud800 surrogate"},\n'
    b'    {"created": "2024-02-03T04:05:08Z", "created_by": "RUN true", "author": "\\u2028\\u2029\xe2\x80\xa8"},\n'
    b'    {"created": "2024-02-03T04:05:09Z", "created_by": "CMD [\\"sh\\"]", "empty_layer": true}\n'
    b"  ],\n"
    b'  "os": "linux",\n'
    b'  "rootfs": {"type": "layers", "diff_ids": @DIFF_IDS@}\n'
    b"}\n"
)


def fx_escapes():
    layers = L("escapes-0", "escapes-1")
    img = Image(fill(ESCAPES_CONFIG, layers), layers)
    return Fixture(
        "escapes",
        "unicode, <>&, \\b \\f, raw U+2028, \\u00e9, 1.50e3, nested key order, whitespace",
        [Push("escapes", "latest", img)],
        {("escapes", "latest"): {"status": 200}},
    )


def fx_invalid_utf8():
    layers = L("invalid-utf8-0")
    cfg = fill(
        b'{"architecture":"amd64","bad":"x\xff\xfey\xc3","config":{"Labels":{"k\xe9":"\xed\xa0\x80"}},'
        b'"history":[{"created":"2024-01-01T00:00:00Z","created_by":"bad \xff byte \xc3\x28"},'
        b'{"created":"2024-01-01T00:00:01Z","created_by":"top","empty_layer":true}],'
        b'"os":"linux","rootfs":{"type":"layers","diff_ids":@DIFF_IDS@}}',
        layers,
    )
    img = Image(cfg, layers)
    return Fixture(
        "invalid-utf8",
        "invalid UTF-8 bytes in top-level and history strings (Go replaces them with U+FFFD)",
        [Push("invalid-utf8", "latest", img)],
        {("invalid-utf8", "latest"): {"status": 200}},
    )


def fx_gojson_quirks():
    # Go's encoding/json matches struct fields case-insensitively; the top
    # v1Compatibility deletes only the exact keys "rootfs"/"history".
    l1 = L("quirks-0", "quirks-1")
    casefold = fill(
        b'{"architecture":"arm64","architecture":"amd64","os":"linux",'
        b'"History":[{"Created":"2024-01-01T00:00:00Z","Created_By":"RUN a","AUTHOR":"me","Comment":"c"},'
        b'{"CREATED":"2024-01-01T00:00:01Z","created_by":"RUN b","Empty_Layer":false}],'
        b'"ROOTFS":{"Type":"layers","DIFF_IDS":@DIFF_IDS@},"config":null,"id":"overwritten"}',
        l1,
    )
    l2 = L("quirks-single")
    single = fill(
        # One history entry: parent stays "" so the config's own "parent" is
        # kept, the top entry is not empty so "throwaway" is kept, and the top
        # id hash input has two spaces in a row.
        b'{"architecture":"amd64","history":[{"created":"2024-01-01T00:00:00Z","created_by":"ADD x /"}],'
        b'"id":"x","os":"linux","parent":"config-parent","rootfs":{"type":"layers","diff_ids":@DIFF_IDS@},'
        b'"throwaway":"kept"}',
        l2,
    )
    l3 = L("quirks-longs")
    longs = fill(
        # U+017F LATIN SMALL LETTER LONG S folds to 's' in Go's key matching,
        # so "hi\xc5\xbftory" still fills the history field.
        b'{"architecture":"amd64","hi\xc5\xbftory":[{"created":"2024-01-01T00:00:00Z","created_by":"ADD y /"}],'
        b'"os":"linux","rootfs":{"type":"layers","diff_ids":@DIFF_IDS@}}',
        l3,
    )
    l4 = L("quirks-nulls")
    nulls = fill(
        b'{"architecture":null,"history":[{"created":null,"created_by":null,"author":null,"comment":null,"empty_layer":null},'
        b'{"created":"2024-01-01T00:00:00Z","created_by":"top","empty_layer":true}],'
        b'"os":"linux","rootfs":{"type":"layers","diff_ids":@DIFF_IDS@,"base_layer":null}}',
        l4,
    )
    l5 = L("quirks-manifest-keys")
    folded = Image(
        fill(
            b'{"architecture":"amd64","history":[{"created":"2024-01-01T00:00:00Z","created_by":"ADD z /"}],'
            b'"os":"linux","rootfs":{"type":"layers","diff_ids":@DIFF_IDS@}}',
            l5,
        ),
        l5,
    )
    # The manifest's own keys fold as well: registry 2.8.2 reads "\u017fchemaVersion"
    # as schemaVersion and "MEDIATYPE" as mediaType (the first of each is the top level).
    folded.manifest = folded.manifest.replace(b'"schemaVersion"', '"\u017fchemaVersion"'.encode(), 1)
    folded.manifest = folded.manifest.replace(b'"mediaType"', b'"MEDIATYPE"', 1)
    folded.digest = sha256_digest(folded.manifest)
    return Fixture(
        "gojson-quirks",
        "case-insensitive keys, duplicate keys, config id/parent/throwaway, long-s folding, nulls",
        [
            Push("gojson/quirks", "casefold", Image(casefold, l1)),
            Push("gojson/quirks", "single-entry", Image(single, l2)),
            Push("gojson/quirks", "long-s", Image(longs, l3)),
            Push("gojson/quirks", "nulls", Image(nulls, l4)),
            Push("gojson/quirks", "manifest-keys", folded),
        ],
        {
            ("gojson/quirks", "casefold"): {"status": 200},
            ("gojson/quirks", "single-entry"): {"status": 200},
            ("gojson/quirks", "long-s"): {"status": 200},
            ("gojson/quirks", "nulls"): {"status": 200},
            ("gojson/quirks", "manifest-keys"): {"status": 200},
        },
    )


ODD_CREATED = [
    b'"2023-01-01T9:00:00Z"',  # 1-digit hour is accepted by Go 1.19
    b'"2023-01-01T09:00:00,5Z"',  # comma fraction
    b'"2023-01-01T09:00:00+05:30"',
    b'"2023-01-01T09:00:00.1234567891Z"',  # 10 digits: truncated to 9
    b'"2023-01-01T09:00:00+00:00"',  # zero offset printed as Z
    b'"2023-01-01T09:00:00-00:00"',
    b'"2023-01-01T09:00:00.120Z"',
    b'"2023-01-01T09:00:00.000Z"',
    b'"2023-01-01T23:59:59.999999999-11:45"',
    b'"2024-02-29T00:00:00Z"',
    b'"2023-01-01T09:00:00+24:00"',  # offset hour is not range-checked
    b"null",  # zero time
    None,  # key absent: zero time
]


def fx_timestamps():
    layers = L("timestamps-0")
    entries = [b'{"created":"2023-01-01T00:00:00Z","created_by":"ADD base /"}']
    for i, c in enumerate(ODD_CREATED):
        created = b"" if c is None else b'"created":' + c + b","
        entries.append(b"{" + created + b'"created_by":"step %d","empty_layer":true}' % i)
    entries.append(b'{"created":"2023-01-01T10:00:00Z","created_by":"top","empty_layer":true}')
    odd = fill(
        b'{"architecture":"amd64","created":"2023-01-01T10:00:00Z","history":['
        + b",".join(entries)
        + b'],"os":"linux","rootfs":{"type":"layers","diff_ids":@DIFF_IDS@}}',
        layers,
    )
    pushes = [Push("timestamps", "odd", Image(odd, layers))]
    expect = {("timestamps", "odd"): {"status": 200}}
    bad = {
        "empty-string": b'""',
        "compact-offset": b'"2023-01-01T09:00:00+0530"',
        "lower-t": b'"2023-01-01t09:00:00Z"',
        "feb30": b'"2023-02-30T09:00:00Z"',
        "json-escape": b'"2023-01-01T09:00:00\\u005a"',  # escapes are not decoded
        "space-sep": b'"2023-01-01 09:00:00Z"',
    }
    for tag, c in bad.items():
        cfg = fill(
            b'{"architecture":"amd64","history":[{"created":'
            + c
            + b',"created_by":"x"},{"created":"2023-01-01T00:00:00Z","empty_layer":true}],'
            b'"os":"linux","rootfs":{"type":"layers","diff_ids":@DIFF_IDS@}}',
            layers,
        )
        pushes.append(Push("timestamps", tag, Image(cfg, layers)))
        expect[("timestamps", tag)] = {"status": 400}
    return Fixture("timestamps", "odd but accepted created forms, and rejected ones (400)", pushes, expect)


def fx_windows():
    base = Layer("windows-base", foreign_urls=["https://mcr.invalid/windows/base.tar.gz"])
    layers = [base, Layer("windows-1")]
    cfg = fill(
        b'{"architecture":"amd64","config":{"Cmd":["cmd"]},"created":"2020-01-02T00:00:00Z",'
        b'"history":[{"created":"2020-01-01T00:00:00Z","created_by":"Apply image 10.0.17763.1234"},'
        b'{"created":"2020-01-02T00:00:00Z","created_by":"cmd /S /C echo hi"}],'
        b'"os":"windows","os.version":"10.0.17763.1234",'
        b'"rootfs":{"type":"layers","diff_ids":@DIFF_IDS@,"base_layer":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}',
        layers,
    )
    return Fixture(
        "windows",
        "Windows rootfs.base_layer (entry 0 gets a sha384-derived parent), foreign base layer",
        [Push("windows", "ltsc2019", Image(cfg, layers))],
        {("windows", "ltsc2019"): {"status": 200}},
        rfs_args=["--allow-foreign-layers"],
    )


def fx_history_count():
    three = L("hc-0", "hc-1", "hc-2")
    hist_tpl = b'{"architecture":"amd64","history":[@H@],"os":"linux","rootfs":{"type":"layers","diff_ids":@DIFF_IDS@}}'
    fewer = fill(
        hist_tpl,
        three,
        h=b'{"created":"2024-01-01T00:00:00Z","created_by":"ADD a"},{"created":"2024-01-01T00:00:01Z","created_by":"CMD","empty_layer":true}',
    )
    fewer_top = fill(
        hist_tpl,
        three,
        h=b'{"created":"2024-01-01T00:00:00Z","created_by":"ADD a"},{"created":"2024-01-01T00:00:01Z","created_by":"ADD b"}',
    )
    one = L("hc-only")
    too_many = fill(
        hist_tpl,
        one,
        h=b'{"created":"2024-01-01T00:00:00Z","created_by":"ADD a"},{"created":"2024-01-01T00:00:01Z","created_by":"ADD b"}',
    )
    mismatch_cfg = fill(
        b'{"architecture":"amd64","history":[{"created":"2024-01-01T00:00:00Z","created_by":"ADD a"}],'
        b'"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111",'
        b'"sha256:2222222222222222222222222222222222222222222222222222222222222222"]}}',
        one,
    )
    zero = fill(
        b'{"architecture":"amd64","history":[{"created":"2024-01-01T00:00:00Z","created_by":"LABEL a=b","empty_layer":true},'
        b'{"created":"2024-01-01T00:00:01Z","created_by":"CMD","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}',
        [],
    )
    no_rootfs = b'{"architecture":"amd64","history":[{"created":"2024-01-01T00:00:00Z","created_by":"ADD a"}],"os":"linux"}'
    R = "history/count"
    return Fixture(
        "history-count",
        "fewer non-empty history entries than layers (upper layers dropped), too many (400), "
        "diff_ids/layers mismatch (400), zero layers",
        [
            Push(R, "fewer", Image(fewer, three)),
            Push(R, "fewer-top", Image(fewer_top, three)),
            Push(R, "too-many", Image(too_many, one)),
            Push(R, "diffid-mismatch", Image(mismatch_cfg, one)),
            Push(R, "zero-layers", Image(zero, [])),
            Push(R, "no-rootfs", Image(no_rootfs, one)),
        ],
        {
            (R, "fewer"): {"status": 200},
            (R, "fewer-top"): {"status": 200},
            (R, "too-many"): {"status": 400},
            (R, "diffid-mismatch"): {"status": 400},
            (R, "zero-layers"): {"status": 200},
            # rootfs absent: Go nil-pointer panic, connection closed, no answer
            (R, "no-rootfs"): {"status": 0},
        },
    )


def fx_many():
    n = 42
    layers = L(*[f"many-{i:02d}" for i in range(n)])
    hist = []
    for i in range(n):
        hist.append((f"/bin/sh -c echo layer {i} > /l{i}", False))
        if i % 7 == 3:
            hist.append((f"/bin/sh -c #(nop)  ENV STEP={i}", True))
    img = Image(simple_config("amd64", layers, hist), layers)
    return Fixture(
        "many",
        f"{n} layers with interleaved empty-layer entries (skopeo)",
        [Push("many/layers", "latest", img, "skopeo")],
        {("many/layers", "latest"): {"status": 200}},
    )


def fx_nested():
    def img(seed):
        ls = L(seed)
        return Image(simple_config("amd64", ls, [(f"ADD {seed} /", False)]), ls)

    return Fixture(
        "nested",
        "nested repository names: a/b/c (skopeo), library/x, and a (repo a contains repo a/b/c)",
        [
            Push("a/b/c", "latest", img("nested-abc"), "skopeo"),
            Push("library/x", "latest", img("nested-libx")),
            Push("a", "top", img("nested-a")),
        ],
        {("a/b/c", "latest"): {"status": 200}, ("library/x", "latest"): {"status": 200}, ("a", "top"): {"status": 200}},
    )


def _platform_image(seed, arch, os_name="linux", variant=None, oci=False):
    ls = L(seed)
    cfg = simple_config(arch, ls, [(f"ADD {seed} /", False), ('CMD ["sh"]', True)], os_name=os_name, variant=variant)
    plat = {"architecture": arch, "os": os_name}
    if variant:
        plat["variant"] = variant
    return Image(cfg, ls, oci=oci, platform=plat)


def fx_multi():
    amd64 = _platform_image("multi-amd64", "amd64")
    latest = Index(
        [
            _platform_image("multi-arm64", "arm64", variant="v8"),
            _platform_image("multi-armv7", "arm", variant="v7"),
            _platform_image("multi-win", "amd64", os_name="windows"),
            amd64,
        ]
    )
    noamd64 = Index(
        [
            _platform_image("noamd64-arm64", "arm64"),
            _platform_image("noamd64-win", "amd64", os_name="windows"),
            _platform_image("noamd64-386", "386"),
        ]
    )
    v3 = _platform_image("variant-amd64-v3", "amd64", variant="v3")
    variant = Index(
        [
            _platform_image("variant-arm64", "arm64"),
            v3,
            _platform_image("variant-amd64", "amd64"),
        ]
    )
    return Fixture(
        "multi",
        "Docker manifest lists: linux/amd64 not first; no linux/amd64 (404); amd64 variant v3 listed first",
        [
            Push("multi", "latest", latest, "skopeo"),
            Push("multi", "noamd64", noamd64, "skopeo"),
            Push("multi", "variant", variant, "skopeo"),
        ],
        {
            ("multi", "latest"): {"status": 200, "child": amd64.digest},
            ("multi", "noamd64"): {"status": 404},
            ("multi", "variant"): {"status": 200, "child": v3.digest},
        },
    )


def fx_oci():
    ls = L("oci-0")
    img = Image(simple_config("amd64", ls, [("ADD oci /", False)]), ls, oci=True)
    idx = Index(
        [
            _platform_image("oci-index-arm64", "arm64", oci=True),
            _platform_image("oci-index-amd64", "amd64", oci=True),
        ],
        oci=True,
    )
    return Fixture(
        "oci",
        "OCI image manifest and OCI index (no Accept: 404 from the OCI gate)",
        [Push("oci/image", "latest", img, "skopeo"), Push("oci/index", "latest", idx, "skopeo")],
        {("oci/image", "latest"): {"status": 404}, ("oci/index", "latest"): {"status": 404}},
    )


def fx_oci_edge():
    ls = L("oci-edge-0")
    bare = Image(simple_config("amd64", ls, [("ADD oci-edge /", False)]), ls, oci=True, omit_media_type=True)
    bare_index = Index(
        [
            _platform_image("oci-edge-index-amd64", "amd64", oci=True),
            _platform_image("oci-edge-index-arm64", "arm64", oci=True),
        ],
        oci=True,
        omit_media_type=True,
    )
    oci_child = _platform_image("list-oci-child-amd64", "amd64", oci=True)
    docker_list = Index([_platform_image("list-oci-child-arm64", "arm64"), oci_child])
    return Fixture(
        "oci-edge",
        "OCI manifest and index without mediaType (the index skips the OCI gate), "
        "Docker list whose linux/amd64 child is OCI (served as is to every client)",
        [
            Push("oci/edge", "manifest-no-mediatype", bare),
            Push("oci/edge", "index-no-mediatype", bare_index),
            Push("oci/list-child", "latest", docker_list),
        ],
        {
            ("oci/edge", "manifest-no-mediatype"): {"status": 404},
            # served as an OCI index even to a client that accepts nothing
            ("oci/edge", "index-no-mediatype"): {"status": 200, "content_type": MT_OCI_INDEX, "digest": bare_index.digest},
            ("oci/list-child", "latest"): {"status": 200, "content_type": MT_OCI, "digest": oci_child.digest},
        },
    )


def fx_foreign():
    layers = [Layer("foreign-0"), Layer("foreign-1", foreign_urls=["https://example.invalid/foreign-1.tar.gz", "http://mirror.invalid/f1"])]
    cfg = simple_config("amd64", layers, [("ADD base /", False), ("ADD foreign /", False)])
    return Fixture(
        "foreign",
        "foreign layer (urls) on top of a normal layer: its blob is not in the registry",
        [Push("foreign", "latest", Image(cfg, layers))],
        {("foreign", "latest"): {"status": 200}},
        rfs_args=["--allow-foreign-layers"],
    )


def fx_tags():
    def img(seed):
        ls = L(seed)
        return Image(simple_config("amd64", ls, [(f"ADD {seed} /", False)]), ls)

    a, b, c = img("tags-a"), img("tags-b"), img("tags-c")
    R = "several/tags"
    return Fixture(
        "tags",
        "several tags on one manifest, and a tag moved from one manifest to another",
        [
            Push(R, "v1", a),
            Push(R, "v2", a),
            Push(R, "latest", a),
            Push(R, "moving", b),
            Push(R, "moving", c),
        ],
        {(R, "moving"): {"status": 200}, (R, "v1"): {"status": 200}},
    )


def fx_deleted():
    def img(seed):
        ls = L(seed)
        return Image(simple_config("amd64", ls, [(f"ADD {seed} /", False)]), ls)

    gone, kept, old, new = img("deleted-gone"), img("deleted-kept"), img("deleted-old"), img("deleted-new")
    R = "deleted"
    return Fixture(
        "deleted",
        "manifest DELETE: a tag's only manifest deleted (tag dir removed, empty revision dir left), "
        "and a moved tag's old manifest deleted (its index/ entry stays)",
        [
            Push(R, "gone", gone),
            Push(R, "kept", kept),
            Push(R, "moved", old),
            Push(R, "moved", new),
            Delete(R, gone),
            Delete(R, old),
        ],
        {(R, "kept"): {"status": 200}, (R, "moved"): {"status": 200}},
    )


def fx_stored_schema1():
    ls = L("legacy-0")
    img = Image(simple_config("amd64", ls, [("ADD legacy /", False), ("CMD", True)]), ls)
    return Fixture(
        "stored-schema1",
        "a real stored schema1 manifest (skopeo --format v2s1; registry re-signs on GET)",
        [Push("legacy/schema1", "latest", img, "skopeo-v2s1")],
        {("legacy/schema1", "latest"): {"status": 200}},
    )


# schema1-conversion.md §12: the exact 726-byte config of the worked example.
WORKED_EXAMPLE_CONFIG = (
    b'{"architecture":"amd64","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],'
    b'"Cmd":["sh"]},"created":"2023-05-19T20:19:24.08704963Z","history":[{"created":"2023-05-19T20:19:23.908246913Z",'
    b'"created_by":"/bin/sh -c #(nop) ADD file:4f1c in / "},{"created":"2023-05-19T20:19:24Z","created_by":'
    b'"RUN apk add curl \\u0026\\u0026 rm -rf /var/cache/apk/*","comment":"buildkit.dockerfile.v0"},'
    b'{"created":"2023-05-19T20:19:24.08704963Z","created_by":"/bin/sh -c #(nop)  CMD [\\"sh\\"]","empty_layer":true}],'
    b'"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111",'
    b'"sha256:2222222222222222222222222222222222222222222222222222222222222222"]}}'
)
WORKED_EXAMPLE_DIGEST = "sha256:8e5a0ce9569ec389724987ee54f11092885e1b43aa7c84fa6929cd9670bec409"


def fx_worked_example():
    # The layers sha256:aaaa... / sha256:bbbb... do not exist as blobs; as
    # foreign layers the registry accepts the manifest anyway.
    layers = [
        DescriptorLayer("sha256:" + "a" * 64, 1, ["https://example.invalid/a"], "sha256:" + "1" * 64),
        DescriptorLayer("sha256:" + "b" * 64, 1, ["https://example.invalid/b"], "sha256:" + "2" * 64),
    ]
    assert sha256_digest(WORKED_EXAMPLE_CONFIG) == "sha256:9a9df0ab688eec93b2eac38df64dd6e5dfcd420c6535e34b8e67552d1e57f2c4"
    return Fixture(
        "worked-example",
        "schema1-conversion.md §12 worked example (registry must give digest 8e5a0ce9..., 2169 bytes)",
        [Push("library/example", "latest", Image(WORKED_EXAMPLE_CONFIG, layers))],
        {("library/example", "latest"): {"status": 200, "digest": WORKED_EXAMPLE_DIGEST, "length": 2169}},
        rfs_args=["--allow-foreign-layers"],
    )


def all_fixtures():
    return [
        fx_single(),
        fx_throwaway(),
        fx_nohistory(),
        fx_escapes(),
        fx_invalid_utf8(),
        fx_gojson_quirks(),
        fx_timestamps(),
        fx_windows(),
        fx_history_count(),
        fx_many(),
        fx_nested(),
        fx_multi(),
        fx_oci(),
        fx_oci_edge(),
        fx_foreign(),
        fx_tags(),
        fx_deleted(),
        fx_stored_schema1(),
        fx_worked_example(),
    ]


# ---------------------------------------------------------------------------
# the checked-in sample store (scripts/make-sample-store.sh)


def sample_fixtures():
    hello_layers = L("hello-0")
    hello = Image(
        simple_config(
            "amd64",
            hello_layers,
            [("/bin/sh -c #(nop) ADD file:hello in / ", False), ('/bin/sh -c #(nop)  CMD ["/hello"]', True)],
        ),
        hello_layers,
    )
    v1_layers = L("hello-v1")
    hello_v1 = Image(simple_config("amd64", v1_layers, [("/bin/sh -c #(nop) ADD file:hello-v1 in / ", False)], created="2023-06-01T00:00:00Z"), v1_layers)
    multi = Index(
        [
            _platform_image("demo-multi-amd64", "amd64"),
            _platform_image("demo-multi-arm64", "arm64", variant="v8"),
        ]
    )
    return [
        Fixture(
            "sample",
            "samples/store content",
            [
                Push("demo/hello", "latest", hello),
                Push("demo/hello", "v1", hello_v1),
                Push("demo/multi", "latest", multi),
            ],
        )
    ]


def push(reg, p, layout_dir):
    """Push one Push to the registry. Returns the digests of every manifest we
    know was stored (children first), for the sanity checks."""
    obj = p.obj
    if p.via == "delete":
        r = reg.request("DELETE", f"/v2/{p.repo}/manifests/{obj.digest}")
        if r.status != 202:
            raise AssertionError(f"DELETE {p.repo}@{obj.digest}: {r.status} {r.body[:300]!r}")
        return []
    if p.via == "http":
        for c in obj.children():
            for b in c.upload_blobs():
                reg.push_blob(p.repo, b)
            got = reg.push_manifest(p.repo, c.digest, c.media_type, c.manifest)
            assert got == c.digest, (got, c.digest)
        for b in obj.upload_blobs() if not obj.children() else []:
            reg.push_blob(p.repo, b)
        got = reg.push_manifest(p.repo, p.tag, obj.media_type, obj.manifest)
        if got != obj.digest:
            raise AssertionError(f"registry stored {got}, we pushed {obj.digest}")
        return [c.digest for c in obj.children()] + [obj.digest]

    # skopeo needs a source image on disk. skopeo 1.9.3's oci: transport only
    # resolves index.json entries with OCI media types ("no descriptor found
    # for reference" otherwise), so Docker schema2/list images go through the
    # dir: transport instead, which takes any manifest type.
    from registry import write_dir_image, write_oci_layout

    blobs = {}
    for c in obj.children() or [obj]:
        for b in c.upload_blobs():
            blobs[sha256_digest(b)] = b
    if obj.oci:
        for c in obj.children():
            blobs[c.digest] = c.manifest
        blobs[obj.digest] = obj.manifest
        entry = {
            "mediaType": obj.media_type,
            "digest": obj.digest,
            "size": len(obj.manifest),
            "annotations": {"org.opencontainers.image.ref.name": p.tag},
        }
        write_oci_layout(layout_dir, blobs.values(), [entry])
        src = f"oci:{layout_dir}:{p.tag}"
    else:
        write_dir_image(layout_dir, obj.manifest, {c.digest: c.manifest for c in obj.children()}, blobs.values())
        src = f"dir:{layout_dir}"
    if p.via == "skopeo":
        # --preserve-digests makes skopeo fail rather than rewrite a manifest;
        # --all copies every list child (and keeps the list bytes).
        args = ["--preserve-digests"] + (["--all"] if obj.children() else [])
        reg.skopeo_copy(src, p.repo, p.tag, args)
        return [c.digest for c in obj.children()] + [obj.digest]
    if p.via == "skopeo-v2s1":
        reg.skopeo_copy(src, p.repo, p.tag, ["--format", "v2s1"])
        return []
    raise ValueError(p.via)
