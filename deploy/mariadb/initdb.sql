-- First start of the compose stack's MariaDB (empty data volume), run as root by the
-- image's entrypoint after it created database `dovecot` and user `dovecot`
-- (MARIADB_DATABASE, MARIADB_USER). Adds the second database the test suite uses and the
-- tables of deploy/sql/mysql.sql (mounted at /schema) in both.
CREATE DATABASE IF NOT EXISTS dovecot2 CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
GRANT ALL PRIVILEGES ON dovecot2.* TO 'dovecot'@'%';
USE dovecot;
SOURCE /schema/mysql.sql;
USE dovecot2;
SOURCE /schema/mysql.sql;
