//! The operations of each workload, encoded exactly as Dovecot's dict client writes them
//! (protocol-spec §4, §6), and what their final replies mean.

use std::borrow::Cow;
use std::io::Write;

use bytes::BytesMut;
use clap::ValueEnum;
use dict_protocol::{Hello, IterateFlags, Request, TransactionId};

use crate::stats::Outcome;

/// What each operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// `L shared/bench/k<N>` (use --preload so that lookups hit).
    Lookup,
    /// quota_clone's flush: `B <user>`, `S priv/quota/storage`, `S priv/quota/messages`,
    /// `C`, in one write; users `bench<N>`.
    QuotaTxn,
    /// `B`, `A shared/bench/k<N> 1`, `C` (the keys must exist: --preload).
    Inc,
    /// `I` of `shared/bench/` (one level, at most --iter-rows rows).
    Iter,
    /// Lookups, and with probability --write-ratio a `B`/`S shared/bench/k<N>`/`C`.
    Mixed,
    /// Connect, hello, close, wait for the server to close: no command at all.
    Connections,
}

impl Workload {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Lookup => "lookup",
            Workload::QuotaTxn => "quota-txn",
            Workload::Inc => "inc",
            Workload::Iter => "iter",
            Workload::Mixed => "mixed",
            Workload::Connections => "connections",
        }
    }
}

/// The reply an operation waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Lookup,
    Commit,
    Iterate,
}

/// What a reply line's body says about its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// An iteration row: more lines follow.
    Row,
    /// The final reply.
    Final(Outcome),
    /// Not a reply this operation can get.
    Invalid,
}

impl OpKind {
    /// Reads a reply body (after any `+<n>\t`), per protocol-spec §5.2.
    pub fn classify(self, body: &[u8]) -> Reply {
        let first = body.first().copied();
        match (self, first) {
            (OpKind::Lookup, Some(b'O' | b'M')) => Reply::Final(Outcome::Ok),
            (OpKind::Lookup | OpKind::Commit, Some(b'N')) => Reply::Final(Outcome::NotFound),
            (OpKind::Commit, Some(b'O')) => Reply::Final(Outcome::Ok),
            (OpKind::Commit, Some(b'W')) => Reply::Final(Outcome::Uncertain),
            (OpKind::Iterate, Some(b'O')) => Reply::Row,
            (OpKind::Iterate, None | Some(b'\t')) => Reply::Final(Outcome::Ok),
            (_, Some(b'F')) => Reply::Final(Outcome::Failed),
            _ => Reply::Invalid,
        }
    }
}

/// A small, fast PRNG (SplitMix64): the key choice only needs to be cheap and repeatable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Everything needed to write one operation.
#[derive(Debug, Clone)]
pub struct OpSpec {
    pub workload: Workload,
    /// 3 (Dovecot 2.3) or 4 (Dovecot 2.4: `B` carries expire_secs).
    pub major: u32,
    /// quota-txn users `bench0` .. `bench<users-1>`.
    pub users: u32,
    /// Keys `shared/bench/k0` .. `k<keys-1>`.
    pub keys: u32,
    /// The share of `mixed` operations that are transactions.
    pub write_ratio: f64,
    /// `max_rows` of `iter`.
    pub iter_rows: u64,
}

/// The key of number `n`, matching the `shared/bench/$name` map (table `bench`).
pub fn bench_key(buf: &mut Vec<u8>, n: u32) {
    buf.clear();
    let _ = write!(buf, "shared/bench/k{n}");
}

impl OpSpec {
    /// The hello a client of `major` sends for `dict`.
    pub fn hello(&self, dict: &str, out: &mut BytesMut) {
        let hello = if self.major == 4 {
            Hello::v4(dict.as_bytes())
        } else {
            Hello::v3(dict.as_bytes())
        };
        hello.encode(out);
    }

    fn begin(&self, id: TransactionId, user: &[u8], out: &mut BytesMut) {
        Request::Begin {
            id,
            username: Some(Cow::Borrowed(user)),
            // A 2.4 client always sends the expiry, 0 when none was asked for.
            expire_secs: (self.major == 4).then_some(0),
        }
        .encode(out);
    }

