"""The Crane layout end to end: `registryfs --layout crane mount`, served by Apache
with Pulp's own httpd directives for the published tree, and Crane's redirect
decisions (pulp/crane crane/views/v2.py, metadata version 4) made here from the
app files the mount shows. Compared with registry 2.8.2's answers.

Crane itself (Python 2, Flask, python-rhsm) is not packaged for Debian 12, so its
redirect choice is re-stated in crane_redirect() below from its documented logic:
  list   if the client accepts lists and the ref is in manifest_list_data;
  amd64  for a tag in manifest_list_amd64_tags: manifests/<v>/<digest> to clients
         accepting schema2, manifests/1/<digest> if v is 1, else manifests/1/<tag>;
  2      if the client accepts schema2 and the ref is in schema2_data;
  1      otherwise;
and blobs/tags/list go to url + the rest of the path.
"""

import json
import os
import subprocess

from servers import request, start_on_a_free_port, stop_process

MT_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MT_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
MT_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_OCI = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
URL_PATH = "/pulp/docker/v2"

# Pulp 2's plugins/etc/httpd/conf.d/pulp_docker.conf, for a tree at ROOT (SSL left out).
PULP_DIRECTIVES = """\
# This prevents mod_mime_magic from adding content-type and content-encoding headers.
<IfModule mod_mime_magic.c>
    MimeMagicFile NEVER_EVER_USE
</IfModule>
Alias /pulp/docker/v2 ROOT
<Directory ROOT>
    Header set Docker-Distribution-API-Version "registry/2.0"
    Options FollowSymlinks Indexes
    Require all granted
</Directory>
<Directory ROOT/*/manifests/1>
    Header set Docker-Distribution-API-Version "registry/2.0"
    Header set Content-Type "application/vnd.docker.distribution.manifest.v1+prettyjws"
    Options FollowSymlinks Indexes
</Directory>
<Directory ROOT/*/manifests/2>
    Header set Docker-Distribution-API-Version "registry/2.0"
    Header set Content-Type "application/vnd.docker.distribution.manifest.v2+json"
    Options FollowSymlinks Indexes
</Directory>
<Directory ROOT/*/manifests/list>
    Header set Docker-Distribution-API-Version "registry/2.0"
    Header set Content-Type "application/vnd.docker.distribution.manifest.list.v2+json"
    Options FollowSymlinks Indexes
</Directory>
"""


