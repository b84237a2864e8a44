//! Coalescing of rapid updates per user, like the plugin's timer: the first change
//! starts a timer; when it fires, the latest usage is written; it keeps firing every
//! interval while changes keep coming, and stops after a tick with nothing new. A failed
//! write keeps the usage pending, so the next tick retries it (unless newer usage arrived).
//! [`Coalescer::flush_all`] is the plugin's flush at user deinit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::{Usage, UsageWriter, WriteError};

/// The plugin's timer: 10 seconds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The outcome of one write made by a [`Coalescer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushEvent {
    /// The user written.
    pub user: String,
    /// The usage written.
    pub usage: Usage,
    /// What the commit said.
    pub result: Result<(), WriteError>,
}

struct UserState {
    /// Usage not written yet.
    pending: Option<Usage>,
    /// Held while writing this user, so timer and explicit flushes never overlap.
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

struct Inner<W> {
    writer: W,
    interval: Duration,
    users: Mutex<HashMap<String, UserState>>,
    events: Option<mpsc::UnboundedSender<FlushEvent>>,
}

/// Writes each user's latest usage at most once per interval. Cheap to clone.
///
/// Must be used inside a tokio runtime (timers are tasks).
pub struct Coalescer<W> {
    inner: Arc<Inner<W>>,
}

impl<W> Clone for Coalescer<W> {
    fn clone(&self) -> Self {
        Coalescer {
            inner: self.inner.clone(),
        }
    }
}

impl<W: UsageWriter> Coalescer<W> {
    /// A coalescer writing through `writer` at most every `interval` per user.
    pub fn new(writer: W, interval: Duration) -> Self {
        Coalescer {
            inner: Arc::new(Inner {
                writer,
                interval,
                users: Mutex::new(HashMap::new()),
                events: None,
            }),
        }
    }

    /// Like [`new`](Coalescer::new), also reporting every write on the returned channel.
    pub fn with_events(
        writer: W,
        interval: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<FlushEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            writer,
            interval,
            users: Mutex::new(HashMap::new()),
            events: Some(tx),
        };
        (
            Coalescer {
                inner: Arc::new(inner),
            },
            rx,
        )
    }

    /// Records `user`'s current usage; it is written when the user's timer fires.
    pub fn update(&self, user: &str, usage: Usage) {
        let mut users = self.inner.users.lock().expect("not poisoned");
        if let Some(state) = users.get_mut(user) {
            state.pending = Some(usage);
            return;
        }
        users.insert(
            user.to_string(),
            UserState {
                pending: Some(usage),
                write_lock: Arc::default(),
            },
        );
        drop(users);
        let inner = self.inner.clone();
        let user = user.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(inner.interval).await;
                match inner.tick(&user).await {
                    Flushed::Written | Flushed::Retry => {}
                    Flushed::Idle => return,
                }
            }
        });
    }

    /// Number of users with a timer running.
    pub fn active_users(&self) -> usize {
        self.inner.users.lock().expect("not poisoned").len()
    }

    /// Writes `user`'s pending usage now (the plugin's flush at user deinit). `None` when
    /// nothing was pending.
    pub async fn flush_user(&self, user: &str) -> Option<Result<(), WriteError>> {
        self.inner.flush_now(user).await
    }

    /// Writes every pending usage now and returns the outcomes.
    pub async fn flush_all(&self) -> Vec<FlushEvent> {
        let users: Vec<(String, Option<Usage>)> = {
            let users = self.inner.users.lock().expect("not poisoned");
            users.iter().map(|(u, s)| (u.clone(), s.pending)).collect()
        };
        let flushes = users
            .into_iter()
            .filter(|(_, p)| p.is_some())
            .map(|(user, _)| async move {
                let pending = self
                    .inner
                    .users
                    .lock()
                    .expect("not poisoned")
                    .get(&user)
                    .and_then(|s| s.pending);
                let result = self.inner.flush_now(&user).await;
                result.map(|result| FlushEvent {
                    user,
                    usage: pending.unwrap_or_default(),
                    result,
                })
            });
        futures::future::join_all(flushes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

enum Flushed {
    Written,
    /// The write failed; the usage stays pending.
    Retry,
    /// Nothing was pending: the timer stops.
    Idle,
}

impl<W: UsageWriter> Inner<W> {
    async fn flush_now(&self, user: &str) -> Option<Result<(), WriteError>> {
        let lock = self
            .users
            .lock()
            .expect("not poisoned")
            .get(user)?
            .write_lock
            .clone();
        let _guard = lock.lock().await;
        let usage = self
            .users
            .lock()
            .expect("not poisoned")
            .get_mut(user)?
            .pending
            .take()?;
        Some(self.write(user, usage).await)
    }

    /// One timer tick: writes the pending usage, or forgets the user when there is none.
    async fn tick(&self, user: &str) -> Flushed {
        let Some(lock) = self
            .users
            .lock()
            .expect("not poisoned")
            .get(user)
            .map(|s| s.write_lock.clone())
        else {
            return Flushed::Idle;
        };
        let _guard = lock.lock().await;
        let usage = {
            let mut users = self.users.lock().expect("not poisoned");
            let Some(state) = users.get_mut(user) else {
                return Flushed::Idle;
            };
            match state.pending.take() {
                Some(usage) => usage,
                None => {
                    users.remove(user);
                    return Flushed::Idle;
                }
            }
        };
        match self.write(user, usage).await {
            Ok(()) => Flushed::Written,
            Err(_) => Flushed::Retry,
        }
    }

    async fn write(&self, user: &str, usage: Usage) -> Result<(), WriteError> {
        let result = self.writer.write_usage(user, usage).await;
        if let Err(e) = &result {
            tracing::warn!(user, "quota_clone_dict: {e}");
            // Retry at the next tick, unless newer usage arrived meanwhile.
            if let Some(state) = self.users.lock().expect("not poisoned").get_mut(user) {
                state.pending.get_or_insert(usage);
            }
        }
        if let Some(events) = &self.events {
            let _ = events.send(FlushEvent {
                user: user.to_string(),
                usage,
                result: result.clone(),
            });
        }
        result
    }
}
