//! Dovecot's dict proxy protocol, without I/O: parse and encode every line a dict client
//! and a dict server exchange, as Dovecot 2.3 (protocol major 3) and 2.4 (major 4) write them.
//!
//! ```
//! use dict_protocol::{LookupReply, Reply, ReplyStyle, Request, ServerLine};
//!
//! // A line as a client sends it (without its LF) means one request…
//! let request = Request::parse(b"Lpriv/quota/storage\talice").unwrap();
//! assert!(matches!(request, Request::Lookup { ref key, .. } if &key[..] == b"priv/quota/storage"));
//!
//! // …and its answer is encoded in the style the hello asked for (here Dovecot 2.3's
//! // ordered style, minor 0: no async ids, no timings).
//! let style = ReplyStyle::ORDERED;
//! let reply = ServerLine::Reply {
//!     async_id: None,
//!     reply: Reply::Lookup(LookupReply::Found(vec![b"1024".as_slice().into()])),
//!     timings: None,
//! };
//! let mut out = Vec::new();
//! reply.encode(style, &mut out);
//! assert_eq!(out, b"O1024\n");
//! ```
//!
//! The protocol in our words is in `protocol-spec/README.md`; its test vectors are in
//! `protocol-spec/vectors/` and are run by this crate's tests.

mod error;
pub mod escape;
mod fields;
mod hello;
pub mod namespace;
mod number;
mod reply;
mod request;
mod search;
pub mod session;

#[cfg(feature = "codec")]
pub mod codec;

pub use error::ProtocolError;
pub use hello::{Hello, ReplyStyle, MAJOR_V3, MAJOR_V4};
pub use reply::{CommitReply, Frame, LookupReply, Reply, ReplyKind, ServerLine, Timings};
pub use request::{IterateFlags, Request, TransactionId};

/// The server's input line limit, LF included (Dovecot's `DICT_CLIENT_MAX_LINE_LENGTH`).
pub const MAX_LINE_LENGTH: usize = 65536;

/// At most this many reply-bearing commands pending per connection before the server stops
/// reading from it.
pub const MAX_PENDING_COMMANDS: usize = 1000;
