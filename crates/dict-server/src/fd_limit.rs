//! Open files: every client connection is one, so `max_connections` means nothing while the
//! soft limit stays at the usual 1024. At start the soft limit is raised to the hard one
//! (what systemd's `LimitNOFILE` or `ulimit -Hn` allows), and a limit still too low for the
//! configuration is reported by the server and by `dict-server check`.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::setup::Plan;

/// Descriptors kept for what is not a client: listeners, the metrics endpoint, log files,
/// the runtime's own.
const SLACK: u64 = 64;
/// Descriptors counted per dict for its backend: a pool of database connections (SQLite
/// readers and writer, or up to `maxconns` per host) or a few Redis connections.
const PER_DICT: u64 = 32;

/// The open-file limits of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft limit to the hard limit; returns the limits in force afterwards.
pub fn raise() -> nix::Result<FdLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(FdLimit { soft, hard })
}

/// What the configuration may need at most: every client connection, each dict's backend
/// connections, and some slack.
pub fn needed(plan: &Plan) -> u64 {
    let clients = u64::try_from(plan.max_connections).unwrap_or(u64::MAX);
    let dicts = u64::try_from(plan.dicts.len().max(1)).unwrap_or(u64::MAX);
    clients
        .saturating_add(dicts.saturating_mul(PER_DICT))
        .saturating_add(SLACK)
}

/// A warning when `limit` is below what `plan` needs, naming the fix.
pub fn shortfall(limit: FdLimit, plan: &Plan) -> Option<String> {
    let needed = needed(plan);
    (limit.soft < needed).then(|| {
        format!(
            "open-file limit {} is below the {needed} that max_connections = {} and {} dict(s) may need: \
             clients past it wait in the backlog; raise it (systemd: LimitNOFILE={needed} or more; \
             shell: ulimit -n) or lower max_connections",
            limit.soft,
            plan.max_connections,
            plan.dicts.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_leaves_soft_at_hard() {
        let limit = raise().unwrap();
        assert_eq!(limit.soft, limit.hard);
    }
}
