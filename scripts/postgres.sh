#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 and that the database named
# by DATABASE_URL exists. Starts the machine's cluster when it is down.
set -euo pipefail
host=127.0.0.1 port=5432
if ! pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
	if command -v pg_ctlcluster >/dev/null 2>&1; then
		version=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
		[ -n "$version" ] || { echo "postgres: no PostgreSQL cluster found; install one (apt-get install postgresql) or set DATABASE_URL" >&2; exit 1; }
		echo "postgres: starting cluster $version/main"
		pg_ctlcluster --skip-systemctl-redirect "$version" main start
		for _ in $(seq 1 50); do pg_isready -q -h "$host" -p "$port" && break; sleep 0.2; done
	else
		echo "postgres: nothing answers on $host:$port and pg_ctlcluster is missing; install PostgreSQL 15 (apt-get install postgresql) or set DATABASE_URL" >&2
		exit 1
	fi
fi
pg_isready -q -h "$host" -p "$port" || { echo "postgres: still not answering on $host:$port" >&2; exit 1; }
db=${DATABASE_URL:-}
db=${db##*/}; db=${db%%\?*}
if [ -n "$db" ] && command -v psql >/dev/null 2>&1; then
	if ! psql -h "$host" -p "$port" -U postgres -d postgres -Atc "select 1 from pg_database where datname='$db'" | grep -q 1; then
		psql -h "$host" -p "$port" -U postgres -d postgres -qc "create database \"$db\""
		echo "postgres: created database $db"
	fi
fi
