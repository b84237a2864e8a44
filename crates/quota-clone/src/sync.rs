//! Writing many users: input parsing (`user<TAB>bytes<TAB>messages` lines, or the output
//! of `doveadm -f tab mailbox status -A 'vsize messages' '*'`) and a bounded-concurrency run
//! that counts written, failed and uncertain writes.
//!
//! Why `vsize` from `mailbox status` and not `doveadm quota get`: `quota get` reports
//! STORAGE in KiB (rounded), while quota_clone writes bytes. `mailbox status` reports
//! `vsize` in bytes, summed here over all of a user's mailboxes, which is exactly the count
//! quota's `count` backend (and any backend with `quota_vsizes = yes`) keeps.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;

use crate::{Usage, UsageWriter, WriteError};

/// One user's usage to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The username.
    pub user: String,
    /// The usage.
    pub usage: Usage,
}

/// What a sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Committed.
    pub written: u64,
    /// Certainly not written.
    pub failed: u64,
    /// Sent, but not confirmed (connection lost or timed out during the commit).
    pub uncertain: u64,
    /// Input lines (or doveadm users) that could not be used; nothing was written for them.
    pub invalid: u64,
}

/// Exit code: some write failed or is uncertain (sysexits EX_TEMPFAIL).
pub const EXIT_FAILED: u8 = 75;
/// Exit code: every write succeeded but some input was unusable (sysexits EX_DATAERR).
pub const EXIT_INVALID_INPUT: u8 = 65;

impl Summary {
    /// 0 when everything was written, [`EXIT_FAILED`] when any write failed or is
    /// uncertain, else [`EXIT_INVALID_INPUT`] when some input was skipped.
    pub fn exit_code(&self) -> u8 {
        if self.failed > 0 || self.uncertain > 0 {
            EXIT_FAILED
        } else if self.invalid > 0 {
            EXIT_INVALID_INPUT
        } else {
            0
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "written: {}, failed: {}, uncertain: {}",
            self.written, self.failed, self.uncertain
        )?;
        if self.invalid > 0 {
            write!(f, ", invalid input: {}", self.invalid)?;
        }
        Ok(())
    }
}

/// Decimal digits only, as stored by the plugin.
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses one `user<TAB>bytes<TAB>messages` line. Blank lines and `#` comments give `None`.
pub fn parse_line(line: &str) -> Result<Option<Entry>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split('\t').collect();
    let [user, bytes, messages] = fields[..] else {
        return Err(format!(
            "expected user<TAB>bytes<TAB>messages, got {} fields",
            fields.len()
        ));
    };
    if user.is_empty() {
        return Err("empty username".into());
    }
    let bytes = parse_u64(bytes).ok_or_else(|| format!("invalid bytes '{bytes}'"))?;
    let messages = parse_u64(messages).ok_or_else(|| format!("invalid messages '{messages}'"))?;
    Ok(Some(Entry {
        user: user.to_string(),
        usage: Usage { bytes, messages },
    }))
}

/// Parses a whole input; errors are `line N: reason`.
pub fn parse_input(text: &str) -> (Vec<Entry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => {}
            Err(e) => errors.push(format!("line {}: {e}", n + 1)),
        }
    }
    (entries, errors)
}

/// The doveadm command whose output [`parse_doveadm_status`] reads (after `doveadm`
/// and any `-c <config>`).
pub const DOVEADM_STATUS_ARGS: [&str; 7] = [
    "-f",
    "tab",
    "mailbox",
    "status",
    "-A",
    "vsize messages",
    "*",
];

/// Users doveadm complained about on stderr (`doveadm(<user>): Error: …` or
/// `doveadm(<user>,<ip>): …`): their sums may be partial, so they are not written.
pub fn doveadm_failed_users(stderr: &str) -> HashSet<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("doveadm("))
        .filter_map(|rest| rest.split_once("):"))
        .map(|(who, _)| who.split(',').next().unwrap_or(who).to_string())
        .collect()
}

