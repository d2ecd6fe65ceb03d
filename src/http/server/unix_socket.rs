//! A Unix-socket listener's file: made at bind (replacing only a stale
//! socket), opened to its group, and removed at shutdown only while it is
//! still the very socket this process bound.
//!
//! Whoever can write the socket's directory can swap the path for
//! something else between bind and shutdown (a symbolic link to a file of
//! keyhold's, another socket). So the file is held by its device and inode
//! from the moment it is bound: its mode is set through that inode (never
//! through a link), and at shutdown the path is removed only if it names
//! that same socket; a link there is never followed.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// The socket file this process bound. Dropping it removes the file, if
/// the path still names it.
#[derive(Debug)]
pub(super) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// The socket held open (Linux: an O_PATH descriptor) until it is
    /// removed: an inode in use is never freed, so a file put at the path
    /// after ours was unlinked cannot get our inode number back and pass
    /// for ours.
    _held: Option<rustix::fd::OwnedFd>,
}

impl SocketFile {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_socket() && (m.dev(), m.ino()) == (self.dev, self.ino) => {
                // unlink removes the entry itself, never what it points to.
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "could not remove the socket file at shutdown");
                }
            }
            Ok(_) => tracing::warn!(
                path = %self.path.display(),
                "the socket file was replaced while serving: what is there now is left alone"
            ),
            Err(_) => {}
        }
    }
}

/// Binds `path`. A stale socket left by a dead server is replaced; a live
/// one, or anything that is not a socket, is refused. The socket gets mode
/// 0660 (its group may connect).
pub(super) fn bind_unix(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only a socket is ever replaced: a regular file, a directory or
        // a symbolic link at PATH is someone else's, and a mistyped path
        // must not delete it.
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket ({}); keyhold replaces only a stale \
                     socket: pick another path, or move that file away",
                    path.display(),
                    kind_of(&meta.file_type())
                ),
            ));
        }
        // Only a socket nobody listens on (connection refused) is stale:
        // one this user may not connect to (permission denied) may be
        // another service's live socket, and is left alone.
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another server is listening on this socket",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "a socket is already at {} and keyhold cannot tell whether it is in use \
                         ({e}): remove it if no server uses it, or pick another path",
                        path.display()
                    ),
                ))
            }
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path).map_err(|e| explain(path, e))?;
    let file = own_socket(path)?;
    Ok((listener, file))
}

/// The socket just bound at `path`, held by its inode, mode 0660. On
/// Linux an O_PATH descriptor opens the socket file itself without
/// following a link (and without connecting); the mode is set through its
/// `/proc/self/fd` entry, which leads to that inode whatever the path
/// names by then. It must be a socket this user owns, or the path was
/// swapped right after bind.
#[cfg(target_os = "linux")]
fn own_socket(path: &Path) -> io::Result<SocketFile> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    let is_socket = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket;
    let mut file = checked(path, is_socket, st.st_uid, st.st_dev, st.st_ino)?;
    let by_fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    group_may_connect(path, Path::new(&by_fd))?;
    file._held = Some(fd);
    Ok(file)
}

/// Elsewhere: the path, checked without following a link just before.
#[cfg(not(target_os = "linux"))]
fn own_socket(path: &Path) -> io::Result<SocketFile> {
    let m = std::fs::symlink_metadata(path)?;
    let file = checked(path, m.file_type().is_socket(), m.uid(), m.dev(), m.ino())?;
    group_may_connect(path, path)?;
    Ok(file)
}

fn checked(path: &Path, is_socket: bool, uid: u32, dev: u64, ino: u64) -> io::Result<SocketFile> {
    if !is_socket || uid != rustix::process::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} was replaced right after keyhold bound it: someone else can write its \
                 directory; use a directory only keyhold's user can write (such as \
                 /run/keyhold, RuntimeDirectory=keyhold)",
                path.display()
            ),
        ));
    }
    Ok(SocketFile {
        path: path.to_path_buf(),
        dev,
        ino,
        _held: None,
    })
}

/// Mode 0660 on the socket `target` leads to (`path` for the message).
fn group_may_connect(path: &Path, target: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o660)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot open the socket {} to its group (mode 0660): {e}",
                path.display()
            ),
        )
    })
}

/// A bind error, with what to do about it.
fn explain(path: &Path, e: io::Error) -> io::Error {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let why = match e.kind() {
        io::ErrorKind::NotFound if !dir.exists() => format!(
            "the directory {dir} does not exist: create it for the user keyhold runs as \
             (install -d -m 0750 -o keyhold -g keyhold {dir}), or under systemd set \
             RuntimeDirectory=keyhold, which makes /run/keyhold at each start \
             (scripts/keyhold.service does)",
            dir = dir.display()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "permission denied: this user (uid {}) may not create files in {}: serve as \
             the user that owns it, or under systemd set RuntimeDirectory=keyhold and use a \
             path in /run/keyhold",
            rustix::process::geteuid().as_raw(),
            dir.display()
        ),
        _ => return e,
    };
    io::Error::new(e.kind(), why)
}

/// What a file is, for an error message.
fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}
