#!/usr/bin/env bash
# Makes sure PostgreSQL answers at DATABASE_URL (default: 127.0.0.1:5432)
# and that its database exists. When nothing answers on this machine, it
# starts the machine's cluster.
set -euo pipefail
url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/oms?sslmode=disable}
hostport=${url#*@}; hostport=${hostport%%/*}
host=${hostport%:*}; port=${hostport##*:}
[ "$port" = "$hostport" ] && port=5432
db=${url##*/}; db=${db%%\?*}

if ! pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
	case "$host" in
	127.0.0.1 | localhost | ::1) ;;
	*) echo "postgres: nothing answers at $host:$port (DATABASE_URL)" >&2; exit 1 ;;
	esac
	version=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1 || true)
	if [ -z "$version" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
		echo "postgres: nothing answers at $host:$port and no local cluster exists; install PostgreSQL 15 (apt-get install postgresql) or set DATABASE_URL" >&2
		exit 1
	fi
	echo "postgres: starting cluster $version/main"
	pg_ctlcluster --skip-systemctl-redirect "$version" main start
	for _ in $(seq 1 50); do pg_isready -q -h "$host" -p "$port" && break; sleep 0.2; done
	pg_isready -q -h "$host" -p "$port" || { echo "postgres: still not answering at $host:$port" >&2; exit 1; }
fi

admin=${url%/*}/postgres
if [ -n "$db" ] && ! psql "$admin" -Atc "select 1 from pg_database where datname='$db'" | grep -q 1; then
	psql "$admin" -qc "create database \"$db\""
	echo "postgres: created database $db"
fi