/// Reads `doveadm -f tab mailbox status -A 'vsize messages' '*'` output: a header line
/// naming the columns (`Username`, `mailbox`, `messages`, `vsize` in doveadm's order), then
/// one row per mailbox (or per user with `-t`). Rows are summed per user, in order of first
/// appearance. Users in `skip` and users with unreadable rows are returned apart.
pub fn parse_doveadm_status(
    output: &str,
    skip: &HashSet<String>,
) -> Result<(Vec<Entry>, Vec<String>), String> {
    let mut lines = output.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or("doveadm printed nothing")?
        .split('\t')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("doveadm output has no '{name}' column"))
    };
    let (user_col, vsize_col, messages_col) =
        (column("username")?, column("vsize")?, column("messages")?);
    let mut order: Vec<String> = Vec::new();
    let mut sums: HashMap<String, Usage> = HashMap::new();
    let mut bad: Vec<String> = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let user = fields.get(user_col).copied().unwrap_or_default();
        let parsed = (fields.len() == header.len())
            .then(|| {
                Some((
                    parse_u64(fields[vsize_col])?,
                    parse_u64(fields[messages_col])?,
                ))
            })
            .flatten();
        match parsed {
            _ if user.is_empty() => return Err(format!("unreadable doveadm line: {line:?}")),
            Some((vsize, messages)) => {
                let sum = sums.entry(user.to_string()).or_insert_with(|| {
                    order.push(user.to_string());
                    Usage::default()
                });
                sum.bytes += vsize;
                sum.messages += messages;
            }
            None => bad.push(user.to_string()),
        }
    }
    let bad_set: HashSet<&str> = bad.iter().map(String::as_str).collect();
    let mut skipped: Vec<String> = order
        .iter()
        .filter(|u| skip.contains(*u) || bad_set.contains(u.as_str()))
        .cloned()
        .collect();
    for u in bad.iter().chain(skip.iter()) {
        if !skipped.contains(u) {
            skipped.push(u.clone());
        }
    }
    let entries = order
        .into_iter()
        .filter(|u| !skip.contains(u) && !bad_set.contains(u.as_str()))
        .map(|user| {
            let usage = sums[&user];
            Entry { user, usage }
        })
        .collect();
    Ok((entries, skipped))
}

/// Writes every entry, at most `jobs` at a time (all pipelined on the writer's
/// connection), calling `done` after each.
pub async fn run<W: UsageWriter>(
    writer: &W,
    entries: Vec<Entry>,
    jobs: usize,
    mut done: impl FnMut(&Entry, &Result<(), WriteError>),
) -> Summary {
    let mut summary = Summary::default();
    let mut results = futures::stream::iter(entries)
        .map(|entry| async move {
            let result = writer.write_usage(&entry.user, entry.usage).await;
            (entry, result)
        })
        .buffer_unordered(jobs.max(1));
    while let Some((entry, result)) = results.next().await {
        match &result {
            Ok(()) => summary.written += 1,
            Err(e) if e.is_uncertain() => summary.uncertain += 1,
            Err(_) => summary.failed += 1,
        }
        done(&entry, &result);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines() {
        let (entries, errors) = parse_input(
            "alice\t1234\t5\n\n# comment\nbob\t0\t0\r\nbad line\ncarol\t-1\t2\n\t1\t2\n",
        );
        assert_eq!(
            entries,
            [
                Entry {
                    user: "alice".into(),
                    usage: Usage {
                        bytes: 1234,
                        messages: 5
                    }
                },
                Entry {
                    user: "bob".into(),
                    usage: Usage {
                        bytes: 0,
                        messages: 0
                    }
                }
            ]
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("line 5:"), "{errors:?}");
    }

    #[test]
    fn doveadm_rows_are_summed_per_user() {
        let out = "Username\tmailbox\tmessages\tvsize\nalice\tINBOX\t2\t100\nalice\tSent\t1\t50\nbob\tINBOX\t0\t0\ncarol\tINBOX\tx\t1\n";
        let (entries, skipped) = parse_doveadm_status(out, &HashSet::new()).unwrap();
        assert_eq!(
            entries,
            [
                Entry {
                    user: "alice".into(),
                    usage: Usage {
                        bytes: 150,
                        messages: 3
                    }
                },
                Entry {
                    user: "bob".into(),
                    usage: Usage {
                        bytes: 0,
                        messages: 0
                    }
                }
            ]
        );
        assert_eq!(skipped, ["carol"]);
        let skip: HashSet<String> = doveadm_failed_users("doveadm(bob): Error: Mailbox INBOX: read failed\ndoveadm(dave,1.2.3.4): Error: x\nwarning\n");
        assert_eq!(skip, ["bob".to_string(), "dave".to_string()].into());
        let (entries, skipped) = parse_doveadm_status(out, &skip).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(skipped, ["bob", "carol", "dave"]);
        assert!(parse_doveadm_status("mailbox\tmessages\n", &HashSet::new()).is_err());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            Summary {
                written: 3,
                ..Summary::default()
            }
            .exit_code(),
            0
        );
        assert_eq!(
            Summary {
                written: 3,
                invalid: 1,
                ..Summary::default()
            }
            .exit_code(),
            65
        );
        assert_eq!(
            Summary {
                uncertain: 1,
                invalid: 1,
                ..Summary::default()
            }
            .exit_code(),
            75
        );
        assert_eq!(
            Summary {
                failed: 1,
                ..Summary::default()
            }
            .exit_code(),
            75
        );
    }
}
