//! The key namespaces (protocol-spec §4 and §9): a key or iteration path starts with `priv/`
//! (private to a user, so it needs a username) or `shared/` (the same for every user);
//! anything else is refused. The parser leaves this rule to its callers, which word the
//! refusal each in its own way (the server, the client library, the CLI).

/// The prefix of a user's private keys.
pub const PRIV_PREFIX: &[u8] = b"priv/";
/// The prefix of keys shared by all users.
pub const SHARED_PREFIX: &[u8] = b"shared/";

/// The namespace of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// `priv/`: per user; needs a username.
    Private,
    /// `shared/`: global; the username is ignored.
    Shared,
}

impl Namespace {
    /// The prefix that puts a key in this namespace.
    pub fn prefix(self) -> &'static [u8] {
        match self {
            Namespace::Private => PRIV_PREFIX,
            Namespace::Shared => SHARED_PREFIX,
        }
    }
}

/// The namespace `key` is in, or `None` when it is in neither.
pub fn key_namespace(key: &[u8]) -> Option<Namespace> {
    if key.starts_with(PRIV_PREFIX) {
        Some(Namespace::Private)
    } else if key.starts_with(SHARED_PREFIX) {
        Some(Namespace::Shared)
    } else {
        None
    }
}

/// Why a key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// The key starts with neither `priv/` nor `shared/`.
    NoNamespace,
    /// A `priv/` key without a username.
    NoUsername,
}

/// Checks `key`, used on behalf of `username` (empty: none), against the namespace rule.
pub fn check_key(key: &[u8], username: &[u8]) -> Result<Namespace, KeyRefusal> {
    match key_namespace(key) {
        None => Err(KeyRefusal::NoNamespace),
        Some(Namespace::Private) if username.is_empty() => Err(KeyRefusal::NoUsername),
        Some(namespace) => Ok(namespace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_rule() {
        assert_eq!(check_key(b"shared/x", b""), Ok(Namespace::Shared));
        assert_eq!(check_key(b"priv/x", b"u"), Ok(Namespace::Private));
        assert_eq!(check_key(b"priv/x", b""), Err(KeyRefusal::NoUsername));
        assert_eq!(check_key(b"private/x", b"u"), Err(KeyRefusal::NoNamespace));
        assert_eq!(check_key(b"shared", b"u"), Err(KeyRefusal::NoNamespace));
        assert_eq!(key_namespace(b"priv/"), Some(Namespace::Private));
        assert_eq!(Namespace::Shared.prefix(), b"shared/");
    }
}
