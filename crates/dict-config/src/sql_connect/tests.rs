use super::*;

fn mysql(s: &str) -> MysqlConnect {
    match SqlConnect::parse(SqlDriver::Mysql, s).unwrap() {
        SqlConnect::Mysql(c) => *c,
        other => panic!("{other:?}"),
    }
}

fn pg(s: &str) -> PgsqlConnect {
    match SqlConnect::parse(SqlDriver::Pgsql, s).unwrap() {
        SqlConnect::Pgsql(c) => *c,
        other => panic!("{other:?}"),
    }
}

/// parse → print → parse gives the same value, and printing is stable.
fn round_trip(driver: SqlDriver, s: &str) -> SqlConnect {
    let first = SqlConnect::parse(driver, s).unwrap();
    let printed = first.to_connect_string().unwrap();
    let again = SqlConnect::parse(driver, &printed).unwrap();
    assert_eq!(again, first, "{s} -> {printed}");
    assert_eq!(again.to_connect_string().unwrap(), printed);
    first
}

#[test]
fn sqlite_is_a_path() {
    assert_eq!(
        SqlConnect::parse(SqlDriver::Sqlite, "/var/lib/dovecot/dict db.sqlite").unwrap(),
        SqlConnect::Sqlite {
            path: PathBuf::from("/var/lib/dovecot/dict db.sqlite"),
            options: SqliteOptions::default(),
        }
    );
    assert!(SqlConnect::parse(SqlDriver::Sqlite, "").is_err());
    round_trip(SqlDriver::Sqlite, "/var/lib/dovecot/dict db.sqlite");
}

#[test]
fn mysql_settings() {
    let c = mysql(
        "host=db1.example.org host=/run/my.sock port=3307 user=dovecot password=p=w dbname=mail maxconns=9 connect_timeout=2 read_timeout=7 write_timeout=4 client_flags=2 option_group=x",
    );
    assert_eq!(c.hosts, ["db1.example.org", "/run/my.sock"]);
    assert_eq!(c.port, Some(3307));
    assert_eq!(
        (
            c.user.as_deref(),
            c.password.as_deref(),
            c.dbname.as_deref()
        ),
        (Some("dovecot"), Some("p=w"), Some("mail"))
    );
    assert_eq!(
        (
            c.maxconns,
            c.connect_timeout,
            c.read_timeout,
            c.write_timeout
        ),
        (Some(9), Some(2), Some(7), Some(4))
    );
    assert_eq!(mysql("host=127.0.0.1 dbname=x").maxconns, None);
}

#[test]
fn mysql_refusals() {
    let err = |s| SqlConnect::parse(SqlDriver::Mysql, s).unwrap_err();
    assert_eq!(
        err("host=x foo=bar"),
        "mysql: unknown connect string setting: foo"
    );
    assert_eq!(err("host"), "mysql: missing value in connect string: host");
    assert!(err("maxconns=0").contains("invalid maxconns"));
    assert!(err("port=x").contains("invalid port"));
    assert!(err("ssl_verify_server_cert=maybe").contains("expected yes or no"));
    let spaced = SqlConnect::Mysql(Box::new(MysqlConnect {
        password: Some("a b".into()),
        ..MysqlConnect::default()
    }));
    assert!(spaced
        .to_connect_string()
        .unwrap_err()
        .contains("whitespace"));
}

#[test]
fn mysql_tls() {
    let c = mysql("host=db ssl_ca=/etc/ca.pem ssl_cert=/etc/c.pem ssl_key=/etc/k.pem");
    assert!(c.tls.enabled() && c.tls.verify_server_cert);
    assert_eq!(c.tls.ca.as_deref(), Some("/etc/ca.pem"));
    let c = mysql("host=db ssl_ca=/etc/ca.pem ssl_verify_server_cert=no");
    assert!(c.tls.enabled() && !c.tls.verify_server_cert);
    assert!(!mysql("host=db").tls.enabled());
    assert!(mysql("ssl_cipher=HIGH").tls.enabled());
}

#[test]
fn mysql_round_trips() {
    for s in [
        "host=db1 host=db2 host=/run/mysqld/mysqld.sock port=3307 user=u password=s3cr#t dbname=mail maxconns=9",
        "host=db ssl_ca=/etc/ca.pem ssl_cert=/etc/c.pem ssl_key=/etc/k.pem ssl_verify_server_cert=no",
        "ssl_cipher=HIGH connect_timeout=5 read_timeout=20 write_timeout=30 option_file=/etc/my.cnf option_group=dict client_flags=2 ssl_ca_path=/etc/ssl",
        "",
    ] {
        round_trip(SqlDriver::Mysql, s);
    }
    // a fixed order, hosts first
    assert_eq!(
        round_trip(SqlDriver::Mysql, "maxconns=3 user=u host=b host=a")
            .to_connect_string()
            .unwrap(),
        "host=b host=a user=u maxconns=3"
    );
}

