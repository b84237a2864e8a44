//! From configuration to running dicts: which dicts exist, which backend serves each, and
//! where to listen. Also the embedded default used when the server is started bare.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dict_backend::sql::SqlOptions;
use dict_backend::Dict;
use dict_config::{DictEntry, DictSpec, DovecotConfig, ServerToml};
use tracing::{info, warn};

use crate::listener::ListenerSettings;
use crate::observe;
use crate::registry::Registry;

/// Everything the server needs to start, from whichever configuration was given.
#[derive(Debug)]
pub struct Plan {
    /// The dicts by name, with their URIs.
    pub dicts: Vec<DictEntry>,
    /// The sockets to serve.
    pub listeners: Vec<ListenerSettings>,
    /// Server limits and timeouts.
    pub server: dict_config::ServerSection,
    /// `[sql]`: SQLite settings for dicts whose own configuration does not set them.
    pub sql: dict_config::SqlSection,
    /// Create missing SQLite files (the embedded default only).
    pub create_sqlite: bool,
    /// The directory of the embedded default.
    pub data_dir: Option<PathBuf>,
    /// Log settings.
    pub log: dict_config::LogSection,
    /// Connections served at once.
    pub max_connections: usize,
    /// The Prometheus endpoint.
    pub metrics: dict_config::MetricsSection,
}

/// `--listen PATH` with its `--listen-mode/-user/-group`.
#[derive(Debug, Clone, Default)]
pub struct ListenOverride {
    /// Serve only this socket.
    pub path: Option<PathBuf>,
    /// Its mode, instead of the configured (or default) one.
    pub mode: Option<u32>,
    /// Its owner, instead of the configured one.
    pub user: Option<String>,
    /// Its group, instead of the configured one.
    pub group: Option<String>,
}

fn listener_from(path: PathBuf, toml: &dict_config::ListenerSection) -> ListenerSettings {
    ListenerSettings {
        path,
        mode: toml.mode,
        user: toml.user.clone(),
        group: toml.group.clone(),
        backlog: i32::try_from(toml.backlog).unwrap_or(i32::MAX),
    }
}

/// Builds the plan from the command line's files. `listen` replaces every socket path.
pub fn plan(
    dovecot_config: Option<&Path>,
    toml: Option<&Path>,
    listen: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<Plan> {
    let listen = ListenOverride {
        path: listen.map(Path::to_path_buf),
        ..ListenOverride::default()
    };
    plan_with(dovecot_config, toml, &listen, data_dir)
}

/// [`plan`] with the whole `--listen*` override: the socket `listen.path` replaces the
/// configured ones. When a configured listener has that path, its mode and owner are kept
/// (mail processes rely on them); otherwise the first configured listener's are used.
/// `--listen-mode/-user/-group` win over both.
pub fn plan_with(
    dovecot_config: Option<&Path>,
    toml: Option<&Path>,
    listen: &ListenOverride,
    data_dir: Option<&Path>,
) -> Result<Plan> {
    let toml_cfg = match toml {
        Some(path) => ServerToml::load(path)?,
        None => "".parse::<ServerToml>()?,
    };
    let mut dicts = toml_cfg.all_dicts()?;
    let mut listeners = Vec::new();
    if let Some(path) = dovecot_config {
        let dovecot = DovecotConfig::load(path)?;
        for entry in dovecot.dicts {
            dicts.retain(|d: &DictEntry| d.name != entry.name);
            dicts.push(entry);
        }
        for l in &dovecot.dict_listeners {
            listeners.push(ListenerSettings {
                path: l.path.clone(),
                mode: l.effective_mode(),
                user: l.user.clone(),
                group: l.effective_group().map(str::to_string),
                backlog: i32::try_from(toml_cfg.listener.backlog).unwrap_or(i32::MAX),
            });
        }
    }
    if let Some(path) = &toml_cfg.listener.path {
        listeners = vec![listener_from(path.clone(), &toml_cfg.listener)];
    }
    let mut create_sqlite = false;
    let mut default_data_dir = None;
    let configured =
        !dicts.is_empty() || dovecot_config.is_some() || toml_cfg.dovecot_config.is_some();
    if !configured {
        // Nothing names a dict: serve the embedded default, kept in the data directory.
        let dir = data_dir
            .map(Path::to_path_buf)
            .or_else(|| toml_cfg.data_dir.clone())
            .unwrap_or_else(default_data_dir_path);
        dicts = embedded_default(&dir)?;
        create_sqlite = true;
        if listeners.is_empty() && listen.path.is_none() {
            listeners.push(listener_from(default_socket_path(&dir), &toml_cfg.listener));
        }
        default_data_dir = Some(dir);
    } else if data_dir.is_some() {
        bail!("--data-dir is only used by the embedded default, and dicts are configured: remove --data-dir");
    } else if let (Some(dir), Some(origin)) = (&toml_cfg.data_dir, &toml_cfg.data_dir_origin) {
        bail!(
            "{origin}: data_dir = {} is only used by the embedded default (when no dict is \
             configured), and dicts are configured: remove data_dir",
            dir.display()
        );
    }
    if let Some(path) = &listen.path {
        let same_path = listeners.iter().position(|l| same_file(&l.path, path));
        let mut l = match same_path {
            Some(i) => listeners.swap_remove(i),
            None => listeners
                .into_iter()
                .next()
                .unwrap_or_else(|| listener_from(path.clone(), &toml_cfg.listener)),
        };
        l.path = path.clone();
        if let Some(mode) = listen.mode {
            l.mode = mode;
        }
        if let Some(user) = &listen.user {
            l.user = Some(user.clone());
        }
        if let Some(group) = &listen.group {
            l.group = Some(group.clone());
        }
        listeners = vec![l];
    }
    if listeners.is_empty() {
        listeners.push(listener_from(
            PathBuf::from(dict_config::DEFAULT_BASE_DIR).join("dict"),
            &toml_cfg.listener,
        ));
    }
    if dicts.is_empty() {
        bail!("no dicts configured: give a Dovecot config with a dict {{ }} block, or [dicts] in the TOML file");
    }
    Ok(Plan {
        dicts,
        listeners,
        max_connections: toml_cfg.listener.max_connections,
        server: toml_cfg.server,
        sql: toml_cfg.sql,
        create_sqlite,
        data_dir: default_data_dir,
        log: toml_cfg.log,
        metrics: toml_cfg.metrics,
    })
}

/// Paths naming the same socket: equal as written, or once `..`/symlinked directories are
/// resolved (the socket itself may not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| -> Option<PathBuf> {
        let dir = p.parent()?.canonicalize().ok()?;
        Some(dir.join(p.file_name()?))
    };
    a == b || canonical(a).is_some_and(|ca| Some(ca) == canonical(b))
}

