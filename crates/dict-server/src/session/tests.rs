//! The session driven line by line: no socket, no runtime, time as a value.

use super::*;
use crate::budget::ServerBudget;
use crate::transactions::MAX_OPEN_TRANSACTIONS;

const TIMEOUT: Duration = Duration::from_secs(5);

fn session(style: ReplyStyle, budget: usize) -> Session {
    let budget = ConnectionBudget::new(ServerBudget::new(usize::MAX), budget);
    Session::new(style, TIMEOUT, budget)
}

/// Feeds `lines` read at `now`; returns every action they caused.
fn feed(s: &mut Session, now: Instant, lines: &[&[u8]]) -> Vec<Action> {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut actions = Vec::new();
    for line in lines {
        s.handle_line(line, now, wall);
        while let Some(a) = s.poll_action() {
            actions.push(a);
        }
    }
    actions
}

fn close_reason(actions: &[Action]) -> Option<&CloseReason> {
    actions.iter().find_map(|a| match a {
        Action::Close(r) => Some(r),
        _ => None,
    })
}

#[test]
fn async_style_announces_each_command_before_starting_it() {
    let mut s = session(ReplyStyle::ASYNC_MULTI, usize::MAX);
    let now = Instant::now();
    let actions = feed(&mut s, now, &[b"Lshared/a", b"Lpriv/b\tu"]);
    let ids: Vec<_> = actions
        .iter()
        .map(|a| match a {
            Action::Write(ServerLine::AsyncId(n)) => format!("*{n}"),
            Action::Lookup { key, ctx, .. } => {
                assert_eq!(ctx.deadline, now + TIMEOUT);
                format!("L{}+{:?}", String::from_utf8_lossy(key), ctx.async_id)
            }
            _ => panic!("unexpected action"),
        })
        .collect();
    assert_eq!(
        ids,
        ["*1", "Lshared/a+Some(1)", "*2", "Lpriv/b+Some(2)"],
        "ids count from 1, each announced first"
    );
}

#[test]
fn ordered_style_sends_no_ids() {
    let mut s = session(ReplyStyle::ORDERED, usize::MAX);
    let actions = feed(&mut s, Instant::now(), &[b"I1\t0\tshared/x/\t"]);
    match actions.as_slice() {
        [Action::Iterate { ctx, options, .. }] => {
            assert_eq!(ctx.async_id, None);
            assert!(options.recurse);
        }
        _ => panic!("expected one iterate action"),
    }
}

#[test]
fn a_commit_waits_for_earlier_reads_and_the_commit_before_it() {
    let mut s = session(ReplyStyle::ORDERED, usize::MAX);
    let now = Instant::now();
    let mut actions = feed(
        &mut s,
        now,
        &[
            b"Lshared/a",
            b"Lshared/b",
            b"B1\t",
            b"S1\tshared/a\t1",
            b"C1",
        ],
    );
    assert_eq!(actions.len(), 3);
    let Action::Commit(first) = actions.pop().unwrap() else {
        panic!("expected a commit")
    };
    assert!(first.ctx.after_commit.is_none());
    assert_eq!(first.earlier_reads.len(), 2);
    // The reads' barriers open when their openers go.
    drop(actions);
    assert!(first.earlier_reads.iter().all(|b| b.is_cancelled()));

    // A read after the commit waits for it; the next commit waits for both.
    let mut later = feed(
        &mut s,
        now,
        &[b"Lshared/c", b"B2\t", b"S2\tshared/b\t2", b"C2"],
    );
    let Some(Action::Commit(second)) = later.pop() else {
        panic!("expected a commit")
    };
    let Some(Action::Lookup { ctx, done, .. }) = later.pop() else {
        panic!("expected a lookup")
    };
    let after = ctx.after_commit.expect("the read waits for the commit");
    assert!(!after.is_cancelled());
    assert_eq!(second.earlier_reads.len(), 1);
    let before = second
        .ctx
        .after_commit
        .clone()
        .expect("commits are ordered");
    drop(first.done);
    assert!(after.is_cancelled() && before.is_cancelled());
    assert!(!second.earlier_reads[0].is_cancelled());
    drop(done);
    assert!(second.earlier_reads[0].is_cancelled());
}

