//! Dict keys as Redis keys, exactly as Dovecot lays them out (namespaces: protocol-spec §4):
//! `shared/<rest>` is `<prefix><rest>` and `priv/<rest>` is `<prefix><user>/<rest>`, the
//! username escaped only when it contains `/`. Also the way back, for iteration, and the
//! SCAN pattern of an iteration path.
//!
//! Opt-in (`user_hash_tag=yes`, for Redis Cluster): `priv/<rest>` is
//! `<prefix>{<user>}/<rest>`, so that every key of a user hashes to one slot (the tag) and
//! a commit over a user's keys can be one `MULTI`. Dovecot's dict-redis does not read these
//! keys.

use std::borrow::Cow;

use crate::{key_namespace, Namespace, PRIV_PREFIX, SHARED_PREFIX};

/// The `prefix=` of the dict URI; turns dict keys into Redis keys and back.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyLayout {
    prefix: Vec<u8>,
    /// `{<user>}` instead of `<user>` in `priv/` keys.
    user_hash_tag: bool,
}

/// Where one namespace of one user lives in Redis: every Redis key of it starts with `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    namespace: Namespace,
    /// `<prefix>` for `shared/`, `<prefix><escaped user>/` for `priv/`.
    base: Vec<u8>,
}

impl KeyLayout {
    pub(crate) fn new(prefix: &str) -> Self {
        KeyLayout {
            prefix: prefix.as_bytes().to_vec(),
            user_hash_tag: false,
        }
    }

    /// The layout that puts the (escaped) username in a hash tag.
    pub(crate) fn with_user_hash_tag(self) -> Self {
        KeyLayout {
            user_hash_tag: true,
            ..self
        }
    }

    /// The scope of `key` and the part of the key after `priv/` or `shared/`; `None` for a
    /// key outside both namespaces (the server rejects those before they get here).
    pub(crate) fn split<'k>(&self, key: &'k [u8], username: &[u8]) -> Option<(Scope, &'k [u8])> {
        let namespace = key_namespace(key)?;
        let (base, rest) = match namespace {
            Namespace::Shared => (self.prefix.clone(), &key[SHARED_PREFIX.len()..]),
            Namespace::Private => {
                let user = escape_username(username);
                let mut base = Vec::with_capacity(self.prefix.len() + user.len() + 3);
                base.extend_from_slice(&self.prefix);
                if self.user_hash_tag {
                    base.push(b'{');
                    base.extend_from_slice(&user);
                    base.push(b'}');
                } else {
                    base.extend_from_slice(&user);
                }
                base.push(b'/');
                (base, &key[PRIV_PREFIX.len()..])
            }
        };
        Some((Scope { namespace, base }, rest))
    }

    /// The Redis key of a dict key.
    pub(crate) fn redis_key(&self, key: &[u8], username: &[u8]) -> Option<Vec<u8>> {
        let (scope, rest) = self.split(key, username)?;
        Some(scope.redis_key(rest))
    }
}

/// Every user's Redis key of one `priv/` key.
impl KeyLayout {
    /// The SCAN `MATCH` pattern of `priv/<rest>` for all users: `<prefix>*/<rest>`.
    pub(crate) fn users_pattern(&self, rest: &[u8]) -> Vec<u8> {
        let mut pattern = escape_glob(&self.prefix);
        pattern.extend_from_slice(b"*/");
        pattern.extend_from_slice(&escape_glob(rest));
        pattern
    }

    /// The user whose `priv/<rest>` `redis_key` is. `None` when the part between the
    /// prefix and `/<rest>` is empty or holds a `/`, which no escaped username does (such
    /// keys are `shared/` keys). A `shared/<name>/<rest>` key with a `/`-free name looks
    /// like a user's key: Dovecot's layout cannot tell them apart.
    pub(crate) fn user_of(&self, redis_key: &[u8], rest: &[u8]) -> Option<Vec<u8>> {
        let name = redis_key
            .strip_prefix(&self.prefix[..])?
            .strip_suffix(rest)?
            .strip_suffix(b"/")?;
        let name = if self.user_hash_tag {
            name.strip_prefix(b"{")?.strip_suffix(b"}")?
        } else {
            name
        };
        if name.contains(&b'/') || (name.is_empty() && !self.user_hash_tag) {
            return None;
        }
        Some(unescape_username(name))
    }
}

impl Scope {
    pub(crate) fn redis_key(&self, rest: &[u8]) -> Vec<u8> {
        [&self.base[..], rest].concat()
    }

    /// The dict key of a Redis key under this scope (`None` if it is not under it).
    pub(crate) fn dict_key(&self, redis_key: &[u8]) -> Option<Vec<u8>> {
        let rest = redis_key.strip_prefix(&self.base[..])?;
        let ns = match self.namespace {
            Namespace::Shared => SHARED_PREFIX,
            Namespace::Private => PRIV_PREFIX,
        };
        Some([ns, rest].concat())
    }

    /// The SCAN `MATCH` pattern for every Redis key starting with `base` + `rest`.
    pub(crate) fn scan_pattern(&self, rest: &[u8]) -> Vec<u8> {
        let mut pattern = escape_glob(&self.base);
        pattern.extend_from_slice(&escape_glob(rest));
        pattern.push(b'*');
        pattern
    }
}