/// Root keeps state where a system service would; anyone else next to where they are.
fn default_data_dir_path() -> PathBuf {
    if nix::unistd::Uid::effective().is_root() {
        PathBuf::from("/var/lib/dict-rs")
    } else {
        PathBuf::from("dict-rs-data")
    }
}

fn default_socket_path(data_dir: &Path) -> PathBuf {
    if nix::unistd::Uid::effective().is_root() {
        PathBuf::from(dict_config::DEFAULT_BASE_DIR).join("dict")
    } else {
        data_dir.join("dict.sock")
    }
}

/// The map file of the embedded default: quota_clone's two keys, plus any other key.
pub const EMBEDDED_MAP: &str = r#"# dict-rs embedded default: written once, yours to edit.
connect = @DB@

# quota_clone and the quota dict: one row per user and key (priv/quota/storage,
# priv/quota/messages), so `doveadm dict iter -u USER ... priv/quota/` lists them
map {
  pattern = priv/quota/$name
  table = dict_quota
  username_field = username
  value_field = value
  value_type = uint
  fields {
    name = $name
  }
}
# every other key
map {
  pattern = priv/$key
  table = dict_priv
  username_field = username
  value_field = value
  fields {
    dict_key = $key
  }
}
map {
  pattern = shared/$key
  table = dict_shared
  value_field = value
  fields {
    dict_key = $key
  }
}
"#;

/// Tables of the embedded default.
pub const EMBEDDED_SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS dict_quota (username TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (username, name));
CREATE TABLE IF NOT EXISTS dict_priv (username TEXT NOT NULL, dict_key TEXT NOT NULL, value TEXT, PRIMARY KEY (username, dict_key));
CREATE TABLE IF NOT EXISTS dict_shared (dict_key TEXT NOT NULL PRIMARY KEY, value TEXT);
";

/// Writes the embedded map file (unless present) and returns dict `quota` on it.
fn embedded_default(dir: &Path) -> Result<Vec<DictEntry>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("data directory {}", dir.display()))?;
    let map_path = dir.join("dict-sql.conf.ext");
    if !map_path.exists() {
        let db = dir.join("dict.db");
        std::fs::write(
            &map_path,
            EMBEDDED_MAP.replace("@DB@", &db.display().to_string()),
        )
        .with_context(|| format!("writing {}", map_path.display()))?;
    }
    let origin = dict_config::Origin::new(map_path.clone(), 1);
    Ok(vec![DictEntry::from_uri(
        "quota",
        format!("sqlite:{}", map_path.display()),
        origin,
    )])
}

