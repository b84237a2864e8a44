//! A raw dict protocol client for fault tests: it writes exactly the bytes it is given and
//! reads the async-style replies (`*<n>`, `+<n>\t<reply>`) with the moment each arrived.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// One final reply: the command's number on the connection, its text (`O1`, `N`, `Fsql …`)
/// without the timing fields' meaning, and when it was read.
#[derive(Debug, Clone)]
pub struct Reply {
    /// `<n>` of `+<n>`: the reply-bearing command's number on this connection, from 1.
    pub n: u32,
    /// Everything after `+<n>\t`.
    pub text: String,
    /// When the line was read.
    pub at: Instant,
}

impl Reply {
    /// The reply letter: `O`, `N`, `F`, `W`, `M`.
    pub fn letter(&self) -> char {
        self.text.chars().next().unwrap_or(' ')
    }
}

/// How reading stopped before a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// The server closed the connection (or reset it).
    Closed,
    /// Nothing came before the deadline.
    TimedOut,
}

/// A connection that sent a protocol 3 (minor 2) hello: async replies, as Dovecot 2.3.
pub struct RawClient {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl RawClient {
    /// Connects without sending anything.
    pub fn connect_bare(socket: &Path) -> std::io::Result<RawClient> {
        let stream = UnixStream::connect(socket)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(RawClient { stream, reader })
    }

    /// Connects and sends Dovecot 2.3's hello for dict `name`.
    pub fn connect(socket: &Path, name: &str) -> std::io::Result<RawClient> {
        let mut client = Self::connect_bare(socket)?;
        client.send(&format!("H3\t2\t0\t\t{name}\n"))?;
        Ok(client)
    }

    /// Writes `bytes` in one write.
    pub fn send(&mut self, bytes: &str) -> std::io::Result<()> {
        self.stream.write_all(bytes.as_bytes())
    }

    /// The socket, for writes of raw bytes and shutdowns.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The next final reply (skipping `*<n>` lines), waiting until `deadline`.
    pub fn read_reply(&mut self, deadline: Instant) -> Result<Reply, ReadEnd> {
        loop {
            let line = self.read_line(deadline)?;
            if let Some(rest) = line.strip_prefix('+') {
                let (n, text) = rest.split_once('\t').unwrap_or((rest, ""));
                return Ok(Reply {
                    n: n.parse().unwrap_or(0),
                    text: text.to_string(),
                    at: Instant::now(),
                });
            }
        }
    }

    /// Waits until the server closes the connection, or `deadline`; whatever it sends is
    /// read and dropped. `Ok(when)` if it closed.
    pub fn wait_closed(&mut self, deadline: Instant) -> Result<Instant, ReadEnd> {
        loop {
            match self.read_line(deadline) {
                Ok(_) => {}
                Err(ReadEnd::Closed) => return Ok(Instant::now()),
                Err(e) => return Err(e),
            }
        }
    }

    fn read_line(&mut self, deadline: Instant) -> Result<String, ReadEnd> {
        let mut line = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadEnd::TimedOut);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set_read_timeout");
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => return Err(ReadEnd::Closed),
                Ok(_) if line.ends_with(b"\n") => {
                    line.pop();
                    return Ok(String::from_utf8_lossy(&line).into_owned());
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(ReadEnd::Closed),
            }
        }
    }
}

/// One transaction setting `key` to `value` and committing it, as Dovecot 2.3 writes it.
pub fn set_commit(id: u32, key: &str, value: &str) -> String {
    format!("B{id}\t\nS{id}\t{key}\t{value}\nC{id}\n")
}
