//! Matching dict keys and iteration paths against a map's pattern, as Dovecot's dict-sql
//! does. Patterns are the normalised form: every variable is a bare `$`.

/// `$`: one variable of a normalised pattern.
const VAR: u8 = b'$';

/// Exact key matching (lookup, set, unset, inc): the values of the pattern's variables.
///
/// * A literal byte must match exactly.
/// * A `$` that is not last takes the key up to the next `/` (possibly nothing).
/// * The last `$` takes the whole rest of the key, slashes included, and must take at least
///   one byte: `shared/kv/e/` does not match `shared/kv/$/$`.
///
/// Dovecot lets a non-final `$` take the rest of a key that has no further `/` and then
/// skips the pattern's next byte, so `shared/$/` would match `shared/x`; here a non-final
/// variable must be followed by its `/` in the key (no real pattern is affected).
pub(crate) fn match_key<'k>(pattern: &[u8], key: &'k [u8]) -> Option<Vec<&'k [u8]>> {
    let mut values = Vec::new();
    let (mut pi, mut ki) = (0, 0);
    loop {
        if pi == pattern.len() {
            return (ki == key.len()).then_some(values);
        }
        if ki == key.len() {
            return None;
        }
        if pattern[pi] == VAR {
            if pi + 1 == pattern.len() {
                values.push(&key[ki..]);
                return Some(values);
            }
            let len = key[ki..].iter().position(|&b| b == b'/')?;
            values.push(&key[ki..ki + len]);
            ki += len;
            pi += 1;
        } else if pattern[pi] == key[ki] {
            pi += 1;
            ki += 1;
        } else {
            return None;
        }
    }
}

/// How an iteration path matched a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathMatch<'p> {
    /// Values of the variables the path binds, in pattern order (m of them).
    pub values: Vec<&'p [u8]>,
    /// How many bytes of the path start every returned key.
    pub consumed: usize,
    /// Where in the pattern the part rebuilt from the selected columns starts.
    pub rest: usize,
    /// A `/` goes between the path prefix and the rebuilt rest: the path ended inside a
    /// variable (`shared/kv/s1` iterates like `shared/kv/s1/`).
    pub slash: bool,
    /// How the match ended.
    pub kind: MatchKind,
}

/// What an iteration path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchKind {
    /// A prefix: the rest of the pattern (with at least one variable when not recursing)
    /// is filled in from the rows.
    Prefix,
    /// The path reached the pattern's last `$`, which took the rest of the path (less one
    /// trailing `/`). A full key for EXACT_KEY; Dovecot refuses anything else.
    LastVariable,
    /// Pattern and path ended together: the path is a key with no variable left.
    Full,
}

impl PathMatch<'_> {
    /// The number of `$` in the rebuilt rest: the key columns to select.
    pub fn rest_vars(&self, pattern: &[u8]) -> usize {
        pattern[self.rest..].iter().filter(|&&b| b == VAR).count()
    }
}

/// Partial matching of an iteration path:
///
/// * the path may end early, at a `/` boundary of the pattern or inside a non-final
///   variable (which then takes the rest of the path);
/// * a path reaching the pattern's last `$` gives it the rest of the path less one
///   trailing `/`;
/// * without `recurse`, what is left of the pattern must be exactly one final `$`.
pub(crate) fn match_path<'p>(
    pattern: &[u8],
    path: &'p [u8],
    recurse: bool,
) -> Option<PathMatch<'p>> {
    let mut values = Vec::new();
    let (mut pi, mut ki) = (0, 0);
    let mut inside_var = false;
    while pi < pattern.len() && ki < path.len() {
        if pattern[pi] == VAR {
            if pi + 1 == pattern.len() {
                let tail = &path[ki..];
                values.push(tail.strip_suffix(b"/").unwrap_or(tail));
                return Some(PathMatch {
                    values,
                    consumed: ki,
                    rest: pi,
                    slash: false,
                    kind: MatchKind::LastVariable,
                });
            }
            match path[ki..].iter().position(|&b| b == b'/') {
                Some(len) => {
                    values.push(&path[ki..ki + len]);
                    ki += len;
                }
                None => {
                    values.push(&path[ki..]);
                    ki = path.len();
                    inside_var = true;
                }
            }
            pi += 1;
        } else if pattern[pi] == path[ki] {
            pi += 1;
            ki += 1;
        } else {
            return None;
        }
    }
    if pi == pattern.len() {
        return (ki == path.len()).then_some(PathMatch {
            values,
            consumed: ki,
            rest: pi,
            slash: false,
            kind: MatchKind::Full,
        });
    }
    let (rest, slash) = if inside_var {
        if pattern[pi] != b'/' {
            return None;
        }
        (pi + 1, true)
    } else {
        if pi > 0 && pattern[pi - 1] != b'/' {
            return None;
        }
        (pi, false)
    };
    if !recurse && &pattern[rest..] != b"$" {
        return None;
    }
    Some(PathMatch {
        values,
        consumed: ki,
        rest,
        slash,
        kind: MatchKind::Prefix,
    })
}

