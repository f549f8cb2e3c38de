#!/usr/bin/env bash
# What the triggers on erasure.deletions cost its writes: a deletion recorded PENDING and then
# ended DONE (bench/sql/deletion-writes.sql), under pgbench, with the tallies' and the
# resolution's triggers on and off, alternately, `ROUNDS` times. Prints transactions per second.
#
#   bench/triggers.sh DATABASE      # a database the service has migrated (not production:
#                                   # it adds deletions, and turns the triggers off while it runs)
set -euo pipefail
db=${1:?the database to measure in}
rounds=${ROUNDS:-3}
seconds=${SECONDS_EACH:-15}
here=$(dirname "$0")
psql_() { psql -h "${PGHOST:-127.0.0.1}" -U "${PGUSER:-postgres}" -d "$db" -qAt -c "$1"; }
triggers() { # ENABLE or DISABLE
    for t in deletions_tally_insert deletions_tally_update deletions_tally_delete deletions_resolve_failures_insert deletions_resolve_failures_update; do
        psql_ "ALTER TABLE erasure.deletions $1 TRIGGER $t"
    done
}
trap 'triggers ENABLE' EXIT
run() {
    pgbench -h "${PGHOST:-127.0.0.1}" -U "${PGUSER:-postgres}" -n -f "$here/sql/deletion-writes.sql" \
        -c 4 -j 2 -T "$seconds" "$db" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
for round in $(seq "$rounds"); do
    triggers ENABLE
    with=$(run)
    triggers DISABLE
    without=$(run)
    echo "round $round: with triggers $with tps, without $without tps, ratio $(awk "BEGIN { printf \"%.2f\", $with / $without }")"
done
