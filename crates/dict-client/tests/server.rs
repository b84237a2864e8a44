//! The client against the project's own server, in-process, with the memory backend.

mod common;

use std::time::Duration;

use common::TestServer;
use dict_client::{Client, ClientOptions, CommitResult, IterRow, IterateFlags, Protocol};
use futures::TryStreamExt;

fn opts() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

async fn keys(
    client: &Client,
    path: &str,
    user: &str,
    flags: IterateFlags,
    max_rows: u64,
) -> Vec<IterRow> {
    client
        .iterate(path, user, flags, max_rows)
        .try_collect()
        .await
        .unwrap()
}

fn row(key: &str, value: &str) -> IterRow {
    IterRow {
        key: key.into(),
        values: vec![value.into()],
    }
}

async fn lookups_transactions_and_iteration(protocol: Protocol) {
    let server = TestServer::start().await;
    let options = ClientOptions {
        protocol,
        base_dir: server.base_dir(),
        ..opts()
    };
    // proxy::mem resolves to <base_dir>/dict.
    let client = Client::open("proxy::mem", options).unwrap();

    let mut tx = client.transaction("alice");
    tx.set("priv/quota/storage", "100").unwrap();
    tx.set("shared/t/a", "1").unwrap();
    tx.set("shared/t/b", "x\ty\nz").unwrap();
    tx.set("shared/t/c/d", "deep").unwrap();
    tx.set("shared/n", "5").unwrap();
    assert_eq!(tx.commit().await, CommitResult::Ok);

    assert_eq!(
        client.lookup("priv/quota/storage", "alice").await.unwrap(),
        Some(b"100".to_vec())
    );
    assert_eq!(
        client.lookup("priv/quota/storage", "bob").await.unwrap(),
        None
    );
    assert_eq!(
        client.lookup("shared/t/b", "").await.unwrap(),
        Some(b"x\ty\nz".to_vec())
    );

    let mut tx = client.transaction("");
    tx.inc("shared/n", -7).unwrap();
    assert_eq!(tx.commit().await, CommitResult::Ok);
    assert_eq!(
        client.lookup("shared/n", "").await.unwrap(),
        Some(b"-2".to_vec())
    );
    let mut tx = client.transaction("");
    tx.inc("shared/missing", 1).unwrap();
    tx.set("shared/also", "written").unwrap();
    assert_eq!(tx.commit().await, CommitResult::NotFound);
    assert_eq!(
        client.lookup("shared/also", "").await.unwrap(),
        Some(b"written".to_vec())
    );
    let mut tx = client.transaction("");
    tx.unset("shared/also").unwrap();
    assert_eq!(tx.commit().await, CommitResult::Ok);
    assert_eq!(client.lookup("shared/also", "").await.unwrap(), None);

    let one_level = keys(&client, "shared/t/", "", IterateFlags::empty(), 0).await;
    assert_eq!(
        one_level,
        [row("shared/t/a", "1"), row("shared/t/b", "x\ty\nz")]
    );
    let all = keys(&client, "shared/t/", "", IterateFlags::RECURSE, 0).await;
    assert_eq!(all.len(), 3);
    let limited = keys(&client, "shared/t/", "", IterateFlags::RECURSE, 2).await;
    assert_eq!(limited.len(), 2);
    let exact = keys(&client, "shared/t/a", "", IterateFlags::EXACT_KEY, 0).await;
    assert_eq!(exact, [row("shared/t/a", "1")]);
    let no_value = keys(
        &client,
        "shared/t/",
        "",
        IterateFlags::NO_VALUE | IterateFlags::RECURSE,
        0,
    )
    .await;
    assert!(
        no_value.iter().all(|r| r.values == [Vec::<u8>::new()]),
        "{no_value:?}"
    );
    assert_eq!(
        keys(&client, "priv/quota/", "alice", IterateFlags::empty(), 0).await,
        [row("priv/quota/storage", "100")]
    );

    // Rolled back: nothing written.
    let mut tx = client.transaction("");
    tx.set("shared/rolled", "x").unwrap();
    tx.rollback();
    assert_eq!(client.lookup("shared/rolled", "").await.unwrap(), None);
    server.stop().await;
}

#[tokio::test]
async fn major_3_against_our_server() {
    lookups_transactions_and_iteration(Protocol::V3).await;
}

#[tokio::test]
async fn major_4_against_our_server() {
    lookups_transactions_and_iteration(Protocol::V4).await;
}

#[tokio::test]
async fn multi_value_lookups() {
    let server = TestServer::start().await;
    let client = Client::open(&server.uri("multi"), opts()).unwrap();
    let mut tx = client.transaction("");
    tx.set("shared/multi/k", "a\tb|42").unwrap();
    assert_eq!(tx.commit().await, CommitResult::Ok);
    assert_eq!(
        client.lookup_values("shared/multi/k", "").await.unwrap(),
        Some(vec![b"a\tb".to_vec(), b"42".to_vec()])
    );
    assert_eq!(
        client.lookup("shared/multi/k", "").await.unwrap(),
        Some(b"a\tb".to_vec())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_pipelined_on_one_connection() {
    let server = TestServer::start().await;
    let client = Client::open(&server.uri("mem"), opts()).unwrap();
    let writes = (0..100).map(|i| {
        let client = client.clone();
        async move {
            let mut tx = client.transaction("");
            tx.set(format!("shared/p/{i}"), i.to_string()).unwrap();
            tx.commit().await
        }
    });
    let results = futures::future::join_all(writes).await;
    assert!(results.iter().all(|r| *r == CommitResult::Ok));
    let reads = (0..300).map(|i| {
        let client = client.clone();
        async move {
            (
                i % 100,
                client.lookup(format!("shared/p/{}", i % 100), "").await,
            )
        }
    });
    for (i, value) in futures::future::join_all(reads).await {
        assert_eq!(value.unwrap(), Some(i.to_string().into_bytes()));
    }
    assert_eq!(
        keys(&client, "shared/p/", "", IterateFlags::empty(), 0)
            .await
            .len(),
        100
    );
    server.stop().await;
}
