//! A private Dovecot 2.3 instance (`tests/scripts/quota-clone-env.sh`) whose quota_clone
//! plugin writes through a [`DictServer`], driven with the real `doveadm`.

use std::process::{Command, Stdio};

use crate::{output_with_stdin, repo_dir, run_ok, scratch, DictServer};

/// A private mail instance whose quota_clone writes to `server`.
pub struct MailEnv {
    /// The instance's dovecot.conf, for `doveadm -c`.
    pub conf: String,
    dir: std::path::PathBuf,
}

impl MailEnv {
    /// An instance in `<scratch>/qc-<dict name>`.
    pub fn start(server: &DictServer) -> MailEnv {
        Self::start_in(server, &format!("qc-{}", server.name))
    }

    /// An instance in `<scratch>/<dir>` (one per concurrently running test).
    pub fn start_in(server: &DictServer, dir: &str) -> MailEnv {
        let dir = scratch().join(dir);
        let out = run_ok(
            Command::new("bash")
                .arg(repo_dir().join("tests/scripts/quota-clone-env.sh"))
                .arg("start")
                .arg(&server.socket)
                .arg(&server.name)
                .env("DICT_TEST_QC_DIR", &dir)
                .stdin(Stdio::null()),
        );
        MailEnv {
            conf: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            dir,
        }
    }

    /// Runs `doveadm -c <conf> args` (with `stdin`); its stdout, panicking unless it succeeds.
    pub fn doveadm(&self, args: &[&str], stdin: Option<String>) -> String {
        let mut cmd = Command::new("doveadm");
        cmd.arg("-c").arg(&self.conf).args(args);
        let out = output_with_stdin(&mut cmd, stdin.as_deref().map(str::as_bytes));
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (vsize, messages) of the user's INBOX as Dovecot sees it.
    pub fn usage(&self, user: &str) -> (u64, u64) {
        let out = self.doveadm(
            &[
                "-f",
                "tab",
                "mailbox",
                "status",
                "-u",
                user,
                "vsize messages",
                "INBOX",
            ],
            None,
        );
        // A header line names the columns (mailbox, messages, vsize in doveadm's order).
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
        let row: Vec<&str> = lines.last().expect("status line").split('\t').collect();
        let field = |name: &str| -> u64 {
            let i = header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("no {name} in {out:?}"));
            row[i]
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name} in {out:?}"))
        };
        (field("vsize"), field("messages"))
    }
}

impl Drop for MailEnv {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_dir().join("tests/scripts/quota-clone-env.sh"))
            .arg("stop")
            .env("DICT_TEST_QC_DIR", &self.dir)
            .status();
    }
}

/// Message `n` for `user`: its size grows with `n`.
pub fn message(n: usize, user: &str) -> String {
    let mut m = format!("From: sender@example.test\r\nTo: {user}\r\nSubject: quota clone test {n}\r\nMessage-ID: <qc-{n}-{user}>\r\n\r\n");
    for i in 0..n * 20 {
        m.push_str(&format!("line {i:04} of message {n} for {user}\r\n"));
    }
    m
}
