//! `sentinels=`/`master_name=`: the address of the current master, asked of Redis Sentinel
//! through redis-rs' sentinel client each time a new connection is made.
//!
//! redis-rs tries the sentinels in turn, takes the master they name for `master_name` and
//! checks with `ROLE` that the server there really is a master (with the data nodes'
//! `user=`/`password=`). While no master is known (it died and the sentinels have not
//! promoted a replica yet) this fails at once, so requests fail fast instead of waiting.
//! With `tls=yes` the sentinels and the data nodes are all reached over TLS.

use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisConnectionInfo, RedisError, TlsMode,
};
use tokio::sync::Mutex;

use dict_config::RedisParams;

pub(crate) struct SentinelAddr {
    /// redis-rs keeps a connection to the sentinel that answered last.
    sentinel: Mutex<Sentinel>,
    master_name: String,
    /// How to log in to the master for the `ROLE` check.
    node: SentinelNodeConnectionInfo,
    sentinels: Vec<(String, u16)>,
}

impl SentinelAddr {
    /// `info`: `AUTH` (and `SELECT`) of the data nodes.
    pub(crate) fn new(
        params: &RedisParams,
        info: &RedisConnectionInfo,
    ) -> Result<SentinelAddr, String> {
        if params.sentinel_user.is_some() && params.sentinel_password.is_none() {
            return Err("redis: sentinel_user= needs sentinel_password= as well".into());
        }
        let master_name = params
            .master_name
            .clone()
            .ok_or("redis: sentinels= needs master_name=")?;
        let sentinels: Vec<ConnectionInfo> = params
            .sentinels
            .iter()
            .map(|(host, port)| ConnectionInfo {
                addr: if params.tls {
                    ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port: *port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(host.clone(), *port)
                },
                redis: RedisConnectionInfo {
                    db: 0,
                    username: params.sentinel_user.clone(),
                    password: params.sentinel_password.clone(),
                    protocol: ProtocolVersion::RESP2,
                },
            })
            .collect();
        let sentinel = Sentinel::build(sentinels).map_err(|e| format!("redis: sentinels=: {e}"))?;
        Ok(SentinelAddr {
            sentinel: Mutex::new(sentinel),
            master_name,
            node: SentinelNodeConnectionInfo {
                tls_mode: params.tls.then_some(TlsMode::Secure),
                redis_connection_info: Some(info.clone()),
            },
            sentinels: params.sentinels.clone(),
        })
    }

    /// For messages: `master <name> of sentinels <host:port>,…`.
    pub(crate) fn target(&self) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        format!(
            "master {} of sentinels {}",
            self.master_name,
            list.join(",")
        )
    }

    /// Host and port of the master the sentinels name now.
    pub(crate) async fn master(&self) -> Result<(String, u16), RedisError> {
        let client = self
            .sentinel
            .lock()
            .await
            .async_master_for(&self.master_name, Some(&self.node))
            .await?;
        match &client.get_connection_info().addr {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                Ok((host.clone(), *port))
            }
            other => Err(RedisError::from((
                redis::ErrorKind::ClientError,
                "sentinel named a master that is not on TCP",
                format!("{other:?}"),
            ))),
        }
    }
}