class PulpApache:
    """Apache serving the Crane tree's web/ folder with Pulp's directives (the `Alias`
    points at what Pulp calls published/docker/v2/web)."""

    def __init__(self, prefix, mountpoint):
        self.prefix, self.root = prefix, os.path.join(mountpoint, "web")
        self.port = None
        self.proc = None
        self.log_path = os.path.join(prefix, "error.log")

    def start(self):
        os.makedirs(self.prefix, exist_ok=True)
        modules = "".join(
            f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"
            for m in ("mpm_event", "authz_core", "alias", "headers", "mime")
        )

        def launch(port):
            conf = (
                f"ServerName localhost\nListen 127.0.0.1:{port}\n{modules}"
                "TypesConfig /dev/null\nUser www-data\nGroup www-data\nPidFile apache2.pid\n"
                "DefaultRuntimeDir .\nErrorLog error.log\nLogLevel warn\n"
                "<Directory />\n    Require all denied\n    AllowOverride None\n</Directory>\n"
                + PULP_DIRECTIVES.replace("ROOT", self.root)
            )
            path = os.path.join(self.prefix, "apache2.conf")
            with open(path, "w") as f:
                f.write(conf)
            env = {k: v for k, v in os.environ.items() if not k.startswith("APACHE_")}
            return subprocess.Popen(
                ["apache2", "-d", self.prefix, "-f", path, "-DFOREGROUND"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"),
                env=env, start_new_session=True,
            )

        return start_on_a_free_port(self, launch, path="/")

    def stop(self):
        proc, self.proc = self.proc, None
        stop_process(proc)


def crane_redirect(app, rest, accepts):
    """The path Crane redirects `/v2/<repo-registry-id>/<rest>` to, or None (404)."""
    base = app["url"] if app["url"].endswith("/") else app["url"] + "/"
    section = rest.split("/")[0]
    if section != "manifests":
        return base + rest
    ident = rest.split("/", 1)[1]
    s2 = app["schema2_data"]
    lists = app["manifest_list_data"]
    amd64 = app["manifest_list_amd64_tags"]
    if not (s2 or lists):
        return base + f"manifests/1/{ident}"
    if MT_LIST in accepts and ident in lists:
        return base + f"manifests/list/{ident}"
    if ident in amd64:
        digest, version = amd64[ident]
        if MT_SCHEMA2 in accepts:
            return base + f"manifests/{version}/{digest}"
        if version == 1:
            return base + f"manifests/1/{digest}"
        return base + f"manifests/1/{ident}"
    if MT_SCHEMA2 in accepts and ident in s2:
        return base + f"manifests/2/{ident}"
    return base + f"manifests/1/{ident}"


def check_crane(checker, report, mountpoint, port, repos_refs):
    """repos_refs: [(repo, [tags], [digests])]. Compares registry answers with
    Crane's redirect target fetched from the Pulp-configured Apache."""
    apps = {}
    app_dir, web_dir = os.path.join(mountpoint, "app"), os.path.join(mountpoint, "web")
    # Crane's data_dir is app/: it loads every *.json below it, links followed.
    loaded = []
    for dirpath, dirnames, filenames in os.walk(app_dir, followlinks=True):
        report.check(f"crane app/ has no folders ({dirpath})", [f"folder {d}" for d in dirnames])
        loaded += [os.path.join(dirpath, n) for n in sorted(filenames) if n.endswith(".json")]
    for path in loaded:
        name = os.path.basename(path)
        with open(path, "rb") as f:
            doc = json.loads(f.read())
        problems = []
        for key, typ in (("version", int), ("repo-registry-id", str), ("url", str), ("repository", str),
                         ("protected", bool), ("schema2_data", list), ("manifest_list_data", list),
                         ("manifest_list_amd64_tags", dict)):
            if not isinstance(doc.get(key), typ):
                problems.append(f"{key} is {doc.get(key)!r}")
        if doc.get("version") != 4 or doc.get("repository") + ".json" != name:
            problems.append(f"version {doc.get('version')}, repository {doc.get('repository')}")
        if not os.path.isdir(os.path.join(web_dir, doc.get("repository", ""))):
            problems.append("no folder for the repository")
        apps[doc["repo-registry-id"]] = doc
        report.check(f"crane app file {name}", problems)
    combos = [("no Accept", []), ("schema2", [MT_SCHEMA2]), ("Docker", [MT_SCHEMA1_SIGNED, MT_SCHEMA2, MT_LIST])]
    for repo, tags, digests in repos_refs:
        app = apps.get(repo)
        if app is None:
            report.check(f"crane {repo}", [f"no app file names {repo}"])
            continue
        target = crane_redirect(app, "tags/list", set())
        ours = request(port, "GET", target)
        reg = checker.reg_req("GET", f"/v2/{repo}/tags/list")
        report.check(f"crane {repo} tags/list", [] if ours.body == reg.body else [f"{ours.status} {ours.body[:100]!r}"])
        for ref in tags + digests:
            for label, lines in combos:
                reg = checker.reg_req("GET", f"/v2/{repo}/manifests/{ref}", lines)
                target = crane_redirect(app, f"manifests/{ref}", set(lines))
                ours = request(port, "GET", target)
                problems, known = [], []
                if reg.status == 200 and ours.status == 200:
                    if reg.header("content-type") != ours.header("content-type"):
                        problems.append(f"Content-Type {ours.header('content-type')}, registry {reg.header('content-type')}")
                    elif reg.header("content-type") == MT_SCHEMA1_SIGNED:
                        problems += checker.compare_schema1(reg, ours)
                    elif reg.body != ours.body:
                        problems.append("body differs")
                    if ours.header("docker-distribution-api-version") != "registry/2.0":
                        problems.append("no Docker-Distribution-API-Version")
                elif reg.status == 200 and reg.header("content-type") in (MT_OCI, MT_OCI_INDEX):
                    known.append("crane-oci")
                elif reg.status == 200 and ref.startswith("sha256:"):
                    known.append("crane-digest-accept")
                elif reg.status != 200 and ours.status == 404:
                    if reg.status != 404:
                        known.append("crane-errors")
                elif reg.status == 0 and ours.status == 404:
                    known.append("crane-errors")
                else:
                    problems.append(f"{ours.status} from {target} (registry {reg.status} {reg.header('content-type')})")
                where = "/".join(target.split("/")[-3:-1])
                report.check(f"crane GET {repo}:{ref[:19]} [{label}] -> {where}", problems, known)
