#!/usr/bin/env bash
# Mutation testing: cargo-mutants changes one line of the product at a time and runs the tests
# that cover it; a change no test notices is a "survivor", listed in mutants.out/missed.txt.
# docs/mutants.md lists the survivors that remain and why each is equivalent.
#
#   scripts/mutants.sh                   every area below (hours on two cores)
#   scripts/mutants.sh src/worker/acker.rs src/erase/batch.rs     some files only
#
# Needs PostgreSQL and RabbitMQ (as the tests do) and cargo-mutants
# (`cargo install cargo-mutants --locked`). Not part of .ci/run: it takes long.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then
    files=("$@")
else
    files=(src/worker src/erase src/deletion src/plan/sql)
fi
args=()
for f in "${files[@]}"; do
    args+=(--file "$f")
done

# The tests that exercise these areas: the unit tests, and the integration tests of the worker,
# the erasure paths and the deletion records (their names start with these words).
filters=(
    acker batch faults lifecycle invalid_messages erasure_outcomes chunked size_probe
    shared_rows plan_agreement identity schemas proof ledger http_api migrations
    plan:: deletion:: erase:: worker::
)
# After `--`, what cargo test takes; after the second, what the test binaries take: the names
# of the tests to run.
exec cargo mutants "${args[@]}" --output target/mutants --timeout 600 -- -- "${filters[@]}"
