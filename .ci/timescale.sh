#!/usr/bin/env bash
# A throwaway PostgreSQL cluster that loads TimescaleDB, for the TimescaleDB tests and the
# EcoAnP runs on it. Sourced by .ci/run:
#
#   source .ci/timescale.sh      # then TIMESCALE_URL is set, or unset with one line saying why
#   timescale_ecoanp_check       # `cargo run --example ecoanp` twice on it, checked
#
# - TimescaleDB is looked for in the PostgreSQL that DAGRS_PG_BIN names (as the tests'
#   TestServer does), else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.
#   When that PostgreSQL has no TimescaleDB, ../shared/timescaledb/install.sh (beside the
#   repository) installs the build kept there; without that folder, one line says so and
#   TIMESCALE_URL stays unset, so .ci/run neither builds nor runs the TimescaleDB tests.
# - The cluster is new each time: `initdb` into a temp dir (as user postgres when run as
#   root), its own free port on 127.0.0.1, `shared_preload_libraries = 'timescaledb'`,
#   telemetry off; `pg_ctl` starts it, and it is stopped and removed when the shell exits.
#   The shared server on 5432 is never touched.
# - Exports TIMESCALE_URL=postgres://postgres@127.0.0.1:<port>/postgres.
#
# Sourcing defines helpers prefixed with `_timescale_` and changes no shell option.

_timescale_bin_dir() {
    if [ -n "${DAGRS_PG_BIN:-}" ]; then
        echo "$DAGRS_PG_BIN"
        return
    fi
    local dir
    dir="$(pg_config --bindir 2>/dev/null || true)"
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
        return
    fi
    find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1
}

# Runs a PostgreSQL server program, as user postgres when root (initdb refuses root).
_timescale_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

