#!/bin/sh
# install.sh - puts the Midway gateway bundle (midway-agent @VERSION@, @ARCH@) in place.
#
#   ./install.sh [--prefix DIR] [--no-start]
#                [--server URL --device-id ID --token-file FILE --ca FILE]
#   ./install.sh --root DIR [--prefix DIR]        (into a root filesystem image being built)
#
# Installs bin/ and lib/ under PREFIX (default /opt/midway, a directory of its own that an
# upgrade replaces whole), the unit as /etc/systemd/system/midway-agent.service, the
# midway-agent system account, and /etc/midway/agent.conf (only if there is none yet). With
# --server and the rest it also provisions the device: the token and CA go to /etc/midway and
# `midway-agent init` runs as midway-agent. Then it enables and (re)starts the service.
#
# An upgrade is the same command with the newer bundle. The data directory
# (/var/lib/midway-agent: the outbox, the rejected list, the settings) is never touched; the
# new agent migrates its schema when it first opens it. Before the service starts again the
# new agent opens the data file once; if it cannot (a file from a newer agent, a missing
# library, a too old glibc), the previous version is put back and started again.
# Needs: a POSIX shell, coreutils or busybox; systemd for the service.
set -eu

VERSION=@VERSION@
ARCH=@ARCH@
LDSO=@LDSO@
USER_NAME=midway-agent
DATA=/var/lib/midway-agent
UNIT=midway-agent.service

