//! Dovecot 2.3's settings syntax, shared by `dovecot.conf` and the dict-sql map files.
//!
//! The parser only builds a tree ([`Node`]); what the settings mean is decided by the
//! callers ([`crate::dovecot`], [`crate::sql_map`]). It accepts every setting name, so a
//! full `dovecot.conf` with hundreds of settings we never look at still parses.
//!
//! Rules (those of Dovecot's config reader):
//! * one `key = value` per line, spaces and tabs around key and value trimmed;
//! * `#` starts a comment, except inside quotes; a `#` glued to the text before it is
//!   still a comment, but worth a warning because it is usually a mistake;
//! * `"…"` and `'…'` values are unquoted, with backslash escapes; unquoted values expand
//!   `$ENV:NAME` at the start of the value or after whitespace;
//! * a trailing `\` joins the next line, with one space in between;
//! * `!include <glob>` / `!include_try <glob>` splice other files in place;
//! * `kind [name] {` … `}` opens and closes a section.
//!
//! `key = <path` (a value read from a file in dovecot.conf) is kept verbatim; nothing here
//! opens that file.

use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Origin};

/// Deepest `!include` chain accepted; beyond it the files almost certainly include each
/// other through a glob.
pub const MAX_INCLUDE_DEPTH: usize = 20;

/// One line of configuration, or one `{ }` block with everything inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Setting {
        key: String,
        value: String,
        origin: Origin,
    },
    Section {
        /// The word before the name: `service`, `map`, `dict`, `unix_listener`.
        kind: String,
        /// `dict` in `service dict {`; `None` for `map {`.
        name: Option<String>,
        children: Vec<Node>,
        origin: Origin,
    },
}

impl Node {
    pub fn origin(&self) -> &Origin {
        match self {
            Node::Setting { origin, .. } | Node::Section { origin, .. } => origin,
        }
    }
}

/// Parses `path` and everything it includes.
pub fn parse_file(path: impl AsRef<Path>) -> Result<Vec<Node>, ConfigError> {
    let path = path.as_ref();
    let text = read_text(path, None)?;
    parse_with_stack(&text, path, &mut vec![canonical(path)])
}

/// Parses `text` as if it were the contents of `file`: `file` is used in messages and
/// relative `!include` paths are resolved from its directory.
pub fn parse_str(text: &str, file: impl AsRef<Path>) -> Result<Vec<Node>, ConfigError> {
    let file = file.as_ref();
    parse_with_stack(text, file, &mut vec![canonical(file)])
}

fn read_text(path: &Path, included_from: Option<&Origin>) -> Result<String, ConfigError> {
    match std::fs::read(path) {
        // Config files are ASCII in practice; a stray Latin-1 byte in a comment must not
        // make the whole file unreadable.
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            included_from: included_from.cloned(),
            source,
        }),
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// An open `{` whose children are still being collected.
struct Frame {
    kind: String,
    name: Option<String>,
    origin: Origin,
    children: Vec<Node>,
}

