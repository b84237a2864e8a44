//! The real `doveadm dict` (Dovecot 2.3) against our server, on SQLite, MariaDB and
//! PostgreSQL: one suite, three backends, each configured once in Dovecot 2.3 syntax (map
//! file) and once with the same maps in 2.4 syntax (`dict_server { }`). Outputs and exit
//! codes as Dovecot's own server gives them (see protocol-spec/ for the few deliberate
//! differences).

use dict_tests::{doveadm, unique, Backend, DictServer};

fn sorted_lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort_unstable();
    v
}

fn suite(backend: Backend) {
    suite_on(backend, DictServer::start(backend, "quota"));
}

/// The suite against a running server, whichever configuration syntax started it.
fn suite_on(backend: Backend, mut server: DictServer) {
    let is_sql = backend != Backend::Redis;
    let uri = server.uri();
    let scope = unique("s");
    let alice = unique("alice");
    let bob = unique("bob");
    let k = |name: &str| format!("shared/kv/{scope}/{name}");

    // set, get (flow, tab, json), not found
    let r = doveadm(&["dict", "set", &uri, &k("a"), "hello"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (0, ""),
        "{r:?}\n{}",
        server.log()
    );
    assert_eq!(doveadm(&["dict", "set", &uri, &k("b"), "world"]).code, 0);
    let r = doveadm(&["-f", "flow", "dict", "get", &uri, &k("a")]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "hello\n"), "{r:?}");
    let r = doveadm(&["-f", "json", "dict", "get", &uri, &k("a")]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout.split_whitespace().collect::<String>(),
        r#"[{"value":"hello"}]"#
    );
    let r = doveadm(&["-f", "tab", "dict", "get", &uri, &k("a")]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "\nhello\n"), "{r:?}");
    let r = doveadm(&["-f", "flow", "dict", "get", &uri, &k("nonexistent")]);
    assert_eq!(r.code, 68, "{r:?}");
    assert!(r.stderr.contains("doesn't exist"), "{r:?}");

    // priv keys, per user; inc, negative inc, inc on a missing row
    assert_eq!(
        doveadm(&[
            "dict",
            "set",
            "-u",
            &alice,
            &uri,
            "priv/quota/storage",
            "1000"
        ])
        .code,
        0
    );
    assert_eq!(
        doveadm(&[
            "-f",
            "flow",
            "dict",
            "get",
            "-u",
            &alice,
            &uri,
            "priv/quota/storage"
        ])
        .stdout,
        "1000\n"
    );
    assert_eq!(
        doveadm(&[
            "-f",
            "flow",
            "dict",
            "get",
            "-u",
            &bob,
            &uri,
            "priv/quota/storage"
        ])
        .code,
        68
    );
    assert_eq!(
        doveadm(&[
            "dict",
            "inc",
            "-u",
            &alice,
            &uri,
            "priv/quota/storage",
            "24"
        ])
        .code,
        0
    );
    assert_eq!(
        doveadm(&[
            "dict",
            "inc",
            "-u",
            &alice,
            &uri,
            "priv/quota/storage",
            "--",
            "-4"
        ])
        .code,
        0
    );
    assert_eq!(
        doveadm(&[
            "-f",
            "flow",
            "dict",
            "get",
            "-u",
            &alice,
            &uri,
            "priv/quota/storage"
        ])
        .stdout,
        "1020\n"
    );
    let r = doveadm(&["dict", "inc", "-u", &bob, &uri, "priv/quota/messages", "5"]);
    // SQL: no row to update → NOTFOUND (68); Redis: INCRBY creates the key, as in Dovecot.
    assert_eq!(r.code, if is_sql { 68 } else { 0 }, "{r:?}");
    if !is_sql {
        // Dovecot's key layout: <prefix><user>/<rest>
        let raw = dict_tests::redis_get(&format!("{}{alice}/quota/storage", server.redis_prefix));
        assert_eq!(raw, "\"1020\"");
        let bob_messages =
            dict_tests::redis_get(&format!("{}{bob}/quota/messages", server.redis_prefix));
        assert_eq!(bob_messages, "\"5\"");
    }
    if is_sql {
        // multi-value map: M reply, space-separated by doveadm
        assert_eq!(
            doveadm(&[
                "-f",
                "flow",
                "dict",
                "get",
                "-u",
                &alice,
                &uri,
                "priv/quota/both"
            ])
            .stdout,
            "1020 0\n"
        );
        assert_eq!(
            server.sql(&format!(
                "SELECT bytes, messages FROM quota WHERE username = '{alice}'"
            )),
            "1020\t0"
        );
    }

    // iterate: one level, recursive, no values, exact key
    assert_eq!(
        doveadm(&[
            "dict",
            "set",
            &uri,
            &format!("shared/kv/{scope}x/c"),
            "third"
        ])
        .code,
        0
    );
    let r = doveadm(&[
        "-f",
        "tab",
        "dict",
        "iter",
        &uri,
        &format!("shared/kv/{scope}/"),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        sorted_lines(&r.stdout),
        sorted_lines(&format!(
            "key\tvalue\n{}\thello\n{}\tworld\n",
            k("a"),
            k("b")
        ))
    );
    let r = doveadm(&["-f", "tab", "dict", "iter", "-1", &uri, &k("a")]);
    assert_eq!(r.stdout, format!("key\tvalue\n{}\thello\n", k("a")));
    let r = doveadm(&[
        "-f",
        "tab",
        "dict",
        "iter",
        "-R",
        "-V",
        &uri,
        &format!("shared/kv/{scope}/"),
    ]);
    assert_eq!(
        sorted_lines(&r.stdout),
        sorted_lines(&format!("key\n{}\n{}\n", k("a"), k("b")))
    );
    let r = doveadm(&["-f", "json", "dict", "iter", "-1", &uri, &k("b")]);
    assert_eq!(
        r.stdout.split_whitespace().collect::<String>(),
        format!(r#"[{{"key":"{}","value":"world"}}]"#, k("b"))
    );
    let r = doveadm(&[
        "-f",
        "tab",
        "dict",
        "iter",
        "-R",
        "-V",
        "-u",
        &alice,
        &uri,
        "priv/quota/",
    ]);
    assert_eq!(
        r.code, 0,
        "iterating maps without variables must work (Dovecot 2.3 crashes): {r:?}"
    );
    assert_eq!(
        sorted_lines(&r.stdout),
        sorted_lines(if is_sql {
            "key\npriv/quota/storage\npriv/quota/messages\npriv/quota/both\n"
        } else {
            "key\npriv/quota/storage\n"
        })
    );

    // unset deletes the row; unset of nothing is fine
    assert_eq!(doveadm(&["dict", "unset", &uri, &k("b")]).code, 0);
    assert_eq!(doveadm(&["dict", "get", &uri, &k("b")]).code, 68);
    assert_eq!(doveadm(&["dict", "unset", &uri, &k("nonexistent")]).code, 0);

    // server-side failures: exit 75 with Dovecot's texts
    if is_sql {
        let r = doveadm(&["-f", "flow", "dict", "get", &uri, "shared/nomap/x"]);
        assert_eq!(r.code, 75);
        assert!(
            r.stderr
                .contains("sql dict lookup: Invalid/unmapped key: shared/nomap/x"),
            "{r:?}"
        );
        let r = doveadm(&["dict", "set", &uri, "shared/nomap/x", "v"]);
        assert_eq!(r.code, 75);
        assert!(
            r.stderr
                .contains("sql dict set: Invalid/unmapped key: shared/nomap/x"),
            "{r:?}"
        );
        let r = doveadm(&["-f", "tab", "dict", "iter", "-R", &uri, "shared/nomap/"]);
        assert_eq!(r.code, 75);
        assert!(
            r.stderr
                .contains("sql dict iterate failed for shared/nomap/: Invalid/unmapped path"),
            "{r:?}"
        );
    }
    // client-side refusals (usage, 64) and an unknown dict name (server closes, 75)
    assert_eq!(
        doveadm(&["dict", "get", &uri, "priv/quota/storage"]).code,
        64
    );
    assert_eq!(doveadm(&["dict", "get", &uri, "foo/bar"]).code, 64);
    let other = format!("proxy:{}:nosuchdict", server.socket.display());
    let r = doveadm(&["dict", "get", &other, &k("a")]);
    assert_eq!(r.code, 75, "{r:?}");

    // values with quotes, backslashes, SQL wildcards and TABs arrive intact (bound parameters)
    let nasty = "it's a \\ \"test\" 100% _x_ ; DROP TABLE kv; --\tTAB";
    assert_eq!(
        doveadm(&["dict", "set", &uri, &k("nasty'key"), nasty]).code,
        0
    );
    assert_eq!(
        doveadm(&["-f", "flow", "dict", "get", &uri, &k("nasty'key")]).stdout,
        format!("{nasty}\n")
    );
    if is_sql {
        assert_eq!(
            server.sql(&format!("SELECT COUNT(*) FROM kv WHERE scope = '{scope}'")),
            "2"
        );
    }

    // SIGTERM: a clean exit that removes the socket
    let status = server.stop();
    assert!(status.success(), "exit status {status}: {}", server.log());
    assert!(!server.socket.exists(), "socket left behind");
}

#[test]
fn doveadm_dict_on_sqlite() {
    suite(Backend::Sqlite);
}

#[test]
fn doveadm_dict_on_mariadb() {
    suite(Backend::Mysql);
}

#[test]
fn doveadm_dict_on_postgresql() {
    suite(Backend::Pgsql);
}

#[test]
fn doveadm_dict_on_redis() {
    suite(Backend::Redis);
}

/// The same maps and database in Dovecot 2.4 syntax behave the same.
#[test]
fn doveadm_dict_on_sqlite_2_4_config() {
    suite_on(
        Backend::Sqlite,
        DictServer::start24(Backend::Sqlite, "quota", ""),
    );
}

#[test]
fn doveadm_dict_on_mariadb_2_4_config() {
    suite_on(
        Backend::Mysql,
        DictServer::start24(Backend::Mysql, "quota", ""),
    );
}

#[test]
fn doveadm_dict_on_postgresql_2_4_config() {
    suite_on(
        Backend::Pgsql,
        DictServer::start24(Backend::Pgsql, "quota", ""),
    );
}

/// The server started bare, as a new user starts it: quota_clone's keys land in the
/// `dict_quota` table (one row per key), other keys in the catch-all tables, and the first
/// thing a new user tries, `doveadm dict iter … priv/quota/`, lists the two quota keys:
/// the `priv/$key` catch-all after the quota map does not fail the iteration
/// (protocol-spec §9).
#[test]
fn doveadm_dict_on_the_embedded_default() {
    let server = DictServer::start_embedded();
    let uri = server.uri();
    let alice = unique("alice");
    let set = |key: &str, value: &str| {
        let r = doveadm(&["dict", "set", "-u", &alice, &uri, key, value]);
        assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
    };
    let get = |key: &str| doveadm(&["-f", "flow", "dict", "get", "-u", &alice, &uri, key]);
    set("priv/quota/storage", "1000");
    set("priv/quota/messages", "7");
    set("priv/vendor/note", "hello");
    let r = doveadm(&["dict", "set", &uri, "shared/motd", "hi"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(get("priv/quota/storage").stdout, "1000\n");
    assert_eq!(get("priv/quota/messages").stdout, "7\n");
    assert_eq!(get("priv/vendor/note").stdout, "hello\n");
    assert_eq!(
        server.sql(&format!(
            "SELECT name, value FROM dict_quota WHERE username = '{alice}' ORDER BY name"
        )),
        "messages\t7\nstorage\t1000"
    );
    assert_eq!(
        server.sql(&format!(
            "SELECT dict_key, value FROM dict_priv WHERE username = '{alice}'"
        )),
        "vendor/note\thello"
    );
    assert_eq!(
        server.sql("SELECT value FROM dict_shared WHERE dict_key = 'motd'"),
        "hi"
    );

    let iter = |args: &[&str]| {
        let mut all = vec!["-f", "flow", "dict", "iter", "-u", &alice];
        all.extend_from_slice(args);
        let r = doveadm(&all);
        assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
        let mut lines: Vec<String> = r.stdout.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        iter(&[&uri, "priv/quota/"]),
        [
            "key=priv/quota/messages value=7",
            "key=priv/quota/storage value=1000"
        ]
    );
    // Recursive: every map under priv/, the catch-all's rows included.
    assert_eq!(
        iter(&["-R", &uri, "priv/"]),
        [
            "key=priv/quota/messages value=7",
            "key=priv/quota/storage value=1000",
            "key=priv/vendor/note value=hello"
        ]
    );
    // Alone, the catch-all still answers as Dovecot does for a path deeper than its key.
    let r = doveadm(&["dict", "iter", "-u", &alice, &uri, "priv/vendor/"]);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(
        r.stderr.contains(
            "dict-server returned failure: sql dict iterate failed for priv/vendor/: \
             Key continues past the matched pattern priv/$"
        ),
        "{r:?}"
    );
}
