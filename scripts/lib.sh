# shellcheck shell=bash
# Shared by scripts/demo.sh, scripts/test.sh and bench/run.sh: installing
# what colcrypt needs on Debian 12, building and installing it, and running
# things as the postgres OS user (initdb and postgres refuse root).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BIN/pg_config
export PATH="$PG_BIN:$PATH"

# Debian packages for building, testing and running colcrypt (SoftHSM2,
# pkcs11-tool and PyKMIP are the real HSM and KMIP server of the tests;
# clang and its sanitizer and libFuzzer runtimes build test/fuzz/).
BUILD_PACKAGES=(
    postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR
    build-essential pkg-config libssl-dev libcurl4-openssl-dev libjson-c-dev
    libp11-kit-dev libipc-run-perl clang libclang-rt-14-dev gdb
    softhsm2 opensc python3-pykmip python3-cryptography openssl
)

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Re-run the calling script as root if needed (apt-get and make install).
require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "run this as root (apt-get and make install need it)"
        exec sudo -E bash "$0" "$@"
    fi
}

# Install the packages that are missing; nothing when all are there.
install_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "Installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    id postgres >/dev/null 2>&1 || die "the postgres OS user is missing (postgresql-common creates it)"
}

# Build with warnings as errors and install into PostgreSQL $PG_MAJOR.
# build_and_install [make variables...], e.g. SANITIZE=1.  A build with other
# flags than the last one starts from clean objects.
build_and_install() {
    local flags="$*"
    say "Building colcrypt (PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}'))${flags:+ with $flags}"
    if [ "$(cat "$ROOT/.build-flags" 2>/dev/null)" != "$flags" ]; then
        make -C "$ROOT" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null
        echo "$flags" > "$ROOT/.build-flags"
    fi
    make -C "$ROOT" -s PG_CONFIG="$PG_CONFIG" COPT=-Werror "$@"
    make -C "$ROOT" -s PG_CONFIG="$PG_CONFIG" "$@" install >/dev/null
}

# A copy of the tree the postgres user can write to (pg_regress and the TAP
# tests write results next to the sources).  Prints its path.
postgres_workdir() {
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/colcrypt-$1.XXXXXX")
    tar -C "$ROOT" --exclude=.git -cf - . | tar -C "$dir" -xf -
    chown -R postgres:postgres "$dir"
    chmod 755 "$dir"
    echo "$dir"
}

as_postgres() {
    runuser -u postgres -- env PATH="$PATH" "$@"
}

# A free TCP port on loopback.
free_port() {
    local p
    for p in $(shuf -i 20000-60000 -n 50); do
        if ! (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}