/// The key of an iteration row: the path prefix, then the pattern's rest with each `$`
/// replaced by the next column (a NULL column, given as `None`, adds nothing).
pub(crate) fn rebuild_key(
    path: &[u8],
    pattern: &[u8],
    m: &PathMatch<'_>,
    columns: &[Option<Vec<u8>>],
) -> Vec<u8> {
    let mut key = Vec::with_capacity(path.len() + 32);
    key.extend_from_slice(&path[..m.consumed]);
    if m.slash {
        key.push(b'/');
    }
    let mut columns = columns.iter();
    for &b in &pattern[m.rest..] {
        if b == VAR {
            if let Some(Some(value)) = columns.next() {
                key.extend_from_slice(value);
            }
        } else {
            key.push(b);
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str, k: &str) -> Option<Vec<String>> {
        match_key(p.as_bytes(), k.as_bytes()).map(|v| {
            v.into_iter()
                .map(|s| String::from_utf8(s.to_vec()).unwrap())
                .collect()
        })
    }

    #[test]
    fn exact_keys() {
        assert_eq!(
            key("priv/quota/storage", "priv/quota/storage"),
            Some(vec![])
        );
        assert_eq!(key("priv/quota/storage", "priv/quota/storagex"), None);
        assert_eq!(key("priv/quota/storage", "priv/quota/stor"), None);
        assert_eq!(
            key("shared/kv/$/$", "shared/kv/a/b"),
            Some(vec!["a".into(), "b".into()])
        );
        // the last variable swallows slashes
        assert_eq!(
            key("shared/kv/$/$", "shared/kv/s1/sub/x"),
            Some(vec!["s1".into(), "sub/x".into()])
        );
        // a key running out at a `$` does not match
        assert_eq!(key("shared/kv/$/$", "shared/kv/e/"), None);
        assert_eq!(key("shared/kv/$/$", "shared/kv/e"), None);
        // an empty non-final variable is fine
        assert_eq!(
            key("shared/kv/$/$", "shared/kv//b"),
            Some(vec!["".into(), "b".into()])
        );
        assert_eq!(key("shared/$/end", "shared/x/end"), Some(vec!["x".into()]));
        assert_eq!(key("shared/$/end", "shared/x/y/end"), None);
        assert_eq!(key("shared/$/", "shared/x"), None);
    }

    fn path(
        p: &str,
        k: &str,
        recurse: bool,
    ) -> Option<(Vec<String>, String, String, bool, MatchKind)> {
        match_path(p.as_bytes(), k.as_bytes(), recurse).map(|m| {
            (
                m.values
                    .iter()
                    .map(|s| String::from_utf8(s.to_vec()).unwrap())
                    .collect(),
                k[..m.consumed].to_string(),
                p[m.rest..].to_string(),
                m.slash,
                m.kind,
            )
        })
    }

    #[test]
    fn iteration_paths() {
        use MatchKind::*;
        let p = "shared/kv/$/$";
        assert_eq!(
            path(p, "shared/kv/test/", false),
            Some((
                vec!["test".into()],
                "shared/kv/test/".into(),
                "$".into(),
                false,
                Prefix
            ))
        );
        // no trailing slash: the same rows
        assert_eq!(
            path(p, "shared/kv/test", false),
            Some((
                vec!["test".into()],
                "shared/kv/test".into(),
                "$".into(),
                true,
                Prefix
            ))
        );
        // one level above the variables: only when recursing
        assert_eq!(path(p, "shared/kv/", false), None);
        assert_eq!(
            path(p, "shared/kv/", true),
            Some((vec![], "shared/kv/".into(), "$/$".into(), false, Prefix))
        );
        // not at a `/` boundary
        assert_eq!(path(p, "shared/kv", true), None);
        assert_eq!(path(p, "shared/k", true), None);
        // the last variable
        assert_eq!(
            path(p, "shared/kv/test/a", false),
            Some((
                vec!["test".into(), "a".into()],
                "shared/kv/test/".into(),
                "$".into(),
                false,
                LastVariable
            ))
        );
        assert_eq!(
            path(p, "shared/kv/test/a/", true),
            Some((
                vec!["test".into(), "a".into()],
                "shared/kv/test/".into(),
                "$".into(),
                false,
                LastVariable
            ))
        );
        // literal patterns
        assert_eq!(path("priv/quota/storage", "priv/quota/", false), None);
        assert_eq!(
            path("priv/quota/storage", "priv/quota/", true),
            Some((
                vec![],
                "priv/quota/".into(),
                "storage".into(),
                false,
                Prefix
            ))
        );
        assert_eq!(
            path("priv/quota/storage", "priv/quota/storage", false),
            Some((vec![], "priv/quota/storage".into(), "".into(), false, Full))
        );
        assert_eq!(
            path("priv/quota/storage", "priv/quota/storagex", true),
            None
        );
        assert_eq!(path("priv/quota/storage", "priv/kv/", true), None);
    }

    #[test]
    fn keys_are_rebuilt() {
        let p = b"shared/kv/$/$";
        let m = match_path(p, b"shared/kv/", true).unwrap();
        let cols = [Some(b"s".to_vec()), Some(b"n/x".to_vec())];
        assert_eq!(rebuild_key(b"shared/kv/", p, &m, &cols), b"shared/kv/s/n/x");
        assert_eq!(m.rest_vars(p), 2);
        let m = match_path(p, b"shared/kv/s", false).unwrap();
        assert_eq!(
            rebuild_key(b"shared/kv/s", p, &m, &cols[1..]),
            b"shared/kv/s/n/x"
        );
        assert_eq!(rebuild_key(b"shared/kv/s", p, &m, &[None]), b"shared/kv/s/");
        let lit = b"priv/quota/storage";
        let m = match_path(lit, b"priv/quota/", true).unwrap();
        assert_eq!(
            rebuild_key(b"priv/quota/", lit, &m, &[]),
            b"priv/quota/storage"
        );
    }
}
