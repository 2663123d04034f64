#!/usr/bin/env bash
# Runs every Go fuzz target for a bounded time (FUZZTIME, default 10s each)
# and prints the time per target. Targets are found by name, so a new
# `func FuzzX` is picked up without editing this script.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-10s}
grep -rl --include='*_test.go' '^func Fuzz' . | grep -v node_modules | while read -r f; do
  pkg=./$(dirname "${f#./}")
  for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
    start=$(date +%s)
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$t" "$pkg" >/tmp/parley-fuzz.log 2>&1 ||
      { cat /tmp/parley-fuzz.log; echo "fuzz $pkg $target: FAILED"; exit 1; }
    printf 'fuzz %-32s %-22s %ss ok\n' "$pkg" "$target" "$(( $(date +%s) - start ))"
  done
done