/// Dovecot escapes a username only when it contains `/`: then `/` becomes `\-` and `\`
/// becomes `\\`. `us\er` stays as it is; `user/a\b` becomes `user\-a\\b`.
pub(crate) fn escape_username(username: &[u8]) -> Cow<'_, [u8]> {
    if !username.contains(&b'/') {
        return Cow::Borrowed(username);
    }
    let mut out = Vec::with_capacity(username.len() + 4);
    for &b in username {
        match b {
            b'/' => out.extend_from_slice(b"\\-"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => out.push(b),
        }
    }
    Cow::Owned(out)
}

/// The way back from [`escape_username`]. Only names holding `\-` were escaped (an
/// escaped name always has one, for its `/`); `a\-b` of a user literally called that reads
/// as `a/b`, an ambiguity of Dovecot's layout.
pub(crate) fn unescape_username(name: &[u8]) -> Vec<u8> {
    if !name.windows(2).any(|w| w == br"\-") {
        return name.to_vec();
    }
    let mut out = Vec::with_capacity(name.len());
    let mut bytes = name.iter();
    while let Some(&b) = bytes.next() {
        match (b, bytes.as_slice().first()) {
            (b'\\', Some(b'-')) => {
                out.push(b'/');
                bytes.next();
            }
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                bytes.next();
            }
            _ => out.push(b),
        }
    }
    out
}

/// Makes `literal` match only itself in a Redis glob pattern (SCAN MATCH, KEYS).
pub(crate) fn escape_glob(literal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(literal.len());
    for &b in literal {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(prefix: &str, k: &str, user: &str) -> String {
        let k = KeyLayout::new(prefix)
            .redis_key(k.as_bytes(), user.as_bytes())
            .unwrap();
        String::from_utf8(k).unwrap()
    }

    #[test]
    fn layout_matches_dovecot() {
        assert_eq!(key("", "shared/x/y", "ignored"), "x/y");
        assert_eq!(key("pfx/", "shared/x/y", ""), "pfx/x/y");
        assert_eq!(key("", "priv/quota/storage", "u"), "u/quota/storage");
        assert_eq!(
            key("pfx/", "priv/quota/storage", r"user/a\b"),
            r"pfx/user\-a\\b/quota/storage"
        );
        assert_eq!(key("pfx/", "priv/k", r"us\er"), r"pfx/us\er/k");
        assert_eq!(key("p", "shared/", ""), "p");
        assert!(KeyLayout::new("").redis_key(b"other/x", b"u").is_none());
    }

    #[test]
    fn dict_keys_come_back() {
        let layout = KeyLayout::new("pfx/");
        let (scope, rest) = layout.split(b"priv/quota/", b"a/b").unwrap();
        assert_eq!(rest, b"quota/");
        let rk = scope.redis_key(b"quota/storage");
        assert_eq!(rk, br"pfx/a\-b/quota/storage");
        assert_eq!(scope.dict_key(&rk).unwrap(), b"priv/quota/storage");
        assert_eq!(scope.dict_key(b"pfx/other/x"), None);
        let (shared, _) = layout.split(b"shared/x", b"a").unwrap();
        assert_eq!(shared.dict_key(b"pfx/x/y").unwrap(), b"shared/x/y");
    }

    #[test]
    fn users_come_back_from_their_keys() {
        let layout = KeyLayout::new("p*/");
        assert_eq!(
            layout.users_pattern(b"quota/storage"),
            br"p\*/*/quota/storage"
        );
        for user in ["u", r"us\er", r"user/a\b", "a/b/c", r"\"] {
            let key = layout
                .redis_key(b"priv/quota/storage", user.as_bytes())
                .unwrap();
            assert_eq!(
                layout.user_of(&key, b"quota/storage").as_deref(),
                Some(user.as_bytes()),
                "{user}"
            );
        }
        assert_eq!(
            layout.user_of(b"p*/a/b/quota/storage", b"quota/storage"),
            None
        );
        assert_eq!(layout.user_of(b"p*//quota/storage", b"quota/storage"), None);
        assert_eq!(
            layout.user_of(b"other/u/quota/storage", b"quota/storage"),
            None
        );
    }

    #[test]
    fn user_hash_tag_layout() {
        let layout = KeyLayout::new("pfx/").with_user_hash_tag();
        let k = |key: &str, user: &str| {
            String::from_utf8(layout.redis_key(key.as_bytes(), user.as_bytes()).unwrap()).unwrap()
        };
        assert_eq!(k("priv/quota/storage", "u"), "pfx/{u}/quota/storage");
        assert_eq!(
            k("priv/quota/messages", "a/b"),
            r"pfx/{a\-b}/quota/messages"
        );
        assert_eq!(
            k("shared/x", "u"),
            "pfx/x",
            "shared keys keep Dovecot's layout"
        );
        for user in ["u", "a/b", r"us\er", ""] {
            let key = layout.redis_key(b"priv/q", user.as_bytes()).unwrap();
            assert_eq!(layout.user_of(&key, b"q").as_deref(), Some(user.as_bytes()));
        }
        assert_eq!(
            layout.user_of(b"pfx/u/q", b"q"),
            None,
            "untagged: not a user key"
        );
        let (scope, rest) = layout.split(b"priv/quota/", b"u").unwrap();
        assert_eq!(scope.scan_pattern(rest), b"pfx/{u}/quota/*".to_vec());
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob(br"a*b?c[d]e\f"), br"a\*b\?c\[d\]e\\f");
        let layout = KeyLayout::new("p*/");
        let (scope, rest) = layout.split(b"priv/k?/", br"u\x").unwrap();
        assert_eq!(scope.scan_pattern(rest), br"p\*/u\\x/k\?/*");
    }
}
