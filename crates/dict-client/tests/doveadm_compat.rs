//! `dictctl` against the real `doveadm dict` (Debian's dovecot-core 2.3.19.1): both run with
//! the same arguments against the same in-process server, and must print the same bytes on
//! stdout and exit with the same code, in every output format.
//!
//! Needs `doveadm` (package dovecot-core); fails loudly without it. `DICT_TEST_DOVEADM`
//! overrides the binary.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestServer;
use dict_client::{Client, ClientOptions, CommitResult};

fn doveadm() -> PathBuf {
    if let Some(p) = std::env::var_os("DICT_TEST_DOVEADM") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
    {
        let p = Path::new(dir).join("doveadm");
        if p.is_file() {
            return p;
        }
    }
    panic!("doveadm not found: these tests compare dictctl with the real doveadm; install dovecot-core (apt-get install dovecot-core) or set DICT_TEST_DOVEADM");
}

/// The suite's doveadm client config (tests/fixtures/dovecot-doveadm.conf.in) with `@DIR@`
/// filled in, so base_dir is `<dir>/run`, where the server's socket `dict` is.
fn write_config(dir: &Path) -> PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dovecot-doveadm.conf.in");
    let text =
        std::fs::read_to_string(&fixture).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let conf = dir.join("dovecot.conf");
    std::fs::write(&conf, text.replace("@DIR@", dir.to_str().unwrap())).unwrap();
    conf
}

struct Outcome {
    stdout: Vec<u8>,
    stderr: String,
    code: i32,
}