#[test]
fn pgsql_conninfo() {
    let c = pg("host=a.example,b.example port=5433 dbname='mail db' user=dovecot password='it\\'s' maxconns=3 connect_timeout=1");
    assert_eq!(c.hosts, ["a.example", "b.example"]);
    assert_eq!((c.port(0), c.port(1)), (Some(5433), Some(5433)));
    assert_eq!(
        (
            c.user.as_deref(),
            c.dbname.as_deref(),
            c.password.as_deref()
        ),
        (Some("dovecot"), Some("mail db"), Some("it's"))
    );
    assert_eq!((c.maxconns, c.connect_timeout), (Some(3), Some(1)));
    let c = pg("host = /run/postgresql   dbname=d host=10.0.0.2");
    assert_eq!(c.hosts, ["/run/postgresql", "10.0.0.2"]);
    let c = pg("host=a,b port=5433,");
    assert_eq!((c.port(0), c.port(1)), (Some(5433), None));
}

#[test]
fn pgsql_target_session_attrs() {
    // Dovecot 2.3 style (repeated host=) and libpq style (a list) give the same hosts
    let c = pg("host=pg1 host=pg2 port=5433,5434 target_session_attrs=read-write");
    assert_eq!(c.hosts, ["pg1", "pg2"]);
    assert_eq!(c.target_session_attrs.as_deref(), Some("read-write"));
    assert!(c.ignored.is_empty());
    assert_eq!(
        c,
        pg("host=pg1,pg2 port=5433,5434 target_session_attrs=read-write")
    );
    let c = pg("postgresql://pg1,pg2/mail?target_session_attrs=primary");
    assert_eq!(c.target_session_attrs.as_deref(), Some("primary"));
    assert_eq!(
        SqlConnect::parse(SqlDriver::Pgsql, "host=a target_session_attrs=writable").unwrap_err(),
        "pgsql: invalid target_session_attrs value: \"writable\""
    );
}

#[test]
fn pgsql_uri() {
    let c = pg("postgresql://us%40er:p%3Aw@h1:5440,h2/my%20db?application_name=dict&maxconns=2");
    assert_eq!(c.hosts, ["h1", "h2"]);
    assert_eq!((c.port(0), c.port(1)), (Some(5440), None));
    assert_eq!(
        (
            c.user.as_deref(),
            c.password.as_deref(),
            c.dbname.as_deref()
        ),
        (Some("us@er"), Some("p:w"), Some("my db"))
    );
    assert_eq!(
        (c.application_name.as_deref(), c.maxconns),
        (Some("dict"), Some(2))
    );
    // printed back as conninfo, which reads to the same value
    let again = pg(&c.to_connect_string());
    assert_eq!(again, c);
}

#[test]
fn pgsql_refusals() {
    let err = |s| SqlConnect::parse(SqlDriver::Pgsql, s).unwrap_err();
    assert_eq!(
        err("host=x bogus=1"),
        "pgsql: invalid connection option \"bogus\""
    );
    assert!(err("host=x dbname").contains("missing \"=\""));
    assert!(err("host=x dbname='abc").contains("unterminated"));
    assert!(err("host=a,b,c port=1,2").contains("could not match"));
    assert!(err("host=a port=x").contains("invalid port number"));
    // known but unsupported settings are kept (the backend logs them)
    assert_eq!(
        pg("host=x keepalives=1").ignored,
        [("keepalives".to_string(), "1".to_string())]
    );
}

#[test]
fn pgsql_round_trips() {
    for s in [
        "host=pg1 host=pg2 host=/run/postgresql port=5433,5434, dbname='my db' user=dovecot password='it\\'s' maxconns=3",
        "host=db sslmode=verify-full sslrootcert=/etc/ca.pem sslcert=/etc/c.pem sslkey=/etc/k.pem connect_timeout=4",
        "application_name=dict options='-c statement_timeout=5s' client_encoding=UTF8 keepalives=1 service=x",
        "host=pg1 host=pg2 target_session_attrs=read-write",
        "",
    ] {
        round_trip(SqlDriver::Pgsql, s);
    }
    assert_eq!(
        round_trip(SqlDriver::Pgsql, "maxconns=3 password=p host=b,a")
            .to_connect_string()
            .unwrap(),
        "host=b host=a password=p maxconns=3"
    );
}