/// `stack` holds the canonical paths of the files being parsed, outermost first, to catch
/// include loops.
fn parse_with_stack(
    text: &str,
    file: &Path,
    stack: &mut Vec<PathBuf>,
) -> Result<Vec<Node>, ConfigError> {
    let mut root = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();

    for (line, origin) in logical_lines(text, file) {
        let line = trim(strip_comment(&line, &origin));
        if line.is_empty() {
            continue;
        }
        if line == "}" {
            let frame = frames
                .pop()
                .ok_or_else(|| ConfigError::invalid(&origin, "Unexpected '}'"))?;
            let node = Node::Section {
                kind: frame.kind,
                name: frame.name,
                children: frame.children,
                origin: frame.origin,
            };
            push(&mut frames, &mut root, node);
            continue;
        }
        if let Some((must_exist, pattern)) = include_directive(line) {
            let nodes = include(pattern, must_exist, file, &origin, stack)?;
            for node in nodes {
                push(&mut frames, &mut root, node);
            }
            continue;
        }

        let key_end = line
            .find(|c: char| is_white(c) || c == '=' || c == '{')
            .unwrap_or(line.len());
        let (key, rest) = line.split_at(key_end);
        let rest = trim(rest);
        if let Some(value) = rest.strip_prefix('=') {
            if key.is_empty() {
                return Err(ConfigError::invalid(
                    &origin,
                    "Missing setting name before '='",
                ));
            }
            let node = Node::Setting {
                key: key.to_string(),
                value: parse_value(trim(value)),
                origin,
            };
            push(&mut frames, &mut root, node);
        } else if let Some(name) = rest.strip_suffix('{') {
            if key.is_empty() {
                return Err(ConfigError::invalid(
                    &origin,
                    "Missing section kind before '{'",
                ));
            }
            let name = trim(name);
            frames.push(Frame {
                kind: key.to_string(),
                name: (!name.is_empty()).then(|| unquote(name).unwrap_or(name).to_string()),
                origin,
                children: Vec::new(),
            });
        } else {
            return Err(ConfigError::invalid(
                &origin,
                format!("Expecting '=': {line}"),
            ));
        }
    }

    if let Some(frame) = frames.pop() {
        return Err(ConfigError::invalid(
            &frame.origin,
            format!("Section '{}' is not closed (missing '}}')", frame.kind),
        ));
    }
    Ok(root)
}

fn push(frames: &mut [Frame], root: &mut Vec<Node>, node: Node) {
    match frames.last_mut() {
        Some(frame) => frame.children.push(node),
        None => root.push(node),
    }
}

/// Joins `\`-continued lines; each logical line is reported at its first physical line.
fn logical_lines(text: &str, file: &Path) -> Vec<(String, Origin)> {
    let mut out = Vec::new();
    let mut pending: Option<(String, u32)> = None;
    for (idx, raw) in text.lines().enumerate() {
        let lineno = u32::try_from(idx + 1).unwrap_or(u32::MAX);
        let raw = trim(raw);
        let (mut buf, start) = pending.take().unwrap_or((String::new(), lineno));
        if let Some(head) = raw.strip_suffix('\\') {
            buf.push_str(trim(head));
            buf.push(' ');
            pending = Some((buf, start));
        } else {
            buf.push_str(raw);
            out.push((buf, Origin::new(file, start)));
        }
    }
    if let Some((buf, start)) = pending {
        out.push((buf, Origin::new(file, start)));
    }
    out
}

fn is_white(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn trim(s: &str) -> &str {
    s.trim_matches(is_white)
}

/// Cuts the line at the first `#` outside quotes.
fn strip_comment<'a>(line: &'a str, origin: &Origin) -> &'a str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut prev: Option<char> = None;
    for (i, c) in line.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
        } else if c == '"' || c == '\'' {
            quote = Some(c);
        } else if c == '#' {
            if prev.is_some_and(|p| !is_white(p)) {
                tracing::warn!(
                    "{origin}: '#' directly after text starts a comment; \
                     put a space before it, or quote the value if it is meant literally"
                );
            }
            return &line[..i];
        }
        prev = Some(c);
    }
    line
}

/// Recognises `!include` / `!include_try`; returns (must the pattern match, pattern).
fn include_directive(line: &str) -> Option<(bool, &str)> {
    let (word, rest) = line.split_at(line.find(is_white).unwrap_or(line.len()));
    let must_exist = match word {
        "!include" => true,
        "!include_try" => false,
        _ => return None,
    };
    let rest = trim(rest);
    Some((must_exist, unquote(rest).unwrap_or(rest)))
}

