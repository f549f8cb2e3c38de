#!/usr/bin/env bash
# Mutation testing: cargo-mutants changes one line of the product at a time and runs the tests
# that cover it; a change no test notices is a "survivor", listed in
# target/mutants/mutants.out/missed.txt. docs/mutants.md lists the survivors that remain and why
# each is equivalent.
#
#   scripts/mutants.sh                       every area below (935 mutants: days on two cores)
#   scripts/mutants.sh src/worker/acker.rs src/erase/batch.rs     some files or folders only
#   scripts/mutants.sh --diff main           only the lines changed since `main` (the habit:
#                                            run it on a change before it lands)
#   scripts/mutants.sh --shard 1/40          one fortieth of every area (a sample)
#
# Needs PostgreSQL and RabbitMQ (as the tests do) and cargo-mutants
# (`cargo install cargo-mutants --locked`). Not part of .ci/run: it takes long.
set -euo pipefail
cd "$(dirname "$0")/.."

extra=()
files=()
while [ $# -gt 0 ]; do
    case "$1" in
    --diff)
        diff_file=target/mutants.diff
        mkdir -p target
        git diff "$2" -- src >"$diff_file"
        extra+=(--in-diff "$diff_file")
        shift 2
        ;;
    --shard)
        extra+=(--shard "$2")
        shift 2
        ;;
    *)
        files+=("$1")
        shift
        ;;
    esac
done
if [ ${#files[@]} -eq 0 ]; then
    files=(src/worker src/erase src/deletion src/plan/sql)
fi
args=()
for f in "${files[@]}"; do
    # cargo-mutants matches files, not folders: a folder stands for every file under it.
    if [ -d "$f" ]; then
        args+=(--file "${f%/}/**")
    else
        args+=(--file "$f")
    fi
done

# The tests that exercise these areas: the unit tests, and the integration tests of the worker,
# the erasure paths and the deletion records (their names start with these words).
filters=(
    acker batch faults lifecycle invalid_messages erasure_outcomes chunked size_probe
    shared_rows plan_agreement identity schemas proof ledger http_api migrations tallies
    deadlines plan:: deletion:: erase:: worker::
)
# After `--`, what cargo test takes; after the second, what the test binaries take: the names
# of the tests to run.
mkdir -p target
# cargo-mutants builds a copy of the tree without target/: the browser tests find axe-core here.
if [ -f target/npm/node_modules/axe-core/axe.min.js ]; then
    export AXE_CORE_JS="$PWD/target/npm/node_modules/axe-core/axe.min.js"
fi
exec cargo mutants "${args[@]}" "${extra[@]}" --output target/mutants --timeout 900 -- -- "${filters[@]}"
