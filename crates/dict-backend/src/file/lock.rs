//! Writing a `file:` dict without losing another writer's changes, with the locks Dovecot's
//! dict-file takes, so that our server and Dovecot's processes can share one file:
//!
//! * dotlock (default): `<path>.lock` is created exclusively; it *is* the new file, and is
//!   renamed over `<path>` when written. A lock left for a minute by a writer that died is
//!   stale and removed.
//! * fcntl / flock: the file itself is locked; the new contents go to `<path>.tmp`, which
//!   is renamed over `<path>` while the lock is held.
//!
//! Either way readers never see a half-written file. Waiting for a lock gives up after two
//! minutes, as Dovecot does.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use dict_config::FileLock;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// How long a writer waits for the lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(120);
/// A dotlock not touched for this long belongs to a writer that is gone.
const STALE_DOTLOCK: Duration = Duration::from_secs(60);
/// Pause between two tries to take a busy lock.
const RETRY: Duration = Duration::from_millis(10);

/// The lock held while one commit rewrites the file.
enum Held {
    /// The dotlock file, which is also the new file.
    Dotlock,
    /// The current file, locked with fcntl(F_SETLK).
    Fcntl(File),
    /// The current file, locked with flock(2).
    Flock(Flock<File>),
}

/// A commit's exclusive access to the file, and the new file being written. Dropped
/// without [`Writer::finish`], it removes the new file (releasing a dotlock).
pub(super) struct Writer {
    path: PathBuf,
    temp_path: PathBuf,
    temp: File,
    held: Held,
    finished: bool,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("dict-file: {what}({}) failed: {e}", path.display())
}

impl Writer {
    /// Waits for the lock `method` names on `path`, creating missing directories (0700,
    /// as Dovecot does).
    pub(super) fn begin(path: &Path, method: FileLock) -> Result<Writer, String> {
        match method {
            FileLock::Dotlock => Self::dotlock(path),
            FileLock::Fcntl | FileLock::Flock => Self::fd_lock(path, method),
        }
    }

    fn dotlock(path: &Path) -> Result<Writer, String> {
        let lock_path = with_suffix(path, ".lock");
        let deadline = Instant::now() + LOCK_TIMEOUT;
        loop {
            let created = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock_path);
            match created {
                Ok(temp) => {
                    return Ok(Writer {
                        path: path.to_path_buf(),
                        temp_path: lock_path,
                        temp,
                        held: Held::Dotlock,
                        finished: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => make_parent(path)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    remove_if_stale(&lock_path)?;
                    wait_or_give_up(deadline, &lock_path)?;
                }
                Err(e) => return Err(failed("creat", &lock_path, e)),
            }
        }
    }

    fn fd_lock(path: &Path, method: FileLock) -> Result<Writer, String> {
        let deadline = Instant::now() + LOCK_TIMEOUT;
        let held = loop {
            let file = open_or_create(path)?;
            let held = match method {
                FileLock::Fcntl => lock_fcntl(file, path, deadline).map(Held::Fcntl)?,
                _ => lock_flock(file, path, deadline).map(Held::Flock)?,
            };
            // Another writer may have replaced the file while we waited: lock the new one.
            let locked = match &held {
                Held::Fcntl(f) => f.metadata(),
                Held::Flock(f) => f.metadata(),
                Held::Dotlock => unreachable!("fd locks only"),
            }
            .map_err(|e| failed("fstat", path, e))?;
            match std::fs::metadata(path) {
                Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => break held,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed("stat", path, e)),
            }
        };
        let temp_path = with_suffix(path, ".tmp");
        let temp = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp_path)
            .map_err(|e| failed("creat", &temp_path, e))?;
        Ok(Writer {
            path: path.to_path_buf(),
            temp_path,
            temp,
            held,
            finished: false,
        })
    }

    /// The locked current file (fcntl/flock): the contents to start from must be read
    /// through it, since closing any other descriptor of it would drop an fcntl lock.
    pub(super) fn locked_file(&self) -> Option<&File> {
        match &self.held {
            Held::Dotlock => None,
            Held::Fcntl(f) => Some(f),
            Held::Flock(f) => Some(f),
        }
    }

    /// Writes `contents` as the new file, with the old file's permissions (or, for a new
    /// file, its directory's without the x bits), and puts it in place. Returns the new
    /// file's metadata.
    pub(super) fn finish(mut self, contents: &[u8]) -> Result<Metadata, String> {
        let model = match std::fs::metadata(&self.path) {
            Ok(meta) => Some((meta.mode(), Some(meta.uid()), meta.gid())),
            Err(_) => parent_dir(&self.path)
                .and_then(|dir| std::fs::metadata(dir).ok())
                .map(|dir| (dir.mode() & 0o666, None, dir.gid())),
        };
        if let Some((mode, uid, gid)) = model {
            copy_permissions(&self.temp, &self.temp_path, mode, uid, gid)?;
        }
        self.temp
            .write_all(contents)
            .and_then(|()| self.temp.sync_data())
            .map_err(|e| failed("write", &self.temp_path, e))?;
        std::fs::rename(&self.temp_path, &self.path).map_err(|e| {
            format!(
                "dict-file: rename({}, {}) failed: {e}",
                self.temp_path.display(),
                self.path.display()
            )
        })?;
        self.finished = true;
        self.temp
            .metadata()
            .map_err(|e| failed("fstat", &self.path, e))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

fn parent_dir(path: &Path) -> Option<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

fn make_parent(path: &Path) -> Result<(), String> {
    let Some(dir) = parent_dir(path) else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| failed("mkdir_parents", dir, e))
}