fn include(
    pattern: &str,
    must_exist: bool,
    file: &Path,
    origin: &Origin,
    stack: &mut Vec<PathBuf>,
) -> Result<Vec<Node>, ConfigError> {
    if pattern.is_empty() {
        return Err(ConfigError::invalid(
            origin,
            "Missing file name after !include",
        ));
    }
    let full = match Path::new(pattern).is_absolute() {
        true => PathBuf::from(pattern),
        false => file.parent().unwrap_or(Path::new("")).join(pattern),
    };
    let full_str = full.to_string_lossy();
    let paths = glob::glob(&full_str).map_err(|e| {
        ConfigError::invalid(origin, format!("Invalid !include pattern {full_str}: {e}"))
    })?;
    let mut matched = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| ConfigError::Read {
            path: e.path().to_path_buf(),
            included_from: Some(origin.clone()),
            source: e.into(),
        })?;
        matched.push(path);
    }
    if matched.is_empty() {
        if must_exist {
            return Err(ConfigError::invalid(
                origin,
                format!("!include {full_str}: no such file"),
            ));
        }
        return Ok(Vec::new());
    }

    let mut nodes = Vec::new();
    for path in matched {
        let canon = canonical(&path);
        if stack.contains(&canon) {
            return Err(ConfigError::invalid(
                origin,
                format!("!include loop: {} includes itself", path.display()),
            ));
        }
        // `stack` is the top file plus one entry per include level already open.
        if stack.len() > MAX_INCLUDE_DEPTH {
            return Err(ConfigError::invalid(
                origin,
                format!("!include nesting deeper than {MAX_INCLUDE_DEPTH} levels"),
            ));
        }
        let text = read_text(&path, Some(origin))?;
        stack.push(canon);
        let parsed = parse_with_stack(&text, &path, stack);
        stack.pop();
        nodes.extend(parsed?);
    }
    Ok(nodes)
}

/// The inside of a value quoted with `"` or `'`, or `None` if it isn't quoted.
fn unquote(value: &str) -> Option<&str> {
    let first = value.chars().next()?;
    if value.len() >= 2 && (first == '"' || first == '\'') && value.ends_with(first) {
        Some(&value[1..value.len() - 1])
    } else {
        None
    }
}

fn parse_value(value: &str) -> String {
    match unquote(value) {
        Some(inner) => unescape(inner),
        None => expand_env(value),
    }
}

