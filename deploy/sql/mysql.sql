-- Tables of the compose stack's MariaDB (docker-compose.yml), in both databases
-- dovecot and dovecot2 (deploy/mysql/initdb.sql runs this file once per database).
--   quota   priv/quota/storage -> bytes, priv/quota/messages -> messages (quota_clone)
--   kv, userkv, bench: the maps of deploy/dict-rs/*.conf.ext that the test suite uses
-- The statements are those of tests/fixtures/schema-mysql.sql (tests/tests/deploy.rs
-- checks), so that the suite runs against the stack as against tests/scripts/services.sh.
CREATE TABLE IF NOT EXISTS quota (
  username VARCHAR(255) NOT NULL,
  bytes    BIGINT NOT NULL DEFAULT 0,
  messages INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (username)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS kv (
  scope VARCHAR(64)  NOT NULL,
  name  VARCHAR(255) NOT NULL,
  value TEXT,
  PRIMARY KEY (scope, name)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS userkv (
  username VARCHAR(255) NOT NULL,
  name     VARCHAR(255) NOT NULL,
  value    TEXT,
  PRIMARY KEY (username, name)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS bench (
  name  VARCHAR(255) NOT NULL,
  value TEXT,
  PRIMARY KEY (name)
) ENGINE=InnoDB;
