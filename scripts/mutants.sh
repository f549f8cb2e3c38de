#!/usr/bin/env bash
# Mutation testing: cargo-mutants changes one line of the product at a time and runs the tests
# that cover it; a change no test notices is a "survivor", listed in
# target/mutants/mutants.out/missed.txt. docs/mutants.md lists the survivors that remain and why
# each is equivalent.
#
#   scripts/mutants.sh                       every area below (939 mutants: a day or more on two cores)
#   scripts/mutants.sh src/worker/acker.rs src/erase/batch.rs     some files or folders only
#   scripts/mutants.sh --diff main           only the lines changed since `main` (the habit:
#                                            run it on a change before it lands)
#   scripts/mutants.sh --shard 1/40          one fortieth of every area (a sample)
#   scripts/mutants.sh --jobs 2 ...          two mutants at once
#   scripts/mutants.sh --copy-target ...     each copy starts from target/ (build first:
#                                            `cargo build --profile mutants --tests`), so it
#                                            does not build every dependency again
#   scripts/mutants.sh FILE -- --baseline skip   the rest to cargo mutants as it is
#   scripts/mutants.sh FILE -- -- -E 'not test(/^console::/)'   and to nextest after a second --
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
    --jobs)
        extra+=(--jobs "$2")
        shift 2
        ;;
    --copy-target)
        extra+=(--copy-target true)
        shift
        ;;
    --)
        # The rest goes to cargo mutants as it is (`-- --baseline skip`, `-- --list`).
        shift
        extra+=("$@")
        break
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

# Every test of the crate, run by nextest: it stops at the first failure, so a caught mutant
# costs the tests up to the one that catches it, and a survivor the whole suite (about three
# minutes here). `--jobs N` tests N mutants at once, each in its own copy.
mkdir -p target
# cargo-mutants builds a copy of the tree without target/: the browser tests find axe-core here.
if [ -f target/npm/node_modules/axe-core/axe.min.js ]; then
    export AXE_CORE_JS="$PWD/target/npm/node_modules/axe-core/axe.min.js"
fi
# A test that fails once and passes when run again is a flake of a loaded machine, not a catch.
export NEXTEST_RETRIES=1
# Ours first, then what was given: what follows a `--` in it goes to the tests (a filter).
exec cargo mutants "${args[@]}" --test-tool nextest --profile mutants \
    --output target/mutants --timeout 600 "${extra[@]}"
