# scripts/deps.sh - sourced by scripts/test and scripts/demo: makes sure the Debian 12
# packages Midway builds and tests with are installed. As root it installs what is missing;
# otherwise it prints the exact command and stops.

MIDWAY_PACKAGES="build-essential cmake pkg-config \
libsqlite3-dev libcurl4-openssl-dev libmbedtls-dev libcjson-dev libpq-dev zlib1g-dev \
libargon2-dev libcmocka-dev postgresql-15 postgresql-client-15 ca-certificates curl openssl"

midway_missing_packages() {
    local missing="" p
    for p in $MIDWAY_PACKAGES "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing="$missing $p"
        fi
    done
    echo "$missing"
}

# midway_ensure_packages [extra packages...]
midway_ensure_packages() {
    local missing
    missing=$(midway_missing_packages "$@")
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "Missing Debian packages:$missing" >&2
        echo "Install them with:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y$missing" >&2
        exit 1
    fi
    echo "==> installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# PostgreSQL's server programs live outside PATH on Debian; Midway finds them itself, but
# psql-based helpers and people reading the logs like them on PATH.
midway_pg_bindir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# The flags `midway-server serve` needs to be started from these scripts: as root it refuses
# to run without an unprivileged user to become once its port is bound (nobody is on every
# Debian system; a deployment creates a user of its own, see docs/operations.md).
midway_serve_user_flags() {
    if [ "$(id -u)" -eq 0 ]; then
        echo "--user nobody"
    fi
}