/// `\n`, `\r`, `\t` become control characters; any other escaped character stands for
/// itself (`\"`, `\\`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Replaces `$ENV:NAME` (at the start or after whitespace; NAME runs to the next
/// whitespace) with the variable's value, or nothing if it isn't set.
fn expand_env(value: &str) -> String {
    const MARK: &str = "$ENV:";
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut at_word_start = true;
    while !rest.is_empty() {
        if at_word_start && rest.starts_with(MARK) {
            let name_end = rest[MARK.len()..]
                .find(is_white)
                .map_or(rest.len(), |i| i + MARK.len());
            let name = &rest[MARK.len()..name_end];
            out.push_str(&std::env::var(name).unwrap_or_default());
            rest = &rest[name_end..];
            at_word_start = false;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        at_word_start = is_white(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Node> {
        parse_str(text, "/cfg/test.conf").unwrap()
    }

    fn err(text: &str) -> String {
        parse_str(text, "/cfg/test.conf").unwrap_err().to_string()
    }

    fn setting(key: &str, value: &str, line: u32) -> Node {
        Node::Setting {
            key: key.into(),
            value: value.into(),
            origin: Origin::new("/cfg/test.conf", line),
        }
    }

    #[test]
    fn key_value_lines_are_trimmed() {
        let nodes = parse("\n  a = 1 \n\tb\t=\t two words\t\nc=3\nempty =\n");
        assert_eq!(
            nodes,
            vec![
                setting("a", "1", 2),
                setting("b", "two words", 3),
                setting("c", "3", 4),
                setting("empty", "", 5),
            ]
        );
    }

    #[test]
    fn comments_are_stripped_but_not_inside_quotes() {
        let nodes =
            parse("# full line\na = 1 # trailing\nb = 2#glued\nc = \"x # y\"\nd = 'it''s'#z\n");
        assert_eq!(
            nodes,
            vec![
                setting("a", "1", 2),
                setting("b", "2", 3),
                setting("c", "x # y", 4),
                setting("d", "it''s", 5),
            ]
        );
    }

    #[test]
    fn quoted_values_are_unescaped_and_not_env_expanded() {
        let nodes = parse(
            r#"a = "q\"uo\\te\t"
b = '$ENV:HOME'
c = "unterminated
"#,
        );
        assert_eq!(
            nodes,
            vec![
                setting("a", "q\"uo\\te\t", 1),
                setting("b", "$ENV:HOME", 2),
                setting("c", "\"unterminated", 3),
            ]
        );
    }

    #[test]
    fn env_vars_expand_only_at_word_start() {
        std::env::set_var("DICT_CONFIG_TEST_ENV", "secret");
        std::env::remove_var("DICT_CONFIG_TEST_UNSET");
        let nodes = parse(
            "a = $ENV:DICT_CONFIG_TEST_ENV\n\
             b = x $ENV:DICT_CONFIG_TEST_ENV y\n\
             c = x$ENV:DICT_CONFIG_TEST_ENV\n\
             d = [$ENV:DICT_CONFIG_TEST_UNSET]\n\
             e = $ENV:DICT_CONFIG_TEST_UNSET\n\
             f = $mail_plugins quota\n",
        );
        assert_eq!(
            nodes,
            vec![
                setting("a", "secret", 1),
                setting("b", "x secret y", 2),
                setting("c", "x$ENV:DICT_CONFIG_TEST_ENV", 3),
                setting("d", "[$ENV:DICT_CONFIG_TEST_UNSET]", 4),
                setting("e", "", 5),
                setting("f", "$mail_plugins quota", 6),
            ]
        );
    }

    #[test]
    fn backslash_continues_the_line() {
        let nodes = parse("a = one \\\n    two\\\n three\nb = 4\n");
        assert_eq!(
            nodes,
            vec![setting("a", "one two three", 1), setting("b", "4", 4)]
        );
    }

    #[test]
    fn sections_nest_with_optional_names() {
        let nodes = parse(
            "service dict {\n  unix_listener dict {\n    mode = 0600\n  }\n}\nmap{\n}\nx = <file\n",
        );
        let Node::Section {
            kind,
            name,
            children,
            origin,
        } = &nodes[0]
        else {
            panic!("{nodes:?}")
        };
        assert_eq!(
            (kind.as_str(), name.as_deref(), origin.line),
            ("service", Some("dict"), 1)
        );
        let Node::Section {
            kind,
            name,
            children,
            ..
        } = &children[0]
        else {
            panic!()
        };
        assert_eq!(
            (kind.as_str(), name.as_deref()),
            ("unix_listener", Some("dict"))
        );
        assert_eq!(children, &vec![setting("mode", "0600", 3)]);
        assert!(matches!(&nodes[1], Node::Section { kind, name: None, .. } if kind == "map"));
        assert_eq!(nodes[2], setting("x", "<file", 8));
    }

    #[test]
    fn unbalanced_braces_name_the_line() {
        assert_eq!(err("a = 1\n}\n"), "/cfg/test.conf:2: Unexpected '}'");
        assert_eq!(
            err("a {\n  b {\n  }\n"),
            "/cfg/test.conf:1: Section 'a' is not closed (missing '}')"
        );
    }

    #[test]
    fn a_line_without_equals_is_an_error() {
        assert_eq!(
            err("a = 1\n\nfoo bar\n"),
            "/cfg/test.conf:3: Expecting '=': foo bar"
        );
        assert_eq!(
            err(" = 1\n"),
            "/cfg/test.conf:1: Missing setting name before '='"
        );
    }
}
