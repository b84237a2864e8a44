//! `proxy:` dict URIs as Dovecot 2.3 reads them:
//! `proxy:[idle_msecs=<n>:][warn_slow_msecs=<n>:][<path>]:<dict name>`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Error;

/// Dovecot's compiled-in `base_dir` on Debian (`doveconf -d`).
pub const DEFAULT_BASE_DIR: &str = "/run/dovecot";

/// The socket name used when the URI's path is empty (`proxy::quota`).
pub const DEFAULT_SOCKET_NAME: &str = "dict";

/// Default for `warn_slow_msecs` (Dovecot's `DICT_CLIENT_DEFAULT_WARN_SLOW_MSECS`).
pub const DEFAULT_WARN_SLOW: Duration = Duration::from_millis(5000);

/// A parsed `proxy:` URI, with its socket path resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUri {
    /// The UNIX socket to connect to.
    pub socket_path: PathBuf,
    /// The dict name sent in the hello; may itself contain `:`.
    pub dict_name: String,
    /// `idle_msecs`: how long an idle connection stays open. Zero (the default) closes it
    /// as soon as nothing is pending and no transaction is open.
    pub idle_timeout: Duration,
    /// `warn_slow_msecs`: operations taking at least this long are logged as slow.
    pub warn_slow: Duration,
}

impl ProxyUri {
    /// Parses a full dict URI, which must use the `proxy` driver. A relative or empty path
    /// is resolved under `base_dir`. Error texts are Dovecot's.
    pub fn parse(uri: &str, base_dir: impl AsRef<Path>) -> Result<ProxyUri, Error> {
        let Some((driver, rest)) = uri.split_once(':') else {
            return Err(Error::InvalidUri(format!(
                "Dictionary URI is missing ':': {uri}"
            )));
        };
        if driver != "proxy" {
            return Err(Error::InvalidUri(format!("Unknown dict module: {driver}")));
        }
        Self::parse_args(rest, base_dir)
    }

    /// Parses what follows `proxy:`.
    pub fn parse_args(args: &str, base_dir: impl AsRef<Path>) -> Result<ProxyUri, Error> {
        let invalid = || Error::InvalidUri(format!("Invalid URI: {args}"));
        let mut idle_msecs = 0u32;
        let mut warn_slow_msecs = DEFAULT_WARN_SLOW.as_millis() as u32;
        let mut rest = args;
        // The options may come in any order and repeat; each ends at the next ':'.
        loop {
            let (target, name, value_start) = if let Some(v) = rest.strip_prefix("idle_msecs=") {
                (&mut idle_msecs, "idle_msecs", v)
            } else if let Some(v) = rest.strip_prefix("warn_slow_msecs=") {
                (&mut warn_slow_msecs, "warn_slow_msecs", v)
            } else {
                break;
            };
            let (value, after) = value_start.split_once(':').ok_or_else(invalid)?;
            *target =
                parse_uint(value).ok_or_else(|| Error::InvalidUri(format!("Invalid {name}")))?;
            rest = after;
        }
        let (path, dict_name) = rest.split_once(':').ok_or_else(invalid)?;
        let base_dir = base_dir.as_ref();
        let socket_path = if path.is_empty() {
            base_dir.join(DEFAULT_SOCKET_NAME)
        } else if path.starts_with('/') {
            PathBuf::from(path)
        } else {
            base_dir.join(path)
        };
        Ok(ProxyUri {
            socket_path,
            dict_name: dict_name.to_string(),
            idle_timeout: Duration::from_millis(idle_msecs.into()),
            warn_slow: Duration::from_millis(warn_slow_msecs.into()),
        })
    }
}

/// `str_to_uint`: plain decimal digits, no sign, no spaces, fits in 32 bits.
fn parse_uint(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(uri: &str) -> Result<ProxyUri, String> {
        ProxyUri::parse(uri, "/run/dovecot").map_err(|e| e.to_string())
    }

    #[test]
    fn paths_resolve_like_dovecot() {
        assert_eq!(
            p("proxy::quota").unwrap().socket_path,
            Path::new("/run/dovecot/dict")
        );
        assert_eq!(
            p("proxy:dict-async:quota").unwrap().socket_path,
            Path::new("/run/dovecot/dict-async")
        );
        let abs = p("proxy:/var/run/x/dict.sock:quota").unwrap();
        assert_eq!(abs.socket_path, Path::new("/var/run/x/dict.sock"));
        assert_eq!(abs.dict_name, "quota");
        assert_eq!(abs.idle_timeout, Duration::ZERO);
        assert_eq!(abs.warn_slow, DEFAULT_WARN_SLOW);
    }

    #[test]
    fn name_may_contain_colons() {
        let u = p("proxy::a:b:c").unwrap();
        assert_eq!(u.dict_name, "a:b:c");
        assert_eq!(u.socket_path, Path::new("/run/dovecot/dict"));
    }

    #[test]
    fn options_in_any_order_and_repeated() {
        let u = p("proxy:warn_slow_msecs=10:idle_msecs=2000:idle_msecs=3000:sock:q").unwrap();
        assert_eq!(u.idle_timeout, Duration::from_millis(3000));
        assert_eq!(u.warn_slow, Duration::from_millis(10));
        assert_eq!(u.socket_path, Path::new("/run/dovecot/sock"));
        assert_eq!(u.dict_name, "q");
        let u = p("proxy:idle_msecs=5::q").unwrap();
        assert_eq!(u.socket_path, Path::new("/run/dovecot/dict"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            p("proxy").unwrap_err(),
            "Dictionary URI is missing ':': proxy"
        );
        assert_eq!(p("file:/tmp/x").unwrap_err(), "Unknown dict module: file");
        assert_eq!(p("proxy:quota").unwrap_err(), "Invalid URI: quota");
        assert_eq!(
            p("proxy:idle_msecs=x:s:q").unwrap_err(),
            "Invalid idle_msecs"
        );
        assert_eq!(
            p("proxy:idle_msecs=-1:s:q").unwrap_err(),
            "Invalid idle_msecs"
        );
        assert_eq!(
            p("proxy:warn_slow_msecs=5").unwrap_err(),
            "Invalid URI: warn_slow_msecs=5"
        );
    }
}