_timescale_free_port() {
    local port
    for port in $(seq 55432 55532); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

_timescale_stop() {
    if [ -n "${_timescale_dir:-}" ] && [ -d "$_timescale_dir" ]; then
        _timescale_as_owner "$_timescale_bin/pg_ctl" -D "$_timescale_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$_timescale_dir"
    fi
}

_timescale_main() {
    unset TIMESCALE_URL
    _timescale_bin="$(_timescale_bin_dir)"
    if [ -z "$_timescale_bin" ] || [ ! -x "$_timescale_bin/initdb" ]; then
        echo "timescale.sh: no PostgreSQL server programs (initdb) found: TimescaleDB tests and runs skipped, not built or counted"
        return 0
    fi
    local share
    share="$("$_timescale_bin/pg_config" --sharedir 2>/dev/null || pg_config --sharedir)"
    if [ ! -f "$share/extension/timescaledb.control" ]; then
        # The build beside the checkout; DAGRS_SHARED names another `shared` folder.
        local shared_build="${DAGRS_SHARED:-../shared}/timescaledb"
        if [ ! -x "$shared_build/install.sh" ]; then
            echo "timescale.sh: TimescaleDB is not installed for the PostgreSQL in $_timescale_bin and $shared_build/install.sh is missing: TimescaleDB tests and runs skipped, not built or counted"
            return 0
        fi
        bash "$shared_build/install.sh" || return 1
    fi

    local port
    port="$(_timescale_free_port)" || {
        echo "timescale.sh: no free port in 55432-55532 for the TimescaleDB cluster" >&2
        return 1
    }
    _timescale_dir="$(mktemp -d "${TMPDIR:-/tmp}/dagrs-timescale.XXXXXX")" || return 1
    trap _timescale_stop EXIT
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$_timescale_dir"
    fi
    _timescale_as_owner "$_timescale_bin/initdb" -D "$_timescale_dir/data" -A trust -U postgres \
        -E UTF8 --no-sync >"$_timescale_dir/initdb.log" 2>&1 || {
        echo "timescale.sh: initdb failed:" >&2
        cat "$_timescale_dir/initdb.log" >&2
        return 1
    }
    cat >>"$_timescale_dir/data/postgresql.conf" <<EOF
# Written by .ci/timescale.sh: a throwaway cluster that loads TimescaleDB.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$_timescale_dir'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = 'off'
fsync = off
full_page_writes = off
EOF
    if ! _timescale_as_owner "$_timescale_bin/pg_ctl" -D "$_timescale_dir/data" \
        -l "$_timescale_dir/server.log" -w -t 60 start >/dev/null; then
        echo "timescale.sh: the TimescaleDB cluster did not start; last lines of its log:" >&2
        tail -n 20 "$_timescale_dir/server.log" >&2
        return 1
    fi
    export TIMESCALE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    local version
    version="$("$_timescale_bin/psql" "$TIMESCALE_URL" -Atc \
        "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'")"
    echo "timescale.sh: PostgreSQL with TimescaleDB $version preloaded at $TIMESCALE_URL (data in $_timescale_dir)"
}

# What TimescaleDB's catalog says about the EcoAnP database: hypertables, continuous
# aggregates, policy jobs and compression settings, one line each, without ids.
_timescale_catalog() {
    "$_timescale_bin/psql" "$1" -v ON_ERROR_STOP=1 -Atc "
        SELECT 'hypertable ' || hypertable_name || ' compression=' || compression_enabled
        FROM timescaledb_information.hypertables
        UNION ALL
        SELECT 'aggregate ' || view_name || ' on ' || hypertable_name
               || ' compression=' || compression_enabled
               || ' materialized_only=' || materialized_only
        FROM timescaledb_information.continuous_aggregates
        UNION ALL
        SELECT format('job %s on %s every %s window=%s..%s compress_after=%s',
                      j.proc_name, coalesce(c.view_name, j.hypertable_name), j.schedule_interval,
                      (j.config->>'start_offset')::interval, (j.config->>'end_offset')::interval,
                      (j.config->>'compress_after')::interval)
        FROM timescaledb_information.jobs j
        LEFT JOIN timescaledb_information.continuous_aggregates c
          ON (c.view_schema, c.view_name) = (j.hypertable_schema, j.hypertable_name)
          OR (c.materialization_hypertable_schema, c.materialization_hypertable_name)
             = (j.hypertable_schema, j.hypertable_name)
        WHERE j.proc_name IN ('policy_refresh_continuous_aggregate', 'policy_compression')
        UNION ALL
        SELECT 'segment ' || coalesce(c.view_name, s.hypertable_name) || ' by ' || s.attname
        FROM timescaledb_information.compression_settings s
        LEFT JOIN timescaledb_information.continuous_aggregates c
          ON (c.materialization_hypertable_schema, c.materialization_hypertable_name)
             = (s.hypertable_schema, s.hypertable_name)
        WHERE s.segmentby_column_index IS NOT NULL
        ORDER BY 1"
}

# `cargo run --example ecoanp` twice on a new database of the TimescaleDB cluster: the first
# run sets up what the seed's TimescaleDB has, the second changes none of it.
timescale_ecoanp_check() {
    local url="${TIMESCALE_URL%/*}/ecoanp"
    local expected
    expected="$(cat <<'EOF'
aggregate influx_agg_1_hour on influx_hist compression=true materialized_only=true
aggregate influx_agg_1_minute on influx_hist compression=true materialized_only=true
aggregate influx_agg_5_minutes on influx_hist compression=true materialized_only=true
hypertable influx_hist compression=true
job policy_compression on influx_agg_1_hour every 12:00:00 window=.. compress_after=7 days
job policy_compression on influx_agg_1_minute every 12:00:00 window=.. compress_after=7 days
job policy_compression on influx_agg_5_minutes every 12:00:00 window=.. compress_after=7 days
job policy_compression on influx_hist every 12:00:00 window=.. compress_after=7 days
job policy_refresh_continuous_aggregate on influx_agg_1_hour every 00:05:00 window=02:01:00..00:01:00 compress_after=
job policy_refresh_continuous_aggregate on influx_agg_1_minute every 00:05:00 window=01:00:00..00:01:00 compress_after=
job policy_refresh_continuous_aggregate on influx_agg_5_minutes every 00:05:00 window=01:00:00..00:01:00 compress_after=
segment influx_agg_1_hour by tag_name
segment influx_agg_1_minute by tag_name
segment influx_agg_5_minutes by tag_name
segment influx_hist by tag_name
EOF
)"
    local hour_before hour_after
    hour_before="$(date -u +%Y%m%d%H)"
    env -u INFLUX_URL DATABASE_URL="$url" cargo run --example ecoanp || return 1
    local first
    first="$(_timescale_catalog "$url")" || return 1
    if [ "$first" != "$expected" ]; then
        echo "timescale.sh: after the first run, TimescaleDB's catalog differs from what the seed sets up:" >&2
        diff <(echo "$expected") <(echo "$first") >&2
        return 1
    fi
    local rows_first rows_second
    rows_first="$("$_timescale_bin/psql" "$url" -Atc "SELECT (SELECT count(*) FROM influx_hist) || ' ' || (SELECT count(*) FROM influx_agg_1_minute)")"
    env -u INFLUX_URL DATABASE_URL="$url" cargo run --example ecoanp || return 1
    local second
    second="$(_timescale_catalog "$url")" || return 1
    rows_second="$("$_timescale_bin/psql" "$url" -Atc "SELECT (SELECT count(*) FROM influx_hist) || ' ' || (SELECT count(*) FROM influx_agg_1_minute)")"
    hour_after="$(date -u +%Y%m%d%H)"
    if [ "$hour_after" != "$hour_before" ]; then
        # The runs read the last full hour: across an hour's end the second reads a new one.
        echo "timescale.sh: an hour ended between the runs; row counts not compared"
        rows_second="$rows_first"
    fi
    if [ "$second" != "$first" ] || [ "$rows_second" != "$rows_first" ]; then
        echo "timescale.sh: the second run of the example changed TimescaleDB's catalog or the row counts:" >&2
        diff <(echo "$first"; echo "rows: $rows_first") <(echo "$second"; echo "rows: $rows_second") >&2
        return 1
    fi
    echo "timescale.sh: ecoanp on TimescaleDB: hypertable, 3 continuous aggregates, 7 policy jobs; the second run changed nothing (rows: $rows_second)"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    _timescale_main || return 1
else
    echo "timescale.sh: source it (source .ci/timescale.sh), so the cluster lives as long as the shell" >&2
    exit 2
fi