    /// Appends the lines of one operation (transaction `id` if it needs one) to `out`, in
    /// the one write Dovecot's client uses, and returns the reply it waits for. `scratch`
    /// is a reusable buffer.
    pub fn encode(
        &self,
        rng: &mut Rng,
        id: TransactionId,
        scratch: &mut Vec<u8>,
        out: &mut BytesMut,
    ) -> OpKind {
        match self.workload {
            Workload::Lookup => self.lookup(rng, scratch, out),
            Workload::QuotaTxn => {
                scratch.clear();
                let _ = write!(scratch, "bench{}", rng.below(self.users.max(1)));
                self.begin(id, scratch, out);
                let bytes = rng.next_u64() % 10_000_000_000;
                let messages = rng.next_u64() % 100_000;
                for (key, n) in [
                    (&b"priv/quota/storage"[..], bytes),
                    (&b"priv/quota/messages"[..], messages),
                ] {
                    let value = n.to_string();
                    Request::Set {
                        id,
                        key: Cow::Borrowed(key),
                        value: Cow::Borrowed(value.as_bytes()),
                    }
                    .encode(out);
                }
                Request::Commit { id }.encode(out);
                OpKind::Commit
            }
            Workload::Inc => {
                self.begin(id, b"", out);
                bench_key(scratch, rng.below(self.keys.max(1)));
                Request::AtomicInc {
                    id,
                    key: Cow::Borrowed(scratch),
                    diff: 1,
                }
                .encode(out);
                Request::Commit { id }.encode(out);
                OpKind::Commit
            }
            Workload::Iter => {
                Request::Iterate {
                    flags: IterateFlags::empty(),
                    max_rows: self.iter_rows,
                    path: Cow::Borrowed(b"shared/bench/"),
                    username: Some(Cow::Borrowed(b"")),
                }
                .encode(out);
                OpKind::Iterate
            }
            Workload::Mixed if rng.chance(self.write_ratio) => {
                self.begin(id, b"", out);
                let n = rng.below(self.keys.max(1));
                bench_key(scratch, n);
                let value = (u64::from(n) + rng.next_u64() % 1000).to_string();
                Request::Set {
                    id,
                    key: Cow::Borrowed(scratch),
                    value: Cow::Borrowed(value.as_bytes()),
                }
                .encode(out);
                Request::Commit { id }.encode(out);
                OpKind::Commit
            }
            Workload::Mixed => self.lookup(rng, scratch, out),
            // Nothing after the hello.
            Workload::Connections => OpKind::Lookup,
        }
    }

    fn lookup(&self, rng: &mut Rng, scratch: &mut Vec<u8>, out: &mut BytesMut) -> OpKind {
        bench_key(scratch, rng.below(self.keys.max(1)));
        Request::Lookup {
            key: Cow::Borrowed(scratch),
            // Dovecot's client always sends the user field, empty for shared keys.
            username: Some(Cow::Borrowed(b"")),
        }
        .encode(out);
        OpKind::Lookup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(workload: Workload, major: u32) -> OpSpec {
        OpSpec {
            workload,
            major,
            users: 1,
            keys: 1,
            write_ratio: 1.0,
            iter_rows: 10,
        }
    }

    fn encode(s: &OpSpec) -> String {
        let mut out = BytesMut::new();
        s.encode(&mut Rng::new(1), 7, &mut Vec::new(), &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn lines_as_dovecot_writes_them() {
        let mut out = BytesMut::new();
        spec(Workload::Lookup, 3).hello("sqlite", &mut out);
        assert_eq!(&out[..], b"H3\t2\t0\t\tsqlite\n");
        assert_eq!(encode(&spec(Workload::Lookup, 3)), "Lshared/bench/k0\t\n");
        let q = encode(&spec(Workload::QuotaTxn, 3));
        assert!(q.starts_with("B7\tbench0\nS7\tpriv/quota/storage\t"), "{q}");
        assert!(q.contains("\nS7\tpriv/quota/messages\t"), "{q}");
        assert!(q.ends_with("\nC7\n"), "{q}");
        let q4 = encode(&spec(Workload::QuotaTxn, 4));
        assert!(q4.starts_with("B7\tbench0\t0\n"), "{q4}");
        assert_eq!(
            encode(&spec(Workload::Inc, 3)),
            "B7\t\nA7\tshared/bench/k0\t1\nC7\n"
        );
        assert_eq!(
            encode(&spec(Workload::Iter, 3)),
            "I0\t10\tshared/bench/\t\n"
        );
        assert!(encode(&spec(Workload::Mixed, 3)).starts_with("B7\t\nS7\tshared/bench/k0\t"));
    }

    #[test]
    fn replies() {
        use Outcome::*;
        assert_eq!(OpKind::Lookup.classify(b"Ov\t1\t2\t3\t4"), Reply::Final(Ok));
        assert_eq!(OpKind::Lookup.classify(b"N\t1"), Reply::Final(NotFound));
        assert_eq!(OpKind::Commit.classify(b"O7\t1"), Reply::Final(Ok));
        assert_eq!(OpKind::Commit.classify(b"W7\tx"), Reply::Final(Uncertain));
        assert_eq!(OpKind::Commit.classify(b"F7\tx"), Reply::Final(Failed));
        assert_eq!(OpKind::Iterate.classify(b"Ok\tv"), Reply::Row);
        assert_eq!(OpKind::Iterate.classify(b"\t1\t2\t3\t4"), Reply::Final(Ok));
        assert_eq!(OpKind::Iterate.classify(b""), Reply::Final(Ok));
        assert_eq!(OpKind::Lookup.classify(b"W"), Reply::Invalid);
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::new(3);
        assert!((0..10_000).all(|_| r.below(7) < 7));
        let hits = (0..10_000).filter(|_| r.chance(0.2)).count();
        assert!((1500..2500).contains(&hits), "{hits}");
    }
}
