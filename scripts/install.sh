#!/bin/sh
# Installs a WorkSynapse bundle with no network: verifies its signature (Debian's minisign) before anything is
# unpacked, unpacks it under <prefix>/versions/<name>, checks every file against SHA256SUMS, points
# <prefix>/current at it, creates the service user and data directory, writes a hardened systemd unit and runs
# `worksynapse doctor`. Usage:
#   install.sh worksynapse-<version>-<platform>.tar.gz [--pubkey minisign.pub] [--prefix /opt/worksynapse]
#              [--data-dir /var/lib/worksynapse] [--root DIR]
# --root installs into another root (an image being prepared, a test): no user is created and nothing is started.
set -eu

bundle=""
pubkey=""
prefix=/opt/worksynapse
datadir=/var/lib/worksynapse
root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --pubkey) pubkey=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --data-dir) datadir=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) bundle=$1; shift ;;
  esac
done
[ -n "$bundle" ] || { echo "usage: install.sh BUNDLE.tar.gz [--pubkey minisign.pub] [--prefix DIR] [--root DIR]" >&2; exit 2; }
[ -f "$bundle" ] || { echo "error: $bundle does not exist" >&2; exit 2; }
[ -n "$pubkey" ] || pubkey="$(dirname -- "$bundle")/minisign.pub"
[ -f "$pubkey" ] || { echo "error: no public key $pubkey (--pubkey): the bundle must be verified before it is unpacked" >&2; exit 2; }
[ -f "$bundle.minisig" ] || { echo "error: no signature $bundle.minisig" >&2; exit 2; }

# 1. The signature, before anything of the bundle is read.
command -v minisign >/dev/null 2>&1 || { echo "error: minisign is needed to verify the bundle (Debian: apt-get install minisign)" >&2; exit 2; }
if ! minisign -Vm "$bundle" -p "$pubkey" -x "$bundle.minisig" >/dev/null; then
  echo "error: $bundle does not match its signature: refusing to install it" >&2
  exit 1
fi
echo "verified  $bundle (signature)"

# 2. Unpacked beside its final place, checked file by file, then moved there.
name=$(basename -- "$bundle" .tar.gz)
versions="$root$prefix/versions"
mkdir -p "$versions"
work=$(mktemp -d "$versions/.unpack-XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xzf "$bundle" -C "$work" --no-same-owner
[ -d "$work/$name" ] || { echo "error: the archive does not hold $name/" >&2; exit 1; }
(cd "$work/$name" && sha256sum --quiet --strict -c SHA256SUMS) || { echo "error: files of the bundle do not match SHA256SUMS" >&2; exit 1; }
rm -rf "${versions:?}/$name"
mv "$work/$name" "$versions/$name"
ln -sfn "versions/$name" "$root$prefix/current.new"
mv -T "$root$prefix/current.new" "$root$prefix/current"
echo "installed $root$prefix/versions/$name (current)"

# 3. The service user, the data directory, the unit.
if [ -z "$root" ] && ! id worksynapse >/dev/null 2>&1; then
  useradd --system --home-dir "$datadir" --shell /usr/sbin/nologin worksynapse
fi
mkdir -p "$root$datadir" "$root/etc/worksynapse" "$root/etc/systemd/system"
chmod 0750 "$root$datadir"
[ -n "$root" ] || chown worksynapse:worksynapse "$root$datadir"
if [ ! -f "$root/etc/worksynapse/env" ]; then
  cat > "$root/etc/worksynapse/env" <<EOF
# Settings of the WorkSynapse service (docs/configuration.md). Embedded database and bus unless set.
WORKSYNAPSE_DATA_DIR=$datadir
# DATABASE_URL_FILE=$datadir/secrets/database.url
# WORKSYNAPSE_HTTP_TLS_CERT_PATH=/etc/worksynapse/tls/fullchain.pem
# WORKSYNAPSE_HTTP_TLS_KEY_PATH=/etc/worksynapse/tls/key.pem
EOF
  chmod 0640 "$root/etc/worksynapse/env"
fi
cat > "$root/etc/systemd/system/worksynapse.service" <<EOF
[Unit]
Description=WorkSynapse
After=network.target postgresql.service

[Service]
User=worksynapse
Group=worksynapse
EnvironmentFile=/etc/worksynapse/env
ExecStart=$prefix/current/bin/worksynapse-server
ExecReload=/bin/kill -HUP \$MAINPID
Restart=on-failure
TimeoutStopSec=45
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=no
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
CapabilityBoundingSet=
ReadWritePaths=$datadir
UMask=0027

[Install]
WantedBy=multi-user.target
EOF
echo "wrote     $root/etc/systemd/system/worksynapse.service"

# 4. The checks an admin would run first.
WORKSYNAPSE_DATA_DIR="$root$datadir" "$root$prefix/current/bin/worksynapse" doctor || true
if [ -z "$root" ]; then
  echo "next: systemctl daemon-reload && systemctl enable --now worksynapse"
fi
