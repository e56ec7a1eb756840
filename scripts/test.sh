#!/usr/bin/env bash
# The whole colcrypt test suite, from a fresh Debian 12 machine (as root):
# installs what it needs, builds, installs, then runs
#   1. the C unit tests (Wycheproof vectors, the envelope parser, the TTLV
#      codec, the SigV4 signer against AWS's published suite),
#   2. a fuzz smoke run: each libFuzzer harness of test/fuzz/ for
#      COLCRYPT_FUZZ_SECONDS (30) from the kept corpus,
#   3. pg_regress in a throwaway instance with colcrypt preloaded,
#   4. the TAP tests (restarts, no plaintext on disk, connection storms,
#      dump and restore, provider failures, the extended protocol, SoftHSM2
#      and PyKMIP as real key providers, Vault and AWS KMS emulators).
#
# scripts/test.sh --sanitize runs steps 3 and 4 with colcrypt built under
# AddressSanitizer and UndefinedBehaviorSanitizer (make SANITIZE=1), the
# ASan runtime preloaded into every process the tests start, and fails on
# any sanitizer report in a server log; the normal build is installed again
# afterwards.  (The unit tests and the fuzzers are sanitized in both modes.)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root "$@"

SANITIZE=
[ "${1:-}" = "--sanitize" ] && SANITIZE=1

START=$(date +%s)
install_packages "${BUILD_PACKAGES[@]}"
if [ -n "$SANITIZE" ]; then
    build_and_install SANITIZE=1
    # Whatever happens, leave the normal build installed: a sanitized
    # colcrypt.so cannot load into a server started without the runtime.
    trap 'build_and_install >/dev/null' EXIT
else
    build_and_install
fi

WYCHEPROOF=${COLCRYPT_WYCHEPROOF:-$ROOT/../shared/testvectors/wycheproof}
[ -f "$WYCHEPROOF/aes_gcm_test.json" ] ||
    die "Wycheproof vectors not found at $WYCHEPROOF (set COLCRYPT_WYCHEPROOF)"
WYCHEPROOF=$(cd "$WYCHEPROOF" && pwd)
SIGV4_SUITE=${COLCRYPT_SIGV4_SUITE:-$ROOT/../shared/testvectors/aws-sigv4/suite}
[ -d "$SIGV4_SUITE" ] ||
    die "AWS SigV4 test suite not found at $SIGV4_SUITE (set COLCRYPT_SIGV4_SUITE)"
SIGV4_SUITE=$(cd "$SIGV4_SUITE" && pwd)

WORK=$(postgres_workdir check)
status=0

say "C unit tests"
as_postgres make -C "$WORK" -s unittest test-programs \
    WYCHEPROOF="$WYCHEPROOF" SIGV4_SUITE="$SIGV4_SUITE" || status=1

say "Fuzz smoke run"
# A failing input is kept in $WORK/test/fuzz/findings/.
as_postgres make -C "$WORK" -s fuzz-smoke FUZZ_SECONDS="${COLCRYPT_FUZZ_SECONDS:-30}" || status=1

say "Key provider fixtures: a SoftHSM2 token and a PyKMIP server"
# pg_regress's temporary instance inherits this environment.
as_postgres "$WORK/test/hsm/softhsm.sh" init "$WORK/tmp_providers/hsm" >/dev/null
export SOFTHSM2_CONF="$WORK/tmp_providers/hsm/softhsm2.conf"
export COLCRYPT_TEST_HSM="$WORK/tmp_providers/hsm"
export COLCRYPT_TEST_KMIP="$WORK/tmp_providers/kmip"
COLCRYPT_TEST_KMIP_PORT=$(free_port)
export COLCRYPT_TEST_KMIP_PORT
as_postgres "$WORK/test/kmip/server.sh" start "$COLCRYPT_TEST_KMIP" "$COLCRYPT_TEST_KMIP_PORT"
stop_fixtures() {
    as_postgres "$WORK/test/kmip/server.sh" stop "$COLCRYPT_TEST_KMIP" || true
    as_postgres "$WORK/test/vault/server.sh" stop "$COLCRYPT_TEST_VAULT" || true
    as_postgres "$WORK/test/awskms/server.sh" stop "$COLCRYPT_TEST_AWSKMS" || true
}
trap 'stop_fixtures; [ -z "$SANITIZE" ] || build_and_install >/dev/null' EXIT

say "Key provider fixtures: the Vault and AWS KMS emulators"
export COLCRYPT_TEST_VAULT="$WORK/tmp_providers/vault"
COLCRYPT_TEST_VAULT_PORT=$(free_port)
export COLCRYPT_TEST_VAULT_PORT
as_postgres "$WORK/test/vault/server.sh" start "$COLCRYPT_TEST_VAULT" "$COLCRYPT_TEST_VAULT_PORT"
export COLCRYPT_TEST_AWSKMS="$WORK/tmp_providers/awskms"
COLCRYPT_TEST_AWSKMS_PORT=$(free_port)
export COLCRYPT_TEST_AWSKMS_PORT
as_postgres "$WORK/test/awskms/server.sh" start "$COLCRYPT_TEST_AWSKMS" "$COLCRYPT_TEST_AWSKMS_PORT"

if [ -n "$SANITIZE" ]; then
    # Every process the tests start inherits these; the server writes the
    # sanitizers' reports to its log.  PostgreSQL frees much at exit only,
    # so leak checking is off; a report stops the process (abort).
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $WORK/test/asan_stub.so"
    export LD_PRELOAD
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    # t/019 (core files) cannot run so: ASan reserves terabytes of shadow
    # memory, which a core file would hold.
    export COLCRYPT_SANITIZE=1
fi

say "pg_regress and TAP tests (in $WORK)"
if ! as_postgres make -C "$WORK" installcheck PG_CONFIG="$PG_CONFIG" PROVE_FLAGS="--timer"; then
    status=1
    [ -f "$WORK/regression.diffs" ] && { say "regression.diffs"; cat "$WORK/regression.diffs"; }
    for log in "$WORK"/tmp_check/log/regress_log_*; do
        [ -f "$log" ] || continue
        say "$(basename "$log") (last 60 lines)"
        tail -n 60 "$log"
    done
fi

stop_fixtures
trap - EXIT
if [ -n "$SANITIZE" ]; then
    unset LD_PRELOAD
    say "Sanitizer reports in the server and test logs"
    # pg_regress's server logs to log/; the TAP servers' and the tests' (psql and
    # the other clients run with the runtime too) to tmp_check/log/.
    logs=("$WORK"/log/*.log "$WORK"/tmp_check/log/*)
    reports=$(grep -l -E 'ERROR: AddressSanitizer|runtime error:' "${logs[@]}" 2>/dev/null || true)
    if [ -n "$reports" ]; then
        status=1
        for f in $reports; do
            say "$f"
            grep -B2 -A30 -E 'ERROR: AddressSanitizer|runtime error:' "$f" | head -80
        done
    else
        echo "none (${#logs[@]} server and test logs searched)"
    fi
    build_and_install >/dev/null
fi

say "Finished in $(( $(date +%s) - START )) s"
if [ $status -ne 0 ]; then
    echo "FAILED (outputs kept in $WORK)"
    exit 1
fi
rm -rf "$WORK"
echo "ALL TESTS PASSED"
