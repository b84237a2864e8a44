//! A whole client connection against the real server loop over the in-memory dict: any
//! bytes after one of the hellos (or none). The server must end the conversation by itself
//! once the client has sent everything and half-closed (no hang), never panic, and every
//! byte it sends must be whole lines.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dict_backend::MemoryDict;
use dict_server::{connection, ConnectionSettings, Registry};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const HELLOS: [&[u8]; 4] = [
    b"",
    b"H3\t0\t0\t\tmem\n",
    b"H3\t2\t0\t\tmem\n",
    b"H4\t2\t0\t\tmem\n",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn registry() -> Arc<Registry> {
    let mut registry = Registry::new();
    registry.insert("mem", Arc::new(MemoryDict::new()));
    Arc::new(registry)
}

fuzz_target!(|input: (u8, Vec<u8>)| {
    let (hello, body) = input;
    let mut bytes = HELLOS[usize::from(hello) % HELLOS.len()].to_vec();
    bytes.extend_from_slice(&body);
    runtime().block_on(async move {
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let settings = ConnectionSettings {
            request_timeout: Duration::from_millis(200),
            drain_timeout: Duration::from_millis(500),
            ..ConnectionSettings::default()
        };
        let tasks = TaskTracker::new();
        let server = tokio::spawn(connection::serve(
            server_end,
            registry(),
            settings,
            tasks.clone(),
            CancellationToken::new(),
        ));
        let (mut rd, mut wr) = client_end.into_split();
        let writer = tokio::spawn(async move {
            // The server may close first (a fatal line): the rest is not written.
            let _ = wr.write_all(&bytes).await;
            let _ = wr.shutdown().await;
        });
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut out))
            .await
            .expect("the server ends the connection after the client's EOF")
            .unwrap();
        server.await.expect("no panic in the connection task");
        writer.await.unwrap();
        tasks.close();
        tasks.wait().await;
        assert!(out.is_empty() || out.ends_with(b"\n"), "a partial line: {out:?}");
    });
});
