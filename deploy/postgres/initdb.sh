#!/bin/sh
# First start of the compose stack's PostgreSQL (empty data volume), run by the image's
# entrypoint after it created role and database `dovecot` (POSTGRES_USER, POSTGRES_DB).
# Adds the second database the test suite uses and the tables of deploy/sql/pgsql.sql
# (mounted at /schema) in both.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
	-c "CREATE DATABASE dovecot2 OWNER $POSTGRES_USER"
for db in dovecot dovecot2; do
	psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$db" -f /schema/pgsql.sql
done
