#!/bin/sh
# Install the Debian 12 packages registryfs's tests need. Idempotent: when
# every package is already installed it does nothing (no apt-get update).
#
#   docker-registry                    the oracle: distribution 2.8.2 (/usr/bin/docker-registry)
#   skopeo                             pushes ordinary fixture images (tests/oracle)
#   golang-go, golang-github-docker-libtrust-dev
#                                      build tests/libtrust-verify offline against Debian's libtrust
#   fuse3                              fusermount3, for mounting registryfs
#   nginx-light, apache2, wrk, curl    serving a mount over HTTP and load-testing it
#   libnginx-mod-http-js               njs, so nginx 1.22 sees every Accept line (tests/httpd)
#   jq, python3                        test scripts (the oracle is stdlib-only Python)
#   dpkg-dev, binutils, lintian, man-db, systemd
#                                      build the .deb (dpkg-shlibdeps, strip), check it
#                                      (lintian, man, systemd-analyze verify): tests/package
#
# Works as root; otherwise uses sudo when available.
set -eu

PACKAGES="docker-registry skopeo golang-go golang-github-docker-libtrust-dev fuse3 nginx-light libnginx-mod-http-js apache2 wrk curl jq python3 ca-certificates dpkg-dev binutils lintian man-db systemd"

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "install-deps: all packages already installed"
    exit 0
fi
echo "install-deps: installing:$missing"

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-deps: not root and sudo is not available; install as root:$missing" >&2
    exit 1
fi

# Installing nginx, apache2 and docker-registry would normally start their
# services (apache/nginx on 0.0.0.0:80, the registry on :5000). Tests start
# their own instances on 127.0.0.1 only, so forbid service starts during the
# install with the standard Debian policy-rc.d hook (exit 101 = "action
# forbidden"), unless the machine already has a policy of its own.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT INT TERM
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, from registryfs scripts/install-deps.sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    created_policy=1
fi

export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # word splitting of $missing is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing

# Sanity: the paths the tests rely on.
test -x /usr/bin/docker-registry
test -f /usr/share/gocode/src/github.com/docker/libtrust/jsonsign.go
echo "install-deps: done"
