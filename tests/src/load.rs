//! Concurrent load for fault tests: several connections each write batches of pipelined
//! commits (unique keys) and a lookup, and record every reply and when it came. Afterwards
//! [`LoadReport::check`] compares what was acknowledged with what the backend holds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::wire::{set_commit, RawClient};
use crate::DictServer;

/// How the load is shaped.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Connections, one thread each.
    pub connections: usize,
    /// Commits per write; a lookup follows them in the same write.
    pub pipelined: usize,
    /// Pause after each batch's replies.
    pub pause: Duration,
    /// Longest a reply may take before the test calls it missing (well above any timeout).
    pub give_up: Duration,
}

impl Default for LoadShape {
    fn default() -> Self {
        LoadShape {
            connections: 4,
            pipelined: 3,
            pause: Duration::from_millis(40),
            give_up: Duration::from_secs(15),
        }
    }
}

/// What one request got.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The key's name (last path component): a commit's own key, a lookup's target.
    pub name: String,
    /// A commit (else a lookup).
    pub commit: bool,
    /// A lookup of a key whose commit was acknowledged before the lookup was sent.
    pub expect_found: bool,
    /// When the request was written.
    pub sent: Instant,
    /// The reply letter and when it came; `None`: no reply (connection closed, or none
    /// within [`LoadShape::give_up`]).
    pub reply: Option<(char, Instant)>,
    /// The reply text, for messages.
    pub text: String,
}

/// Load running in the background until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    /// Starts the load on `server`'s dict, keys `shared/kv/<scope>/c<conn>n<seq>`.
    pub fn start(server: &DictServer, scope: &str, shape: LoadShape) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..shape.connections)
            .map(|c| {
                let stop = stop.clone();
                let socket = server.socket.clone();
                let name = server.name.clone();
                let scope = scope.to_string();
                std::thread::spawn(move || worker(&socket, &name, &scope, c, shape, &stop))
            })
            .collect();
        Load { stop, workers }
    }

    /// Stops the load (each connection finishes its batch) and collects every outcome.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let outcomes = self
            .workers
            .into_iter()
            .flat_map(|w| w.join().expect("load worker panicked"))
            .collect();
        LoadReport { outcomes }
    }
}

fn worker(
    socket: &std::path::Path,
    dict: &str,
    scope: &str,
    conn: usize,
    shape: LoadShape,
    stop: &AtomicBool,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut seq = 0u32;
    let mut last_acknowledged: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut client) = RawClient::connect(socket, dict) else {
            std::thread::sleep(shape.pause);
            continue;
        };
        // Replies are numbered per connection, from 1.
        let mut numbered = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let first = outcomes.len();
            let mut bytes = String::new();
            for id in 1..=shape.pipelined as u32 {
                seq += 1;
                let name = format!("c{conn}n{seq}");
                bytes += &set_commit(id, &format!("shared/kv/{scope}/{name}"), "v");
                outcomes.push(pending(name, true, false));
            }
            let target = last_acknowledged
                .clone()
                .unwrap_or_else(|| format!("c{conn}none"));
            bytes += &format!("Lshared/kv/{scope}/{target}\t\n");
            outcomes.push(pending(target, false, last_acknowledged.is_some()));
            let sent = Instant::now();
            let written = client.send(&bytes).is_ok();
            let base = numbered;
            numbered += shape.pipelined as u32 + 1;
            for o in &mut outcomes[first..] {
                o.sent = sent;
            }
            let mut open = outcomes.len() - first;
            let deadline = sent + shape.give_up;
            while written && open > 0 {
                let Ok(reply) = client.read_reply(deadline) else {
                    break;
                };
                let Some(index) = reply.n.checked_sub(base + 1).map(|i| first + i as usize) else {
                    continue;
                };
                if index < outcomes.len() && outcomes[index].reply.is_none() {
                    let o = &mut outcomes[index];
                    let letter = reply.letter();
                    o.reply = Some((letter, reply.at));
                    o.text = reply.text;
                    if o.commit && letter == 'O' {
                        last_acknowledged = Some(o.name.clone());
                    }
                    open -= 1;
                }
            }
            if open > 0 {
                // Closed, or a reply never came: the outcomes stay unanswered.
                break;
            }
            std::thread::sleep(shape.pause);
        }
    }
    outcomes
}

fn pending(name: String, commit: bool, expect_found: bool) -> Outcome {
    Outcome {
        name,
        commit,
        expect_found,
        sent: Instant::now(),
        reply: None,
        text: String::new(),
    }
}

/// Every outcome of a load run.
pub struct LoadReport {
    pub outcomes: Vec<Outcome>,
}

