//! Bytes held in open transactions: changes are buffered until the commit, so a client that
//! opens transactions and never commits could otherwise hold any amount of memory. Each
//! connection has its own cap, and all connections together share a server-wide one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What one buffered change costs besides its key and value bytes (the `Change` itself and
/// its place in the transaction's list), so that many tiny changes count too.
pub const CHANGE_OVERHEAD: usize = 64;

/// A cap was reached; the connection is closed with this message in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("open transactions of this connection would hold more than {limit} bytes (max_transaction_bytes_per_connection)")]
    Connection { limit: usize },
    #[error("open transactions of all connections would hold more than {limit} bytes (max_transaction_bytes_total)")]
    Server { limit: usize },
}

/// The server-wide cap, shared by every connection.
#[derive(Debug)]
pub struct ServerBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ServerBudget {
    /// A budget of `limit` bytes for all connections together.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(ServerBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes held by all connections now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One connection's share: what it holds, its own cap, and the server's budget.
#[derive(Debug)]
pub struct ConnectionBudget {
    server: Arc<ServerBudget>,
    held: usize,
    limit: usize,
}

impl ConnectionBudget {
    /// A connection allowed `limit` bytes, drawing on `server`.
    pub fn new(server: Arc<ServerBudget>, limit: usize) -> Self {
        ConnectionBudget {
            server,
            held: 0,
            limit,
        }
    }

    /// Takes `bytes` more, or refuses without taking anything.
    pub fn reserve(&mut self, bytes: usize) -> Result<(), BudgetError> {
        if self.held.saturating_add(bytes) > self.limit {
            return Err(BudgetError::Connection { limit: self.limit });
        }
        let limit = self.server.limit;
        self.server
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            })
            .map_err(|_| BudgetError::Server { limit })?;
        self.held += bytes;
        Ok(())
    }

    /// Gives back `bytes` taken earlier (a transaction committed or rolled back).
    pub fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.server.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes this connection holds now.
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for ConnectionBudget {
    fn drop(&mut self) {
        self.server.used.fetch_sub(self.held, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_refuses_without_taking() {
        let server = ServerBudget::new(1000);
        let mut c = ConnectionBudget::new(server.clone(), 100);
        c.reserve(60).unwrap();
        assert_eq!(c.reserve(41), Err(BudgetError::Connection { limit: 100 }));
        assert_eq!((c.held(), server.used()), (60, 60));
        c.release(60);
        assert_eq!((c.held(), server.used()), (0, 0));
    }

    #[test]
    fn server_cap_is_shared_and_given_back_on_drop() {
        let server = ServerBudget::new(150);
        let mut a = ConnectionBudget::new(server.clone(), 100);
        let mut b = ConnectionBudget::new(server.clone(), 100);
        a.reserve(100).unwrap();
        assert_eq!(b.reserve(60), Err(BudgetError::Server { limit: 150 }));
        b.reserve(50).unwrap();
        drop(a);
        assert_eq!(server.used(), 50);
        b.reserve(50).unwrap();
        assert_eq!(server.used(), 100);
    }
}