async fn run(program: &Path, args: &[String]) -> Outcome {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program).args(args).output(),
    )
    .await
    .expect("finished in time")
    .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    Outcome {
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

struct Compare {
    doveadm: PathBuf,
    dictctl: PathBuf,
    conf: PathBuf,
    cases: usize,
    mismatches: Vec<String>,
}

impl Compare {
    /// Runs `doveadm -c conf [-f fmt] dict <args>` then `dictctl -c conf [-f fmt] <args>`.
    async fn case(&mut self, format: Option<&str>, args: &str) -> Outcome {
        let mut common: Vec<String> = vec!["-c".into(), self.conf.display().to_string()];
        if let Some(f) = format {
            common.extend(["-f".into(), f.into()]);
        }
        let words: Vec<String> = split_args(args);
        let mut dove_args = common.clone();
        dove_args.push("dict".into());
        dove_args.extend(words.iter().cloned());
        let mut ctl_args = common;
        ctl_args.extend(words);
        let expected = run(&self.doveadm, &dove_args).await;
        let got = run(&self.dictctl, &ctl_args).await;
        self.cases += 1;
        if expected.stdout != got.stdout || expected.code != got.code {
            self.mismatches.push(format!(
                "-f {format:?} {args}:\n  doveadm exit {} stdout {:?} stderr {:?}\n  dictctl exit {} stdout {:?} stderr {:?}",
                expected.code,
                String::from_utf8_lossy(&expected.stdout),
                expected.stderr,
                got.code,
                String::from_utf8_lossy(&got.stdout),
                got.stderr,
            ));
        }
        expected
    }
}

/// Splits on spaces; `'…'` keeps spaces and tabs (written as `\t`), `\n` is a newline.
fn split_args(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in args.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out.into_iter()
        .map(|s| s.replace("\\t", "\t").replace("\\n", "\n"))
        .collect()
}

async fn seed(uri: &str, user: &str, pairs: &[(&str, &str)]) {
    let client = Client::open(uri, ClientOptions::default()).unwrap();
    let mut tx = client.transaction(user);
    for (k, v) in pairs {
        tx.set(k, v).unwrap();
    }
    assert_eq!(tx.commit().await, CommitResult::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictctl_prints_what_doveadm_prints() {
    let doveadm = doveadm();
    let server = TestServer::start().await;
    let conf = write_config(server.dir.path());
    let long = "v".repeat(120);
    seed(
        &server.uri("mem"),
        "",
        &[
            ("shared/t/a", "1"),
            ("shared/t/b", "x\ty"),
            ("shared/t/c/d", "q\"\\/é\u{1}"),
            ("shared/t/e", ""),
            ("shared/t/n", "nl\nx"),
            ("shared/t/sp", "two words"),
            ("shared/long/k", &long),
            ("shared/n", "5"),
        ],
    )
    .await;
    seed(
        &server.uri("mem"),
        "alice",
        &[("priv/quota/storage", "100"), ("priv/quota/messages", "3")],
    )
    .await;
    seed(
        &server.uri("multi"),
        "",
        &[("shared/multi/m", "a\tb|42"), ("shared/multi/o", "1|2")],
    )
    .await;

    let mut cmp = Compare {
        doveadm,
        dictctl: PathBuf::from(env!("CARGO_BIN_EXE_dictctl")),
        conf,
        cases: 0,
        mismatches: Vec::new(),
    };
    let abs = server.uri("mem");
    let missing_socket = format!(
        "proxy:{}:mem",
        server.dir.path().join("none.sock").display()
    );

    // Sanity: doveadm really talks to our server.
    let sanity = cmp.case(Some("flow"), "get proxy::mem shared/t/a").await;
    assert_eq!(
        (sanity.stdout.as_slice(), sanity.code),
        (&b"1\n"[..], 0),
        "doveadm stderr: {}",
        sanity.stderr
    );

    for format in [None, Some("flow"), Some("tab"), Some("json"), Some("table")] {
        let reads = [
            "get proxy::mem shared/t/a".to_string(),
            format!("get {abs} shared/t/b"),
            "get proxy::mem shared/t/c/d".into(),
            "get proxy::mem shared/t/e".into(),
            "get proxy::mem shared/t/n".into(),
            "get proxy::mem shared/t/sp".into(),
            "get proxy::mem shared/long/k".into(),
            "get proxy::mem shared/none".into(),
            "get -u alice proxy::mem priv/quota/storage".into(),
            "get -u bob proxy::mem priv/quota/storage".into(),
            "get proxy::mem priv/quota/storage".into(),
            "get proxy::mem other/x".into(),
            "get proxy::mem".into(),
            "get proxy::multi shared/multi/m".into(),
            "iter proxy::mem shared/t/".into(),
            "iter -R proxy::mem shared/t/".into(),
            "iter -1 proxy::mem shared/t/a".into(),
            "iter -V proxy::mem shared/t/".into(),
            "iter -R -V proxy::mem shared/".into(),
            "iter -1RV proxy::mem shared/t/b".into(),
            "iter proxy::mem shared/none/".into(),
            "iter proxy::mem shared/long/".into(),
            "iter -u alice proxy::mem priv/quota/".into(),
            "iter proxy::mem priv/quota/".into(),
            "iter proxy::multi shared/multi/".into(),
            "iter proxy::mem".into(),
            "get proxy::nosuchdict shared/x".into(),
            format!("get {missing_socket} shared/x"),
            format!("iter {missing_socket} shared/x"),
            "get nosuchdriver:x shared/x".into(),
        ];
        for args in &reads {
            cmp.case(format, args).await;
        }
        // Writes: each tool runs the same command on the same state.
        let writes = [
            "set proxy::mem shared/s 5".to_string(),
            "set proxy::mem shared/s 'with space'".into(),
            "get proxy::mem shared/s".into(),
            "inc proxy::mem shared/n 2".into(),
            "inc proxy::mem shared/n -- -3".into(),
            "inc proxy::mem shared/none 1".into(),
            "inc -u alice proxy::mem priv/quota/messages 1".into(),
            "inc proxy::mem shared/n abc".into(),
            "set -u alice proxy::mem priv/x 1".into(),
            "set proxy::mem priv/x 1".into(),
            "set proxy::mem shared/s".into(),
            "unset proxy::mem shared/s".into(),
            "unset proxy::mem shared/s".into(),
            "get proxy::mem shared/s".into(),
            "unset -u alice proxy::mem priv/x".into(),
            "set proxy::nosuchdict shared/x 1".into(),
            format!("set {missing_socket} shared/x 1"),
            format!("unset {missing_socket} shared/x"),
            format!("inc {missing_socket} shared/x 1"),
        ];
        for args in &writes {
            cmp.case(format, args).await;
        }
    }
    // A few of doveadm's outputs spelled out, so the comparison is known not to be vacuous.
    let multi = cmp
        .case(Some("tab"), "get proxy::multi shared/multi/m")
        .await;
    assert_eq!(multi.stdout, b"\t\na\tb\t42\n");
    let rows = cmp
        .case(Some("json"), "iter -R proxy::mem shared/t/c/")
        .await;
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout),
        r#"[{"key":"shared/t/c/d","value":"q\"\\/é\u0001"}]"#
    );
    let table = cmp.case(None, "iter -1 proxy::mem shared/t/a").await;
    assert_eq!(
        String::from_utf8_lossy(&table.stdout),
        format!("key\tvalue\nshared/t/a\t1\n")
    );
    let total = cmp.cases;
    assert!(
        cmp.mismatches.is_empty(),
        "{} of {total} cases differ:\n{}",
        cmp.mismatches.len(),
        cmp.mismatches.join("\n")
    );
    // Five formats, 49 commands each, plus the sanity check.
    assert_eq!(total, 5 * 49 + 4);
    server.stop().await;
}
