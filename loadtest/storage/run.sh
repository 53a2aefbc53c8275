#!/usr/bin/env bash
# Drives each storage shape of schema.sql through the same job lifecycle with pgbench and
# prints, per shape: enqueue and work rates, WAL bytes per job, row versions, the hot
# table's size, and what retention costs.
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres bash loadtest/storage/run.sh [JOBS] [KEPT]
# JOBS jobs go through enqueue, claim (10 at a time) and completion; KEPT finished jobs are
# put in each shape first (a day of history at the rate being simulated).
set -euo pipefail
cd "$(dirname "$0")"
jobs=${1:-20000}
kept=${2:-1000000}
base=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db="${base%/*}/docket_storage_shapes"
psql "$base" -qc "drop database if exists docket_storage_shapes" -c "create database docket_storage_shapes"
trap 'psql "$base" -qc "drop database if exists docket_storage_shapes"' EXIT
psql "$db" -q -v ON_ERROR_STOP=1 -f schema.sql 2>/dev/null
tmp=$(mktemp -d)

# hot: the table claims read; all: the relation to insert into and update through.
declare -A hot=([one_table]=one_table.jobs [list_parts]=list_parts.live [history]=history.live [no_history]=no_history.live)
declare -A all=([one_table]=one_table.jobs [list_parts]=list_parts.jobs [history]=history.live [no_history]=no_history.live)

complete_sql() {
    local shape=$1
    local outcome="state = 'completed', locked_by = null, lease_token = null, finished_at = now()"
    case $shape in
        one_table|list_parts) echo "update ${all[$shape]} set $outcome where lease_token = md5(:tok::text)::uuid and state = 'processing';" ;;
        history) echo "with done as (delete from history.live where lease_token = md5(:tok::text)::uuid and state = 'processing' returning *) insert into history.done select id, queue, kind, payload, 'completed', priority, run_at, attempt, max_attempts, unique_key, expires_at, last_error, errors, dead_letter_reason, null, cancel_requested_at, created_at, attempted_at, now(), null, parked_at, batch_id, group_key from done;" ;;
        no_history) echo "delete from no_history.live where lease_token = md5(:tok::text)::uuid and state = 'processing';" ;;
    esac
}

wal() { psql "$db" -tAc "select pg_current_wal_lsn()"; }
walbytes() { psql "$db" -tAc "select pg_wal_lsn_diff('$2', '$1')::bigint"; }
rate() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$1" | head -1; }

printf '%-11s %9s %9s %9s %9s %11s %11s %9s\n' shape enq/s jobs/s wal_enq wal_work hot_table hot_indexes retention
for shape in one_table list_parts history no_history; do
    # A day of finished jobs, where the shape keeps them.
    case $shape in
        one_table) psql "$db" -qc "insert into one_table.jobs (kind, state, finished_at, attempt) select 'noop', 'completed', now() - interval '1 hour', 1 from generate_series(1, $kept)" ;;
        list_parts) psql "$db" -qc "insert into list_parts.jobs (kind, state, finished_at, attempt) select 'noop', 'completed', now() - interval '1 day', 1 from generate_series(1, $kept)" ;;
        history) psql "$db" -qc "insert into history.done (kind, state, finished_at, attempt) select 'noop', 'completed', now() - interval '1 day', 1 from generate_series(1, $kept)" ;;
    esac
    psql "$db" -qc "vacuum (freeze, analyze)" 2>/dev/null

    echo "insert into ${all[$shape]} (kind, queue) values ('noop', 'default');" > "$tmp/enqueue.sql"
    cat > "$tmp/work.sql" <<SQL
\set tok random(1, 2000000000)
update ${all[$shape]} set state = 'processing', locked_by = '00000000-0000-0000-0000-000000000001', lease_token = md5(:tok::text)::uuid, attempt = attempt + 1, attempted_at = now()
where id in (select id from ${hot[$shape]} where state in ('pending', 'retrying') and parked_at is null and group_key is null and queue = 'default' and run_at <= now() order by priority, run_at, id limit 10 for update skip locked);
$(complete_sql $shape)
SQL
    # Each phase starts just after a checkpoint, so that every shape pays the same full-page
    # images.
    psql "$db" -qc checkpoint; w0=$(wal)
    pgbench -n -c 4 -j 2 -t $((jobs / 4)) -f "$tmp/enqueue.sql" "$db" > "$tmp/enq.out"
    psql "$db" -qc checkpoint; w1=$(wal); work0=$(date +%s%N)
    # 10% more claims than jobs/10: near the end, claims that skip each other's locked rows
    # come back short; the spare ones find nothing and cost a round trip.
    pgbench -n -c 10 -j 2 -t $((jobs / 100 * 11 / 10)) -f "$tmp/work.sql" "$db" > "$tmp/work.out"
    work1=$(date +%s%N); w2=$(wal)
    left=$(psql "$db" -tAc "select coalesce(string_agg(state || ' ' || n, ', '), '') from (select state, count(*) n from ${hot[$shape]} where state <> 'completed' group by state) s")
    [ -z "$left" ] || echo "$shape: left in the hot table: $left" >&2
    hot_size=$(psql "$db" -tAc "select pg_size_pretty(pg_table_size('${hot[$shape]}'))")
    hot_ix=$(psql "$db" -tAc "select pg_size_pretty(pg_indexes_size('${hot[$shape]}'))")
    # Retention: everything finished more than 30 minutes ago goes.
    r0=$(wal); t0=$(date +%s%N)
    case $shape in
        one_table) psql "$db" -qc "delete from one_table.jobs where finished_at < now() - interval '30 minutes'" -c "vacuum one_table.jobs" ;;
        list_parts|history) p="$shape.done_$(date -d yesterday +%Y%m%d)"; psql "$db" -qc "alter table $shape.done detach partition $p" -c "drop table $p" ;;
    esac
    t1=$(date +%s%N); r1=$(wal)
    printf '%-11s %9.0f %9.0f %9d %9d %11s %11s %6d ms %s\n' "$shape" "$(rate "$tmp/enq.out")" \
        "$(( jobs * 1000000000 / (work1 - work0) ))" \
        $(( $(walbytes "$w0" "$w1") / jobs )) $(( $(walbytes "$w1" "$w2") / jobs )) \
        "$hot_size" "$hot_ix" $(( (t1 - t0) / 1000000 )) "($(( $(walbytes "$r0" "$r1") / 1048576 )) MB WAL)"
done