#[test]
fn reads_already_started_are_pruned_from_the_wait_list() {
    let mut s = session(ReplyStyle::ORDERED, usize::MAX);
    // Each opener dropped at once: every read has started before the next is read.
    for _ in 0..=READS_BEFORE_PRUNE {
        drop(feed(&mut s, Instant::now(), &[b"Lshared/a"]));
    }
    assert_eq!(s.reads_since_commit.len(), 1);
}

#[test]
fn a_commit_without_changes_needs_no_backend() {
    let mut s = session(ReplyStyle::ASYNC, usize::MAX);
    let actions = feed(&mut s, Instant::now(), &[b"B7\t", b"D7"]);
    assert!(matches!(
        actions.as_slice(),
        [
            Action::Write(ServerLine::AsyncId(1)),
            Action::EmptyCommit {
                id: 7,
                is_async: true,
                ..
            }
        ]
    ));
    assert_eq!(s.open_transactions(), 0);
}

#[test]
fn bad_keys_close_the_session_and_later_lines_are_ignored() {
    let mut s = session(ReplyStyle::ASYNC, usize::MAX);
    let actions = feed(&mut s, Instant::now(), &[b"Lfoo/bar", b"Lshared/a"]);
    assert!(matches!(
        actions.as_slice(),
        [Action::Close(CloseReason::Key(KeyError::BadPrefix(_)))]
    ));
    assert!(s.is_closed());
    let actions = feed(&mut s, Instant::now(), &[b"Lpriv/x"]);
    assert!(actions.is_empty());

    let mut s = session(ReplyStyle::ASYNC, usize::MAX);
    let actions = feed(&mut s, Instant::now(), &[b"B1\t", b"S1\tpriv/k\tv"]);
    assert!(matches!(
        close_reason(&actions),
        Some(CloseReason::Transaction(TransactionError::Key(
            KeyError::NoUsername(_)
        )))
    ));
}

#[test]
fn transaction_ids_must_be_open_and_unique() {
    let mut s = session(ReplyStyle::ORDERED, usize::MAX);
    let actions = feed(&mut s, Instant::now(), &[b"C9"]);
    assert_eq!(
        close_reason(&actions),
        Some(&CloseReason::Transaction(TransactionError::Unknown(9)))
    );
    let mut s = session(ReplyStyle::ORDERED, usize::MAX);
    let actions = feed(&mut s, Instant::now(), &[b"B1\t", b"B1\t"]);
    assert_eq!(
        close_reason(&actions),
        Some(&CloseReason::Transaction(TransactionError::AlreadyExists(
            1
        )))
    );
    let mut s = session(ReplyStyle::ORDERED, usize::MAX);
    let begins: Vec<Vec<u8>> = (0..=MAX_OPEN_TRANSACTIONS)
        .map(|i| format!("B{i}\t").into_bytes())
        .collect();
    let begins: Vec<&[u8]> = begins.iter().map(Vec::as_slice).collect();
    let actions = feed(&mut s, Instant::now(), &begins);
    assert!(matches!(
        close_reason(&actions),
        Some(CloseReason::Transaction(TransactionError::Limit(_)))
    ));
}

#[test]
fn the_byte_budget_closes_the_session() {
    let mut s = session(ReplyStyle::ORDERED, 200);
    let value = format!("S1\tshared/k\t{}", "x".repeat(200));
    let actions = feed(&mut s, Instant::now(), &[b"B1\t", value.as_bytes()]);
    assert!(close_reason(&actions).is_some_and(CloseReason::is_memory_limit));
}

#[test]
fn unparsable_lines_close_the_session() {
    let mut s = session(ReplyStyle::ORDERED, usize::MAX);
    let actions = feed(&mut s, Instant::now(), &[b"Zwhat"]);
    assert!(matches!(
        close_reason(&actions),
        Some(CloseReason::Protocol(_))
    ));
}

#[test]
fn the_deadline_runs_from_read_time() {
    let mut s = session(ReplyStyle::ORDERED, usize::MAX);
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(3);
    let actions = feed(&mut s, later, &[b"B1\t", b"S1\tshared/k\tv", b"C1"]);
    let [Action::Commit(job)] = actions.as_slice() else {
        panic!("expected one commit")
    };
    assert_eq!(job.ctx.deadline, later + TIMEOUT);
    assert_eq!(job.ctx.timeout, TIMEOUT);
}
