//! The settings parser on real files: `!include`, `!include_try`, loops, depth, and
//! errors that point into included files.

mod common;

use std::sync::{Arc, Mutex};

use common::Scratch;
use dict_config::settings::{parse_file, MAX_INCLUDE_DEPTH};
use dict_config::{Node, Origin};

fn err(path: &std::path::Path) -> String {
    parse_file(path).unwrap_err().to_string()
}

fn keys(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| match n {
            Node::Setting { key, value, .. } => format!("{key}={value}"),
            Node::Section { kind, children, .. } => format!("{kind}[{}]", keys(children).join(",")),
        })
        .collect()
}

#[test]
fn include_is_relative_to_the_including_file_and_sorted() {
    let s = Scratch::new();
    let main = s.write(
        "main.conf",
        "a = 1\nsec {\n  !include sub/*.conf\n}\nz = 26\n",
    );
    s.write("sub/20-b.conf", "b = 2\n!include ../extra.ext\n");
    s.write("sub/10-a.conf", "a2 = 1\n");
    s.write("extra.ext", "c = 3\n");
    let nodes = parse_file(&main).unwrap();
    assert_eq!(keys(&nodes), vec!["a=1", "sec[a2=1,b=2,c=3]", "z=26"]);
    let Node::Section { children, .. } = &nodes[1] else {
        panic!()
    };
    assert_eq!(
        children[1].origin(),
        &Origin::new(s.path("sub/20-b.conf"), 1)
    );
    assert_eq!(
        children[2].origin(),
        &Origin::new(s.path("sub/../extra.ext"), 1)
    );
}

#[test]
fn include_accepts_absolute_and_quoted_paths() {
    let s = Scratch::new();
    let abs = s.write("abs dir/x.conf", "x = 1\n");
    let main = s.write("main.conf", &format!("!include \"{}\"\n", abs.display()));
    assert_eq!(keys(&parse_file(&main).unwrap()), vec!["x=1"]);
}

#[test]
fn include_try_skips_what_does_not_exist() {
    let s = Scratch::new();
    let main = s.write(
        "main.conf",
        "!include_try local.conf\n!include_try none.d/*.conf\n!include_try /nonexistent/dict-config/*.x\na = 1\n",
    );
    assert_eq!(keys(&parse_file(&main).unwrap()), vec!["a=1"]);
}

#[test]
fn include_of_something_missing_is_an_error() {
    let s = Scratch::new();
    let main = s.write("main.conf", "a = 1\n!include missing.conf\n");
    assert_eq!(
        err(&main),
        format!(
            "{}!include {}: no such file",
            s.at("main.conf", 2),
            s.path("missing.conf").display()
        )
    );
    let main = s.write("glob.conf", "!include conf.d/*.conf\n");
    s.write("conf.d/readme.txt", "not a .conf\n");
    assert!(err(&main).starts_with(&format!("{}!include ", s.at("glob.conf", 1))));
    assert!(err(&main).ends_with("conf.d/*.conf: no such file"));
}

#[test]
fn include_loops_are_caught() {
    let s = Scratch::new();
    let a = s.write("a.conf", "x = 1\n!include b.conf\n");
    s.write("b.conf", "\n\n!include a.conf\n");
    assert_eq!(
        err(&a),
        format!(
            "{}!include loop: {} includes itself",
            s.at("b.conf", 3),
            s.path("a.conf").display()
        )
    );
    // The classic mistake: a glob that matches the including file.
    let all = s.write("d/all.conf", "!include *.conf\n");
    assert!(err(&all).contains("!include loop"));
}

#[test]
fn include_depth_is_limited() {
    let s = Scratch::new();
    let chain = |len: usize, prefix: &str| {
        for i in 0..len {
            let next = if i + 1 < len {
                format!("!include {prefix}{}.conf\n", i + 1)
            } else {
                "leaf = yes\n".to_string()
            };
            s.write(&format!("{prefix}{i}.conf"), &next);
        }
        s.path(&format!("{prefix}0.conf"))
    };
    // The top file plus MAX_INCLUDE_DEPTH levels of includes is fine...
    let ok = chain(MAX_INCLUDE_DEPTH + 1, "ok");
    assert_eq!(keys(&parse_file(&ok).unwrap()), vec!["leaf=yes"]);
    // ...one more is not.
    let deep = chain(MAX_INCLUDE_DEPTH + 2, "deep");
    let last_includer = format!("deep{MAX_INCLUDE_DEPTH}.conf");
    assert_eq!(
        err(&deep),
        format!(
            "{}!include nesting deeper than 20 levels",
            s.at(&last_includer, 1)
        )
    );
}

#[test]
fn errors_in_included_files_name_that_file() {
    let s = Scratch::new();
    let main = s.write("main.conf", "!include inc.conf\n");
    s.write("inc.conf", "a = 1\n# comment\nfoo bar\n");
    assert_eq!(
        err(&main),
        format!("{}Expecting '=': foo bar", s.at("inc.conf", 3))
    );

    // An included file can't close a section of the file that includes it.
    let main = s.write("main2.conf", "sec {\n  !include closer.conf\n}\n");
    s.write("closer.conf", "a = 1\n}\n");
    assert_eq!(
        err(&main),
        format!("{}Unexpected '}}'", s.at("closer.conf", 2))
    );

    s.write("opener.conf", "x = 1\nsec {\n");
    let main = s.write("main3.conf", "!include opener.conf\n");
    assert_eq!(
        err(&main),
        format!(
            "{}Section 'sec' is not closed (missing '}}')",
            s.at("opener.conf", 2)
        )
    );
}

#[test]
fn unreadable_files_are_reported_with_their_path() {
    let s = Scratch::new();
    let missing = s.path("nope.conf");
    let e = err(&missing);
    assert!(
        e.starts_with(&format!("can't read {}: ", missing.display())),
        "{e}"
    );

    // A directory matched by an include glob can't be read either.
    s.write("conf.d/sub.conf/inner", "");
    let main = s.write("main.conf", "!include conf.d/*.conf\n");
    let e = err(&main);
    assert!(
        e.starts_with(&format!(
            "{}can't read {}",
            s.at("main.conf", 1),
            s.path("conf.d/sub.conf").display()
        )),
        "{e}"
    );
}

/// Collects the messages of `tracing` events.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct MessageVisitor<'a>(&'a mut String);

impl tracing::field::Visit for MessageVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.push_str(&format!("{value:?}"));
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = String::new();
        event.record(&mut MessageVisitor(&mut message));
        self.0.lock().unwrap().push(message);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_glued_hash_is_a_comment_with_a_warning() {
    let s = Scratch::new();
    let main = s.write("main.conf", "a = 1 # fine\nb = x#y\nc = \"x#y\"\n# fine\n");
    let capture = Capture::default();
    let nodes = tracing::subscriber::with_default(capture.clone(), || parse_file(&main).unwrap());
    assert_eq!(keys(&nodes), vec!["a=1", "b=x", "c=x#y"]);
    let messages = capture.0.lock().unwrap().clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].starts_with(&s.at("main.conf", 2)),
        "{messages:?}"
    );
}