fn open_or_create(path: &Path) -> Result<File, String> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
    };
    match open() {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_parent(path)?;
            open().map_err(|e| failed("creat", path, e))
        }
        Err(e) => Err(failed("open", path, e)),
    }
}

/// Sets `mode`, and the group `gid` when group and others have different rights (so the
/// group matters), as Dovecot keeps a dict file's permissions across rewrites. Run as root
/// we also keep the owner `uid`: Dovecot's dict processes (user dovecot) must still be
/// able to read a 0600 file we rewrote.
fn copy_permissions(
    file: &File,
    path: &Path,
    mode: u32,
    uid: Option<u32>,
    gid: u32,
) -> Result<(), String> {
    let meta = file.metadata().map_err(|e| failed("fstat", path, e))?;
    let group_matters = (mode & 0o070) >> 3 != mode & 0o007;
    let uid = uid
        .filter(|&u| u != meta.uid() && nix::unistd::Uid::effective().is_root())
        .map(nix::unistd::Uid::from_raw);
    let gid = (meta.gid() != gid && (group_matters || uid.is_some()))
        .then(|| nix::unistd::Gid::from_raw(gid));
    if uid.is_some() || gid.is_some() {
        nix::unistd::fchown(file.as_raw_fd(), uid, gid).map_err(|e| failed("fchown", path, e))?;
    }
    if meta.mode() & 0o7777 != mode & 0o7777 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| failed("fchmod", path, e))?;
    }
    Ok(())
}

fn remove_if_stale(lock_path: &Path) -> Result<(), String> {
    let modified = match std::fs::metadata(lock_path).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed("stat", lock_path, e)),
    };
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default();
    if age >= STALE_DOTLOCK {
        tracing::warn!(path = %lock_path.display(), ?age, "removing a stale dict-file dotlock");
        match std::fs::remove_file(lock_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed("unlink", lock_path, e)),
        }
    }
    Ok(())
}

fn wait_or_give_up(deadline: Instant, path: &Path) -> Result<(), String> {
    if Instant::now() >= deadline {
        return Err(format!(
            "dict-file: timed out after {}s waiting for the lock on {}",
            LOCK_TIMEOUT.as_secs(),
            path.display()
        ));
    }
    std::thread::sleep(RETRY);
    Ok(())
}

fn lock_fcntl(file: File, path: &Path, deadline: Instant) -> Result<File, String> {
    let whole_file = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    loop {
        match nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLK(&whole_file)) {
            Ok(_) => return Ok(file),
            Err(Errno::EAGAIN | Errno::EACCES) => wait_or_give_up(deadline, path)?,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(failed("fcntl(F_SETLK)", path, e)),
        }
    }
}

fn lock_flock(mut file: File, path: &Path, deadline: Instant) -> Result<Flock<File>, String> {
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(locked),
            Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => {
                file = f;
                wait_or_give_up(deadline, path)?;
            }
            Err((_, e)) => return Err(failed("flock", path, e)),
        }
    }
}