prefix=/opt/midway
root=""
start=1
server=""
device_id=""
token_file=""
ca_file=""

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; prefix=$2; shift ;;
        --root) [ $# -ge 2 ] || die "--root needs a value"; root=$2; shift ;;
        --no-start) start=0 ;;
        --server) [ $# -ge 2 ] || die "--server needs a value"; server=$2; shift ;;
        --device-id) [ $# -ge 2 ] || die "--device-id needs a value"; device_id=$2; shift ;;
        --token-file) [ $# -ge 2 ] || die "--token-file needs a value"; token_file=$2; shift ;;
        --ca) [ $# -ge 2 ] || die "--ca needs a value"; ca_file=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done

here=$(cd "$(dirname "$0")" && pwd)
case "$prefix" in
    /*) ;;
    *) die "--prefix must be an absolute path" ;;
esac
prefix=${prefix%/}
case "$prefix" in
    "" | /usr | /usr/local | /opt | /etc | /var | /bin | /lib) die "--prefix must be a directory of its own, not $prefix" ;;
esac
R=""
if [ -n "$root" ]; then
    [ -d "$root" ] || die "--root $root is not a directory"
    R=$(cd "$root" && pwd)
    [ "$R" = / ] && R=""
fi
provision=0
if [ -n "$server$device_id$token_file$ca_file" ]; then
    [ -n "$server" ] && [ -n "$device_id" ] && [ -n "$token_file" ] && [ -n "$ca_file" ] ||
        die "provisioning needs all of --server, --device-id, --token-file and --ca"
    # A token belongs to one device: an image shared by many devices must not carry one.
    [ -z "$root" ] || die "--root installs no token: provision each device on the device itself"
    [ -r "$token_file" ] || die "cannot read the token file $token_file"
    [ -r "$ca_file" ] || die "cannot read the CA file $ca_file"
    provision=1
fi
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (or with --root DIR to install into an image)"
fi
[ -x "$here/bin/midway-agent" ] || die "run install.sh from the unpacked bundle (no bin/midway-agent next to it)"
[ -e "$R$LDSO" ] || die "$R$LDSO is missing: this is not a glibc $ARCH system (this bundle is for $ARCH)"

# The prefix is replaced whole on upgrade, so it must be ours (or new).
if [ -e "$R$prefix" ] && ! head -n 1 "$R$prefix/MANIFEST" 2>/dev/null | grep -q '^midway-gateway '; then
    die "$R$prefix exists and is not a Midway gateway install: choose another --prefix"
fi

# Runs a command as the service account (util-linux runuser, else su as on busybox).
as_agent() {
    if command -v runuser >/dev/null 2>&1; then
        runuser -u "$USER_NAME" -- "$@"
    else
        cmd=""
        for a in "$@"; do cmd="$cmd '$(printf '%s' "$a" | sed "s/'/'\\\\''/g")'"; done
        su -s /bin/sh -c "$cmd" "$USER_NAME"
    fi
}

live=0
[ -z "$R" ] && live=1
systemd_up=0
if [ $live -eq 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemd_up=1
fi

# ---- the account ---------------------------------------------------------------------------
install -d -m 0755 "$R/usr/lib/sysusers.d"
install -m 0644 "$here/systemd/midway-agent.sysusers" "$R/usr/lib/sysusers.d/midway-agent.conf"
if [ $live -eq 1 ] && ! id "$USER_NAME" >/dev/null 2>&1; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers /usr/lib/sysusers.d/midway-agent.conf
    elif command -v useradd >/dev/null 2>&1; then
        useradd --system --user-group --home-dir "$DATA" --no-create-home \
            --shell /usr/sbin/nologin --comment "Midway agent" "$USER_NAME"
    else
        addgroup -S "$USER_NAME"
        adduser -S -D -H -h "$DATA" -s /sbin/nologin -G "$USER_NAME" "$USER_NAME"
    fi
    say "created the system account $USER_NAME"
fi

# ---- stop a running agent (upgrade) --------------------------------------------------------
was_running=0
if [ $systemd_up -eq 1 ] && systemctl is-active --quiet "$UNIT"; then
    say "stopping $UNIT (it finishes the request in flight)"
    systemctl stop "$UNIT"
    was_running=1
fi

# ---- the files -----------------------------------------------------------------------------
new="$R$prefix.new.$$"
old="$R$prefix.old.$$"
rm -rf "$new"
install -d -m 0755 "$new" "$new/bin" "$new/lib"
install -m 0755 "$here/bin/midway-agent" "$new/bin/midway-agent"
for f in "$here"/lib/*; do
    install -m 0644 "$f" "$new/lib/$(basename "$f")"
done
cp -R "$here/share" "$new/share"
install -m 0644 "$here/MANIFEST" "$here/README.md" "$new/"
install -d -m 0755 "$(dirname "$R$prefix")"
had_old=0
if [ -e "$R$prefix" ]; then
    mv "$R$prefix" "$old"
    had_old=1
fi
mv "$new" "$R$prefix"

install -d -m 0755 "$R/etc/systemd/system"
sed "s|/opt/midway|$prefix|g" "$here/systemd/midway-agent.service" >"$R/etc/systemd/system/$UNIT.tmp"
chmod 0644 "$R/etc/systemd/system/$UNIT.tmp"
mv "$R/etc/systemd/system/$UNIT.tmp" "$R/etc/systemd/system/$UNIT"

# /etc/midway: readable by the account only where it holds secrets (a live system, where the
# account exists now; in an image the token arrives later, on the device).
if [ $live -eq 1 ]; then
    install -d -m 0750 -o root -g "$USER_NAME" /etc/midway
else
    install -d -m 0755 "$R/etc/midway"
fi
install -m 0644 "$here/etc/agent.conf" "$R/etc/midway/agent.conf.default"
if [ ! -e "$R/etc/midway/agent.conf" ]; then
    install -m 0644 "$here/etc/agent.conf" "$R/etc/midway/agent.conf"
else
    say "kept /etc/midway/agent.conf; this version's defaults are in agent.conf.default"
fi

# ---- provisioning --------------------------------------------------------------------------
if [ $live -eq 1 ]; then
    install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "$DATA"
fi
if [ $provision -eq 1 ]; then
    # Readable by the account, not by everyone: the agent refuses a world-readable token.
    install -m 0640 -o root -g "$USER_NAME" "$token_file" /etc/midway/agent.token.new
    mv /etc/midway/agent.token.new /etc/midway/agent.token
    install -m 0644 "$ca_file" /etc/midway/ca.pem
    as_agent "$prefix/bin/midway-agent" --data "$DATA" --config /etc/midway/agent.conf init \
        --server "$server" --device-id "$device_id" --token-file /etc/midway/agent.token \
        --ca /etc/midway/ca.pem
    say "provisioned device $device_id for $server"
fi

# ---- check the new agent before it runs, else put the old one back --------------------------
rollback() {
    rm -rf "$R$prefix"
    if [ $had_old -eq 1 ]; then
        mv "$old" "$R$prefix"
        say "put the previous version back in $prefix"
        if [ $was_running -eq 1 ]; then systemctl start "$UNIT" || true; fi
    fi
    die "$1"
}
if [ $live -eq 1 ]; then
    "$R$prefix/bin/midway-agent" --version >/dev/null 2>&1 ||
        rollback "the new midway-agent does not run here: $("$prefix/bin/midway-agent" --version 2>&1 | head -n 1)"
    if [ -e "$DATA/agent.db" ]; then
        # Opening migrates an older data file (in one transaction); a newer one is refused.
        if ! msg=$(as_agent "$prefix/bin/midway-agent" --data "$DATA" status 2>&1 >/dev/null); then
            rollback "the new midway-agent cannot open $DATA/agent.db: $msg"
        fi
    fi
fi
rm -rf "$old"

# ---- the service ---------------------------------------------------------------------------
if [ $systemd_up -eq 1 ]; then
    systemctl daemon-reload
    systemctl enable --quiet "$UNIT"
    if [ $start -eq 0 ]; then
        say "enabled $UNIT; not started (--no-start)"
    elif [ -e "$DATA/agent.db" ]; then
        systemctl restart "$UNIT"
        say "started $UNIT"
    else
        say "enabled $UNIT; it starts once the device is provisioned (below)"
    fi
elif [ -n "$R" ]; then
    install -d -m 0755 "$R/etc/systemd/system/multi-user.target.wants"
    ln -sf "../$UNIT" "$R/etc/systemd/system/multi-user.target.wants/$UNIT"
fi

say "installed midway-agent $VERSION ($ARCH) in $R$prefix"
if [ ! -e "$R$DATA/agent.db" ]; then
    cat <<EOF
To provision this device (once, on the device), rerun with --server URL --device-id ID
--token-file FILE --ca FILE, or by hand:
  install -d -m 0700 -o $USER_NAME -g $USER_NAME $DATA
  install -m 0640 -o root -g $USER_NAME TOKEN /etc/midway/agent.token
  install -m 0644 CA.pem /etc/midway/ca.pem
  runuser -u $USER_NAME -- $prefix/bin/midway-agent --data $DATA init --server URL \\
      --device-id ID --token-file /etc/midway/agent.token --ca /etc/midway/ca.pem
  systemctl start $UNIT
EOF
fi
