#!/usr/bin/env bash
# Installs the Debian packages the test suite needs; does nothing when they are all present.
set -euo pipefail
# chromium: browser tests; nats-server: the embedded bus; slapd, ldap-utils: a real OpenLDAP for directory
# sign-in; simplesamlphp with php-cli, php-xml, php-mbstring: a real SAML identity provider (`php -S`).
PACKAGES=(chromium nats-server slapd ldap-utils simplesamlphp php-cli php-xml php-mbstring)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing test dependencies: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages' own services are not wanted: tests start slapd and php on free ports with their own config.
$SUDO pkill -x slapd 2>/dev/null || true
$SUDO pkill -x apache2 2>/dev/null || true
