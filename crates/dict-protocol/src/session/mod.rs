//! The state of one connection without I/O, per side: lines in, matched replies out. The
//! caller owns the socket and the clock; these types only decide what a line means.

pub mod client;