/// The figures of one fault scenario.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Commits answered `O`.
    pub acknowledged: usize,
    /// Commits answered `F`.
    pub failed: usize,
    /// Commits answered `W`.
    pub uncertain: usize,
    /// Acknowledged commits whose key is not in the backend.
    pub lost: usize,
    /// Commits answered `F` whose key is in the backend anyway.
    pub false_f: usize,
    /// Requests without any reply.
    pub unanswered: usize,
    /// Lookups of acknowledged keys answered "not found".
    pub lookups_not_found: usize,
    /// The longest a request waited for its reply.
    pub max_wait: Duration,
    /// From the backend's return to the first `O` commit reply after it.
    pub recovery: Option<Duration>,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acknowledged {} / lost {} / false-F {} (F {}, W {}, unanswered {}, lookups N {}) / max wait {} ms / recovery {}",
            self.acknowledged,
            self.lost,
            self.false_f,
            self.failed,
            self.uncertain,
            self.unanswered,
            self.lookups_not_found,
            self.max_wait.as_millis(),
            self.recovery
                .map(|r| format!("{} ms", r.as_millis()))
                .unwrap_or_else(|| "never".into()),
        )
    }
}

impl LoadReport {
    /// The figures against `stored` (the key names the backend holds after the run);
    /// `back` is when the backend was available again.
    pub fn figures(&self, stored: &HashSet<String>, back: Option<Instant>) -> Figures {
        let mut f = Figures::default();
        let mut first_ok_after_back: Option<Instant> = None;
        for o in &self.outcomes {
            let Some((letter, at)) = o.reply else {
                f.unanswered += 1;
                continue;
            };
            f.max_wait = f.max_wait.max(at - o.sent);
            if !o.commit {
                if letter == 'N' && o.expect_found {
                    f.lookups_not_found += 1;
                }
                continue;
            }
            match letter {
                'O' => {
                    f.acknowledged += 1;
                    if !stored.contains(&o.name) {
                        f.lost += 1;
                    }
                    if back.is_some_and(|b| at >= b) {
                        first_ok_after_back = Some(first_ok_after_back.map_or(at, |t| t.min(at)));
                    }
                }
                'F' => {
                    f.failed += 1;
                    if stored.contains(&o.name) {
                        f.false_f += 1;
                    }
                }
                'W' => f.uncertain += 1,
                _ => {}
            }
        }
        f.recovery = back.and_then(|b| first_ok_after_back.map(|t| t - b));
        f
    }

    /// A few outcomes that broke a rule, for assertion messages.
    pub fn examples(&self, rule: impl Fn(&Outcome) -> bool) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|o| rule(o))
            .take(5)
            .map(|o| {
                let wait = o.reply.map(|(_, at)| (at - o.sent).as_millis());
                format!(
                    "{} {:?} after {wait:?} ms: {}",
                    o.name,
                    o.reply.map(|r| r.0),
                    o.text
                )
            })
            .collect()
    }

    /// Asserts the rules of every fault scenario: no acknowledged commit lost, no `F` commit
    /// left data behind, every request answered within `bound`, lookups of acknowledged
    /// keys never "not found", and (when `back` is given) an `O` within `recovery_bound` of
    /// the backend's return. Prints the figures first, labelled `scenario`.
    pub fn check(
        &self,
        scenario: &str,
        stored: &HashSet<String>,
        bound: Duration,
        back: Option<(Instant, Duration)>,
    ) -> Figures {
        let f = self.figures(stored, back.map(|b| b.0));
        eprintln!("fault figures [{scenario}]: {f}");
        assert!(f.acknowledged > 0, "[{scenario}] nothing was acknowledged");
        assert_eq!(
            f.lost,
            0,
            "[{scenario}] acknowledged commits missing: {:?}",
            self.examples(|o| o.commit
                && o.reply.is_some_and(|r| r.0 == 'O')
                && !stored.contains(&o.name))
        );
        assert_eq!(
            f.false_f,
            0,
            "[{scenario}] commits answered F whose data is there: {:?}",
            self.examples(|o| o.commit
                && o.reply.is_some_and(|r| r.0 == 'F')
                && stored.contains(&o.name))
        );
        assert_eq!(
            f.unanswered,
            0,
            "[{scenario}] requests never answered: {:?}",
            self.examples(|o| o.reply.is_none())
        );
        assert_eq!(
            f.lookups_not_found,
            0,
            "[{scenario}] acknowledged keys looked up as not found: {:?}",
            self.examples(|o| !o.commit && o.expect_found && o.reply.is_some_and(|r| r.0 == 'N'))
        );
        assert!(
            f.max_wait <= bound,
            "[{scenario}] a reply took {} ms (bound {} ms): {:?}",
            f.max_wait.as_millis(),
            bound.as_millis(),
            self.examples(|o| o.reply.is_some_and(|(_, at)| at - o.sent > bound))
        );
        if let Some((_, recovery_bound)) = back {
            let recovery = f
                .recovery
                .unwrap_or_else(|| panic!("[{scenario}] no commit acknowledged after recovery"));
            assert!(
                recovery <= recovery_bound,
                "[{scenario}] first O came {} ms after the backend was back (bound {} ms)",
                recovery.as_millis(),
                recovery_bound.as_millis()
            );
        }
        f
    }
}
