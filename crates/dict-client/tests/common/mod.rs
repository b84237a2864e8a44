//! Test helpers: a scripted fake dict server that records what it reads, and the project's
//! own server run in-process.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dict_backend::{
    CommitResult, Dict, DictError, IterRow, IterateOptions, MemoryDict, Transaction,
};
use dict_server::testing::InProcessServer;
use dict_server::{Registry, ServerSettings};
use futures::stream::{BoxStream, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixListener;

/// One accepted connection of the fake server.
pub struct Session {
    pub index: usize,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    log: Arc<Mutex<Vec<(usize, String)>>>,
}

impl Session {
    /// The next line without its LF (recorded in the log), or `None` at EOF.
    pub async fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        self.log.lock().unwrap().push((self.index, line.clone()));
        Some(line)
    }

    /// Reads `n` lines (panics at EOF).
    pub async fn lines(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.line().await.expect("client closed early"));
        }
        out
    }

    pub async fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.unwrap();
    }

    /// Waits until the client closes its side.
    pub async fn until_eof(&mut self) {
        while self.line().await.is_some() {}
    }
}

type Handler = Arc<dyn Fn(Session) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A fake server: every connection runs the handler; every line read is logged.
pub struct FakeServer {
    pub path: PathBuf,
    pub log: Arc<Mutex<Vec<(usize, String)>>>,
    pub accepted: Arc<Mutex<usize>>,
    _dir: tempfile::TempDir,
}

impl FakeServer {
    pub fn start<F, Fut>(handler: F) -> FakeServer
    where
        F: Fn(Session) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |s| Box::pin(handler(s)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(0));
        let (log2, accepted2) = (log.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let index = {
                    let mut n = accepted2.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let (r, w) = stream.into_split();
                let session = Session {
                    index,
                    reader: BufReader::new(r),
                    writer: w,
                    log: log2.clone(),
                };
                tokio::spawn(handler(session));
            }
        });
        FakeServer {
            path,
            log,
            accepted,
            _dir: dir,
        }
    }

    pub fn uri(&self, name: &str) -> String {
        format!("proxy:{}:{name}", self.path.display())
    }

    /// Lines read on connection `index`.
    pub fn lines_of(&self, index: usize) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, l)| l.clone())
            .collect()
    }

    pub fn all_lines(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    pub fn connections(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

/// Values of keys under `shared/multi/` are stored joined by `|` and come back as several
/// values, as a multi-column SQL map returns them.
#[derive(Default)]
pub struct MultiDict(MemoryDict);

fn split_multi(key: &[u8], value: Vec<u8>) -> Vec<Vec<u8>> {
    if key.starts_with(b"shared/multi/") {
        value.split(|&b| b == b'|').map(<[u8]>::to_vec).collect()
    } else {
        vec![value]
    }
}

#[async_trait]
impl Dict for MultiDict {
    async fn lookup(&self, key: &[u8], username: &[u8]) -> Result<Option<Vec<Vec<u8>>>, DictError> {
        Ok(self
            .0
            .lookup(key, username)
            .await?
            .map(|mut v| split_multi(key, v.swap_remove(0))))
    }

    fn iterate(
        &self,
        path: &[u8],
        username: &[u8],
        options: IterateOptions,
    ) -> BoxStream<'static, Result<IterRow, DictError>> {
        let no_value = options.no_value;
        self.0
            .iterate(path, username, options)
            .map(move |row| {
                row.map(|mut r| {
                    if !no_value {
                        let v = r.values.swap_remove(0);
                        r.values = split_multi(&r.key, v);
                    }
                    r
                })
            })
            .boxed()
    }

    async fn commit(&self, txn: Transaction) -> CommitResult {
        self.0.commit(txn).await
    }
}

/// The project's server, in-process, serving `mem` (MemoryDict) and `multi` (MultiDict).
pub struct TestServer(InProcessServer);

impl std::ops::Deref for TestServer {
    type Target = InProcessServer;
    fn deref(&self) -> &InProcessServer {
        &self.0
    }
}

impl TestServer {
    /// Listens on `<tmp>/run/dict`, so `proxy::mem` resolves under base_dir `<tmp>/run`.
    pub async fn start() -> TestServer {
        let mut registry = Registry::new();
        registry.insert("mem", Arc::new(MemoryDict::new()));
        registry.insert("multi", Arc::new(MultiDict::default()));
        TestServer(
            InProcessServer::start_at(registry, ServerSettings::default(), Path::new("run/dict"))
                .await,
        )
    }

    pub fn uri(&self, name: &str) -> String {
        format!("proxy:{}:{name}", self.path.display())
    }

    pub fn base_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub async fn stop(self) {
        self.0.stop().await;
    }
}
