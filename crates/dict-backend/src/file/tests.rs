use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use dict_config::FileLock;
use futures::StreamExt;

use super::*;

fn dict(path: &Path, lock: FileLock) -> FileDict {
    FileDict::new(FileParams {
        path: path.to_path_buf(),
        lock,
    })
}

fn set(key: &str, value: &str) -> Change {
    Change::Set {
        key: key.into(),
        value: value.into(),
    }
}

fn inc(key: &str, diff: i64) -> Change {
    Change::Inc {
        key: key.into(),
        diff,
    }
}

fn txn(changes: Vec<Change>) -> Transaction {
    Transaction {
        username: b"user".to_vec(),
        changes,
        ..Transaction::default()
    }
}

async fn get(d: &FileDict, key: &str) -> Option<String> {
    d.lookup(key.as_bytes(), b"someone")
        .await
        .unwrap()
        .map(|v| String::from_utf8(v[0].clone()).unwrap())
}

async fn keys(d: &FileDict, path: &str, options: IterateOptions) -> Vec<String> {
    d.iterate(path.as_bytes(), b"", options)
        .map(|r| String::from_utf8(r.unwrap().key).unwrap())
        .collect()
        .await
}

#[tokio::test]
async fn commits_write_the_file_dovecot_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/dict.txt");
    let d = dict(&path, FileLock::Dotlock);
    assert_eq!(get(&d, "shared/a").await, None);
    let r = d
        .commit(txn(vec![
            set("shared/a", "1"),
            set("priv/quota/storage", "10\t20"),
            set("shared/gone", "x"),
            Change::Unset {
                key: b"shared/gone".to_vec(),
            },
        ]))
        .await;
    assert_eq!(r, CommitResult::Ok);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"priv/quota/storage\n10\x01t20\nshared/a\n1\n".to_vec()
    );
    // priv/ keys are not per user in a file dict
    assert_eq!(
        get(&d, "priv/quota/storage").await.as_deref(),
        Some("10\t20")
    );
    let mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700, "new directories are private, as Dovecot's");
    assert!(!dir.path().join("sub/dir/dict.txt.lock").exists());
}

#[tokio::test]
async fn a_file_changed_by_someone_else_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let d = dict(&path, FileLock::Fcntl);
    std::fs::write(&path, "shared/x\nold\n").unwrap();
    assert_eq!(get(&d, "shared/x").await.as_deref(), Some("old"));
    std::fs::write(dir.path().join("new"), "shared/x\nnew!\n").unwrap();
    std::fs::rename(dir.path().join("new"), &path).unwrap();
    assert_eq!(get(&d, "shared/x").await.as_deref(), Some("new!"));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(get(&d, "shared/x").await, None);
}

#[tokio::test]
async fn increments_and_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let d = dict(&path, FileLock::Flock);
    d.commit(txn(vec![set("shared/n", "5")])).await;
    assert_eq!(
        d.commit(txn(vec![
            inc("shared/n", -7),
            inc("shared/none", 1),
            set("shared/s", "v")
        ]))
        .await,
        CommitResult::NotFound
    );
    assert_eq!(get(&d, "shared/n").await.as_deref(), Some("-2"));
    assert_eq!(get(&d, "shared/s").await.as_deref(), Some("v"));
    assert_eq!(get(&d, "shared/none").await, None);
    let before = std::fs::read(&path).unwrap();
    let r = d
        .commit(txn(vec![set("shared/t", "1"), inc("shared/s", 1)]))
        .await;
    assert_eq!(
        r,
        CommitResult::Failed(
            "dict-file: can't add 1 to the value of shared/s: not a number".into()
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
    assert_eq!(get(&d, "shared/t").await, None);
}

#[tokio::test]
async fn iterate_levels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dict(&dir.path().join("d"), FileLock::Dotlock);
    d.commit(txn(vec![
        set("shared/kv/a", "3"),
        set("shared/kv/b", "1"),
        set("shared/kv/b/deep", "2"),
        set("shared/kvx", "0"),
    ]))
    .await;
    let flat = IterateOptions::default();
    assert_eq!(
        keys(&d, "shared/kv/", flat).await,
        ["shared/kv/a", "shared/kv/b"]
    );
    let recurse = IterateOptions {
        recurse: true,
        ..flat
    };
    assert_eq!(
        keys(&d, "shared/kv/", recurse).await,
        ["shared/kv/a", "shared/kv/b", "shared/kv/b/deep"]
    );
    let exact = IterateOptions {
        exact_key: true,
        ..flat
    };
    assert_eq!(keys(&d, "shared/kv/b", exact).await, ["shared/kv/b"]);
    let by_value = IterateOptions {
        sort_by_value: true,
        max_rows: 2,
        ..recurse
    };
    // a plain prefix, as Dovecot's strncmp: shared/kvx is under shared/kv
    assert_eq!(
        keys(&d, "shared/kv", by_value).await,
        ["shared/kvx", "shared/kv/b"]
    );
}

/// Two dicts on one file (as two servers): no increment is lost with either lock that
/// excludes within one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_nothing() {
    for lock in [FileLock::Dotlock, FileLock::Flock] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let (a, b) = (Arc::new(dict(&path, lock)), Arc::new(dict(&path, lock)));
        a.commit(txn(vec![set("shared/n", "0")])).await;
        let mut tasks = Vec::new();
        for d in [a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    assert_eq!(
                        d.commit(txn(vec![inc("shared/n", 1)])).await,
                        CommitResult::Ok
                    );
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            get(&b, "shared/n").await.as_deref(),
            Some("100"),
            "{lock:?}"
        );
    }
}

#[tokio::test]
async fn permissions_survive_a_rewrite_and_stale_dotlocks_go() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    std::fs::write(&path, "shared/a\n1\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let lock = dir.path().join("d.lock");
    let stale = std::fs::File::create(&lock).unwrap();
    stale
        .set_modified(SystemTime::now() - Duration::from_secs(120))
        .unwrap();
    let d = dict(&path, FileLock::Dotlock);
    assert_eq!(
        d.commit(txn(vec![set("shared/b", "2")])).await,
        CommitResult::Ok
    );
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(get(&d, "shared/a").await.as_deref(), Some("1"));
    assert!(!lock.exists());
}

#[tokio::test]
async fn unreadable_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // a directory where the file should be
    let d = dict(dir.path(), FileLock::Dotlock);
    let e = d.lookup(b"shared/a", b"").await.unwrap_err();
    assert!(e.message().starts_with("dict-file: read("), "{e}");
    assert_eq!(e.kind(), crate::ErrorKind::Database);
    assert!(d.check().await.is_err());
    assert!(matches!(
        d.commit(txn(vec![set("shared/a", "1")])).await,
        CommitResult::Failed(_)
    ));
}
