#!/usr/bin/env bash
# Builds the e2e test bed's control plane from Debian: etcd (Debian package) plus kube-apiserver,
# kube-controller-manager and kubectl 1.20.2 built from Debian's `kubernetes` source package with
# Debian's Go. The binaries are cached under $HOME/.cache/mqtt-operator/k8s-1.20.2/bin; a second
# run with a warm cache only checks the cache and returns in well under 5 s.
#
# Why a rebuild rather than Debian's binaries: the vendored github.com/modern-go/reflect2 v1.0.1
# faults under Go 1.19 (`fatal error: fault` on some JSON writes, also in Debian's kubectl), so
# its files are replaced with Debian's golang-github-modern-go-reflect2-dev (1.0.2) before the
# build. Debian ships no kube-apiserver binary at all.
#
# Environment:
#   MQTT_OPERATOR_K8S_DIR  cache directory (default $HOME/.cache/mqtt-operator/k8s-1.20.2)
#   MQTT_OPERATOR_K8S_KEEP_SRC=1  keep the unpacked source tree after a successful build
set -euo pipefail
# The body is one compound command, so bash parses all of it before running: editing or checking
# out this file during the minutes-long build cannot derail the running script.
{

version="1.20.2"
home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
cache="${MQTT_OPERATOR_K8S_DIR:-$home/.cache/mqtt-operator/k8s-$version}"
bin="$cache/bin"
stamp="$cache/stamp"
# Bump when the build recipe changes so caches built by an older recipe are rebuilt.
recipe="k8s=$version reflect2=debian-1.0.2 recipe=1"
binaries=(kube-apiserver kube-controller-manager kubectl)
packages=(
  etcd-server                          # etcd for the apiserver
  golang-go                            # Debian's Go (1.19) builds Kubernetes
  golang-github-modern-go-reflect2-dev # replaces the vendored reflect2 1.0.1 (faults on Go 1.19)
  build-essential                      # make, gcc (cgo in a few packages)
  dpkg-dev                             # `apt-get source` unpacks with dpkg-source
  rsync                                # used by Kubernetes' hack/ build scripts
  ca-certificates
)

say() { echo "testbed-install: $*"; }
die() {
  echo "testbed-install: ERROR: $*" >&2
  exit 1
}
trap 'echo "testbed-install: FAILED at line $LINENO (exit $?)" >&2' ERR

sudo_cmd=""
[ "$(id -u)" = 0 ] || sudo_cmd="sudo"

missing_packages() {
  local p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

cache_warm() {
  local b
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$recipe" ] || return 1
  for b in "${binaries[@]}"; do
    [ -x "$bin/$b" ] || return 1
  done
  return 0
}

# ---- fast path: everything present -------------------------------------------------------------
mapfile -t missing < <(missing_packages)
if ((${#missing[@]} == 0)) && cache_warm; then
  say "cache warm: $bin (${binaries[*]}), etcd $(command -v etcd)"
  exit 0
fi

# ---- Debian packages ----------------------------------------------------------------------------
apt_updated=0
apt_update() {
  if ((apt_updated == 0)); then
    say "apt-get update"
    $sudo_cmd apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt_updated=1
  fi
}
if ((${#missing[@]})); then
  apt_update
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
    --no-install-recommends "${missing[@]}"
fi
command -v etcd >/dev/null || die "etcd not on PATH after installing etcd-server"
command -v go >/dev/null || die "go not on PATH after installing golang-go"

if cache_warm; then
  say "cache warm: $bin"
  exit 0
fi

# ---- deb-src entry -----------------------------------------------------------------------------
has_deb_src() {
  grep -rqsE '^[[:space:]]*Types:.*deb-src' /etc/apt/sources.list.d/*.sources && return 0
  grep -qsE '^[[:space:]]*deb-src[[:space:]].*bookworm' /etc/apt/sources.list \
    /etc/apt/sources.list.d/*.list && return 0
  return 1
}
if ! has_deb_src; then
  src_file=/etc/apt/sources.list.d/mqtt-operator-deb-src.sources
  say "adding deb-src source $src_file"
  $sudo_cmd tee "$src_file" >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt_updated=0
fi
apt_update

# ---- source ----------------------------------------------------------------------------------
work="$cache/src"
rm -rf "$work"
mkdir -p "$work"
say "apt-get source kubernetes (into $work)"
(cd "$work" && apt-get source -qq kubernetes) || die "apt-get source kubernetes failed"
srcdir="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
[ -n "$srcdir" ] || die "no kubernetes-* directory after apt-get source in $work"
grep -q "$version" "$srcdir/debian/changelog" ||
  die "unexpected kubernetes source version in $srcdir (want $version)"
say "source: $srcdir"

# ---- reflect2 swap -------------------------------------------------------------------------------
vendored="$srcdir/vendor/github.com/modern-go/reflect2"
debian_reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -d "$vendored" ] || die "vendored reflect2 not found at $vendored"
[ -f "$debian_reflect2/reflect2.go" ] || die "Debian reflect2 not found at $debian_reflect2"
say "replacing vendored reflect2 with $debian_reflect2"
find "$vendored" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
find "$debian_reflect2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
  -exec cp {} "$vendored/" \;

# ---- build -----------------------------------------------------------------------------------
what="cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl"
say "building $what with $(go version) (several minutes)"
start=$(date +%s)
(
  cd "$srcdir"
  # Upstream's make runs in GOPATH mode over the vendor tree and generates the OpenAPI file that
  # the tarball lacks. KUBE_GIT_* give the binaries a proper version string.
  export KUBE_GIT_VERSION="v$version" KUBE_GIT_TREE_STATE=clean KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20
  make WHAT="$what"
) || die "make WHAT=\"$what\" failed in $srcdir"
say "build took $(($(date +%s) - start)) s"

mkdir -p "$bin"
for b in "${binaries[@]}"; do
  built="$(find "$srcdir/_output" -type f -name "$b" -perm -u+x | head -n1)"
  [ -n "$built" ] || die "$b not found under $srcdir/_output after the build"
  install -m 0755 "$built" "$bin/$b.tmp"
  mv -f "$bin/$b.tmp" "$bin/$b"
done
"$bin/kube-apiserver" --version || die "built kube-apiserver does not run"
"$bin/kubectl" version --client=true --short 2>/dev/null || "$bin/kubectl" version --client=true
echo "$recipe" >"$stamp"
if [ "${MQTT_OPERATOR_K8S_KEEP_SRC:-0}" != 1 ]; then
  rm -rf "$work"
fi
say "done: $bin"
exit 0
}
