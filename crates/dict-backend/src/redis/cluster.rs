//! `cluster=`: a Redis Cluster through redis-rs' async cluster connection, which keeps the
//! slot map, routes each command to the master of its key's slot, follows MOVED and ASK
//! and refreshes the map when it moved.
//!
//! What redis-rs cannot do for a dict is done here: a commit's `MULTI … EXEC` must stay in
//! one slot, so a transaction whose keys span slots is refused before anything is sent
//! ([`cross_slot`]); iteration runs `SCAN` on every master in turn ([`masters`]).

use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::io::tcp::TcpSettings;
use redis::{RedisError, RedisResult, TlsMode, Value};

use dict_config::RedisParams;

/// Slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// The client for `cluster=` (connects nothing yet) and the seed list for messages.
/// `retries`: how often redis-rs may send a request again by itself, after a redirect, a
/// node that is down, or a connection that closed (when the request may have run).
pub(crate) fn client(
    params: &RedisParams,
    retries: u32,
) -> Result<(ClusterClient, String), String> {
    let seeds: Vec<String> = params
        .cluster
        .iter()
        .map(|(h, p)| format!("redis://{h}:{p}/"))
        .collect();
    let timeout = Duration::from_millis(u64::from(params.timeout_msecs.max(1)));
    let mut builder = ClusterClientBuilder::new(seeds)
        // MOVED/ASK are followed at once; these waits are for a node that is down, and our
        // own timeout_msecs bounds the whole request anyway
        .retries(retries)
        .min_retry_wait(10)
        .max_retry_wait(200)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .tcp_settings(TcpSettings::default().set_nodelay(true));
    if params.tls {
        // the system's CA certificates (SSL_CERT_FILE/SSL_CERT_DIR), host names verified
        builder = builder.tls(TlsMode::Secure);
    }
    if let Some(user) = &params.user {
        builder = builder.username(user.clone());
    }
    if let Some(password) = &params.password {
        builder = builder.password(password.clone());
    }
    let client = builder
        .build()
        .map_err(|e| format!("redis: cluster=: {e}"))?;
    let list: Vec<String> = params
        .cluster
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect();
    Ok((client, format!("cluster {}", list.join(","))))
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first
/// `{` and the next `}`, when not empty) or of the whole key.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let tail = &key[open + 1..];
            let close = tail.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &tail[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// An error for a transaction whose keys are in more than one slot; `None` when they
/// share one.
pub(crate) fn cross_slot<'k>(mut keys: impl Iterator<Item = &'k [u8]>) -> Option<String> {
    let first = keys.next()?;
    let other = keys.find(|k| slot(k) != slot(first))?;
    Some(format!(
        "redis: a cluster transaction must keep to one slot, but {} (slot {}) and {} (slot {}) \
         differ; user_hash_tag=yes keeps each user's priv/ keys in one slot",
        String::from_utf8_lossy(first),
        slot(first),
        String::from_utf8_lossy(other),
        slot(other)
    ))
}

/// Host and port of every master, from `CLUSTER SHARDS`' older sibling `CLUSTER SLOTS`
/// (Redis 3+): each slot range names its master first.
pub(crate) async fn masters(conn: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let slots: Value = conn
        .route_command(
            &redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let ranges: Vec<Vec<Value>> = redis::from_owned_redis_value(slots)?;
    let mut found = Vec::new();
    for range in ranges {
        // [start, end, [host, port, id, …], replicas…]
        let Some(master) = range.into_iter().nth(2) else {
            continue;
        };
        let node: Vec<Value> = redis::from_owned_redis_value(master)?;
        let mut node = node.into_iter();
        let (Some(host), Some(port)) = (node.next(), node.next()) else {
            continue;
        };
        let host: String = redis::from_owned_redis_value(host)?;
        let port: u16 = redis::from_owned_redis_value(port)?;
        if !found.contains(&(host.clone(), port)) {
            found.push((host, port));
        }
    }
    if found.is_empty() {
        return Err(RedisError::from((
            redis::ErrorKind::ClusterDown,
            "CLUSTER SLOTS named no master",
        )));
    }
    Ok(found)
}

/// One `SCAN` step on the master at `host:port`.
pub(crate) async fn scan_node(
    conn: &mut ClusterConnection,
    (host, port): &(String, u16),
    cursor: u64,
    pattern: &[u8],
    count: usize,
) -> RedisResult<(u64, Vec<Vec<u8>>)> {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count);
    let reply = conn
        .route_command(
            &cmd,
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            }),
        )
        .await?;
    redis::from_owned_redis_value(reply)
}

/// `wait` (a `WAIT`) on the master of `key`'s slot, where that key's `EXEC` ran.
pub(crate) async fn wait_on_master_of(
    conn: &mut ClusterConnection,
    wait: &redis::Cmd,
    key: &[u8],
) -> RedisResult<i64> {
    let route = Route::new(slot(key), SlotAddr::Master);
    let reply = conn
        .route_command(
            wait,
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
        )
        .await?;
    redis::from_owned_redis_value(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_as_redis_computes_them() {
        // values from `CLUSTER KEYSLOT`
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(
            slot(b"foo{}{bar}"),
            slot(b"bar"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"p/{u}/quota/storage"), slot(b"u"));
    }

    #[test]
    fn cross_slot_names_both_keys() {
        assert_eq!(
            cross_slot([b"{u}/a".as_slice(), b"{u}/b"].into_iter()),
            None
        );
        assert_eq!(cross_slot(std::iter::empty()), None);
        let e = cross_slot([b"foo".as_slice(), b"bar"].into_iter()).unwrap();
        assert!(e.contains("foo (slot 12182) and bar (slot 5061)"), "{e}");
    }
}
