#!/usr/bin/env bash
# Starts a throwaway InfluxDB 1.x server on 127.0.0.1:8086 for the tests of
# the EcoAnP InfluxDB source (tests/influx_source.rs).
#
# Usage:   bash .ci/influxd.sh          (or)   source .ci/influxd.sh
#
# - If something already answers `GET /ping` with 204 on 127.0.0.1:8086, it is
#   reused and nothing else happens (so the script is idempotent).
# - Otherwise Debian's `influxdb` package is installed when `influxd` is
#   missing (apt-get, non-interactive; needs root or sudo), a config of its own
#   is written into a fresh temp dir ($INFLUXD_DIR if set, else under
#   $RUNNER_TEMP / $TMPDIR / /tmp) that binds HTTP to 127.0.0.1:8086 and RPC to
#   127.0.0.1:8088, keeps meta/data/wal in that dir and turns off reporting,
#   the _internal monitor store and the UDP/Graphite/collectd/OpenTSDB
#   listeners; `influxd -config ...` is started in the background (log:
#   <dir>/influxd.log, pid: <dir>/influxd.pid).
# - It waits (bounded, ~30 s) for `/ping` to answer 204; on failure it prints
#   the tail of the log and fails (exit 1, or `return 1` when sourced).
# - It ends by printing `INFLUX_URL=http://127.0.0.1:8086`; when sourced it
#   also exports INFLUX_URL.
#
# Sourcing this file defines helper functions prefixed with `_influxd_` and
# does not change the caller's shell options.

_influxd_host=127.0.0.1
_influxd_port=8086
_influxd_rpc_port=8088

# Prints the HTTP status code of GET /ping (or nothing when nothing answers).
_influxd_ping_status() {
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null -m 2 -w '%{http_code}' \
            "http://${_influxd_host}:${_influxd_port}/ping" 2>/dev/null || true
    else
        # Plain bash fallback: /dev/tcp, bounded by `timeout`.
        # shellcheck disable=SC2016 # $1/$2 expand in the inner shell.
        timeout 3 bash -c '
            exec 3<>"/dev/tcp/$1/$2" || exit 0
            printf "GET /ping HTTP/1.0\r\nHost: %s\r\n\r\n" "$1" >&3
            IFS=" " read -r _ code _ <&3 && printf "%s" "$code"
        ' _ "${_influxd_host}" "${_influxd_port}" 2>/dev/null || true
    fi
}

_influxd_answers() {
    [ "$(_influxd_ping_status)" = "204" ]
}

_influxd_install() {
    local sudo=""
    if [ "$(id -u)" != "0" ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "influxd.sh: influxd is not installed and this user is not root (no sudo either)." >&2
            echo "influxd.sh: install Debian's 'influxdb' package, or start an InfluxDB 1.x on ${_influxd_host}:${_influxd_port}." >&2
            return 1
        fi
    fi
    echo "influxd.sh: installing Debian's influxdb package"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || return 1
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends influxdb >/dev/null || return 1
}

_influxd_write_config() {
    local dir="$1"
    cat >"$dir/influxd.conf" <<EOF
# Written by .ci/influxd.sh: a private, loopback-only InfluxDB for tests.
reporting-disabled = true
bind-address = "${_influxd_host}:${_influxd_rpc_port}"

[meta]
  dir = "$dir/meta"

[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "${_influxd_host}:${_influxd_port}"
  auth-enabled = false
  log-enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
EOF
}

_influxd_main() {
    local url="http://${_influxd_host}:${_influxd_port}"

    local status
    status="$(_influxd_ping_status)"
    if [ "$status" = "204" ]; then
        echo "influxd.sh: reusing the InfluxDB that already answers ${url}/ping"
        echo "INFLUX_URL=${url}"
        return 0
    fi
    if [ -n "$status" ] && [ "$status" != "000" ]; then
        echo "influxd.sh: something that is not InfluxDB holds ${_influxd_host}:${_influxd_port} (GET /ping answered HTTP $status, not 204); stop it and run this script again" >&2
        return 1
    fi

    if ! command -v influxd >/dev/null 2>&1; then
        _influxd_install || {
            echo "influxd.sh: could not install influxdb (apt-get failed)" >&2
            return 1
        }
    fi
    if ! command -v influxd >/dev/null 2>&1; then
        echo "influxd.sh: influxd is still not on PATH after installing the influxdb package" >&2
        return 1
    fi

    local dir="${INFLUXD_DIR:-}"
    if [ -z "$dir" ]; then
        local base="${RUNNER_TEMP:-${TMPDIR:-/tmp}}"
        dir="$(mktemp -d "${base%/}/influxd.XXXXXX")" || return 1
    fi
    mkdir -p "$dir/meta" "$dir/data" "$dir/wal" || return 1
    _influxd_write_config "$dir"

    echo "influxd.sh: starting influxd ($(influxd version 2>/dev/null | head -n 1)) in $dir"
    nohup influxd -config "$dir/influxd.conf" >"$dir/influxd.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/influxd.pid"

    local _attempt
    for _attempt in $(seq 1 60); do
        if _influxd_answers; then
            echo "influxd.sh: influxd (pid $pid) answers ${url}/ping; log: $dir/influxd.log"
            echo "INFLUX_URL=${url}"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "influxd.sh: influxd (pid $pid) exited before answering ${url}/ping; last lines of $dir/influxd.log:" >&2
            tail -n 40 "$dir/influxd.log" >&2 || true
            return 1
        fi
        sleep 0.5
    done

    echo "influxd.sh: influxd (pid $pid) did not answer ${url}/ping with 204 within 30 s (it is left running); last lines of $dir/influxd.log:" >&2
    tail -n 40 "$dir/influxd.log" >&2 || true
    return 1
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: report failure with `return`, never end the caller's shell.
    if _influxd_main; then
        export INFLUX_URL="http://${_influxd_host}:${_influxd_port}"
    else
        return 1
    fi
else
    _influxd_main || exit 1
fi