/// Creates the embedded default's tables (idempotent).
async fn create_embedded_schema(db: &Path) -> Result<()> {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Executor};
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .connect()
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    conn.execute(EMBEDDED_SCHEMA)
        .await
        .with_context(|| format!("creating tables in {}", db.display()))?;
    Ok(())
}

/// Why a dict with a driver we don't serve is left out; its clients get Dovecot's
/// "Unconfigured dictionary" reply, as for a name that isn't configured at all.
pub fn unserved_reason(entry: &DictEntry) -> Option<String> {
    let driver = entry.unserved_driver()?;
    Some(format!(
        "not served: dict-rs has no '{driver}' driver (it serves sqlite, mysql, pgsql, redis \
         and file); clients naming this dict get \"Unconfigured dictionary\""
    ))
}

/// Opens every dict of the plan. A dict whose backend cannot be set up is a start-up error
/// naming it; a database that is merely down is not (it is connected to on first use). A
/// dict with a driver we don't serve (`ldap:`, `fs:`) is left out with a warning, unless
/// that leaves nothing to serve.
pub async fn open_dicts(plan: &Plan) -> Result<Registry> {
    let mut registry = Registry::new();
    let timeout = plan.server.request_timeout();
    for entry in &plan.dicts {
        if let Some(reason) = unserved_reason(entry) {
            warn!(
                "{}: dict '{}' ({}): {reason}",
                entry.origin,
                entry.name,
                entry.describe()
            );
            continue;
        }
        let dict = open_dict(entry, plan, timeout).await.with_context(|| {
            format!(
                "{}: dict '{}' ({})",
                entry.origin,
                entry.name,
                entry.describe()
            )
        })?;
        info!(dict = %entry.name, config = %entry.describe(), "dict ready");
        registry.insert(
            &entry.name,
            observe::wrap(&entry.name, dict, plan.server.warn_slow()),
        );
    }
    if registry.is_empty() {
        bail!("none of the configured dicts can be served (see the warnings above)");
    }
    Ok(registry)
}

/// Opens one dict of the plan (for the config check, which reports each dict on its own).
pub async fn open_one(plan: &Plan, entry: &DictEntry) -> Result<Arc<dyn Dict>> {
    let dict = open_dict(entry, plan, plan.server.request_timeout()).await?;
    Ok(observe::wrap(&entry.name, dict, plan.server.warn_slow()))
}

async fn open_dict(entry: &DictEntry, plan: &Plan, timeout: Duration) -> Result<Arc<dyn Dict>> {
    let create_sqlite = plan.create_sqlite;
    // A 2.3 URI (its map file read now) or a 2.4 dict_server { dict … { } }: the same.
    let mut spec = entry.spec()?;
    if let DictSpec::Sql { map_file, .. } = &mut spec {
        if let dict_config::SqlConnect::Sqlite { path, options } = &mut map_file.connect {
            *options = options.or(plan.sql.sqlite());
            if create_sqlite {
                create_embedded_schema(path).await?;
            }
        }
    }
    let options = SqlOptions {
        timeout,
        create_sqlite,
        ..SqlOptions::default()
    };
    // Databases are connected to on first use, so the server starts while one is down.
    Ok(dict_backend::open(spec, options).await?)
}

/// What to paste into `dovecot.conf` to use the embedded default over its socket, with a
/// word on who may connect; `None` unless the plan is the embedded default.
pub fn dovecot_hint(plan: &Plan) -> Option<String> {
    plan.data_dir.as_ref()?;
    let listener = plan.listeners.first()?;
    let socket = std::path::absolute(&listener.path).unwrap_or_else(|_| listener.path.clone());
    let who = |name: &Option<String>, default: &str| match name.as_deref() {
        None | Some("") => default.to_string(),
        Some(name) => name.to_string(),
    };
    Some(format!(
        "no dict configured: serving the embedded default. To use it, add to dovecot.conf:\n\
         mail_plugins = $mail_plugins quota quota_clone\n\
         plugin {{\n  quota_clone_dict = proxy:{socket}:quota\n}}\n\
         The socket {socket} has mode {mode:04o}, owner {user}, group {group}: Dovecot's mail \
         processes (imap, lmtp, doveadm) must be able to connect to it; set [listener] \
         mode/user/group or --listen-mode/--listen-user/--listen-group.",
        socket = socket.display(),
        mode = listener.mode,
        user = who(&listener.user, "the user dict-server runs as"),
        group = who(&listener.group, "that user's"),
    ))
}
