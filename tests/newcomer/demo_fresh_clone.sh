#!/usr/bin/env bash
# demo_fresh_clone.sh SOURCE_DIR - the README's first command, as a newcomer runs it:
# clones SOURCE_DIR's HEAD into an empty temporary directory (no build/, nothing cached) and
# runs scripts/demo there from another working directory. Passes when the demo exits 0,
# shows the rejected op with its reason, ends with every quantity agreeing, and leaves no
# process running (server, PostgreSQL) under its directories.
# Exit 77 (skipped) when SOURCE_DIR is not a git checkout.
set -euo pipefail

src=${1:?usage: demo_fresh_clone.sh SOURCE_DIR}
if ! git -C "$src" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    echo "not a git checkout: $src (skipped)"
    exit 77
fi

work=$(mktemp -d /tmp/midway-newcomer.XXXXXX)
chmod 755 "$work"
keep=${MIDWAY_TEST_KEEP:-0}
cleanup() { [ "$keep" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; echo "--- demo output ($log) ---" >&2; tail -n 60 "$log" >&2 || true; exit 1; }

git clone -q --no-hardlinks "$src" "$work/midway"
head=$(git -C "$work/midway" rev-parse --short HEAD)
echo "cloned $src at $head into $work/midway"
[ ! -e "$work/midway/build" ] || fail "the fresh clone already has build/"

log="$work/demo.log"
# From an unrelated working directory: the script must find its own tree.
set +e
(cd / && "$work/midway/scripts/demo") >"$log" 2>&1
rc=$?
set -e
[ $rc -eq 0 ] || fail "scripts/demo exited $rc"

grep -q 'insufficient_stock' "$log" || fail "the rejected op and its reason (insufficient_stock) were not shown"
grep -q 'sync exit code 3' "$log" || fail "the scanner's sync did not report rejected ops (exit 3)"
grep -q 'sync exit code 4' "$log" || fail "the offline gateway's sync did not report the server unreachable (exit 4)"
grep -q '"duplicate"' "$log" || fail "the replayed batch was not answered duplicate"
grep -q 'MISMATCH' "$log" && fail "a device's view or the ledger disagreed with the server"
grep -q 'nothing left running' "$log" || fail "the demo did not confirm it stopped everything"

# The demo's data directory is named in its output; nothing may run from there or from the
# clone once it has exited.
data=$(sed -n 's/.*on a fresh data directory (\(.*\)).*/\1/p' "$log" | head -n 1)
[ -n "$data" ] || fail "the demo did not name its data directory"
sleep 0.5
for dir in "$data" "$work/midway"; do
    if pgrep -f -- "$dir" >/dev/null; then
        pgrep -af -- "$dir" >&2
        fail "processes left running under $dir"
    fi
done
[ ! -e "$data" ] || fail "the demo left its data directory $data behind"

echo "scripts/demo passed from a fresh clone of $head:"
sed -n '/Summary: every quantity agrees/,/ops applied/p' "$log"
grep 'demo took' "$log"
