#!/bin/sh
# PostgreSQL's entrypoint (deploy/db/Dockerfile). On the first start, with an empty
# $PGDATA: a cluster whose superuser "postgres" logs in only over the container's own
# unix socket, a login role $POSTGRES_USER with the password $POSTGRES_PASSWORD (scram),
# owning the database $POSTGRES_DB, reachable over TCP from the compose network.
# The app's schema is made by the app itself (its migrations run when a node starts).
set -eu
user=${POSTGRES_USER:-pneumo}
db=${POSTGRES_DB:-pneumo}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?is not set (deploy/example.env)}"
  case $user$db in
    *[!a-z0-9_]*) echo "error: POSTGRES_USER and POSTGRES_DB: lower-case letters, digits, _" >&2
                  exit 1 ;;
  esac
  echo "db: first start, making the cluster in $PGDATA"
  initdb -D "$PGDATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -s start
  # the password is passed as a psql variable, quoted by psql (:'pw')
  psql -q -v ON_ERROR_STOP=1 -v pw="$POSTGRES_PASSWORD" -U postgres -d postgres <<SQL
CREATE ROLE $user LOGIN PASSWORD :'pw';
CREATE DATABASE $db OWNER $user;
SQL
  pg_ctl -D "$PGDATA" -m fast -w -s stop
  echo "db: role $user owns database $db"
fi
exec "$@"
