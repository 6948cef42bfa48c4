//! Applies one layer (a tar: plain, gzip'd or zstd'd) onto a root directory the way containerd's
//! `archive.Apply` does: `.wh.NAME` removes NAME, `.wh..wh..opq` hides what lower layers had
//! in its directory, hard links, symlinks, modes and ownership kept.
//!
//! Every write stays beneath the root: a path is cleaned lexically (`..` never climbs above
//! it), its parent directory is opened with openat2 `RESOLVE_IN_ROOT` (so a symlink from an
//! earlier entry is resolved as if the root were `/`, never outside it), and the last
//! component is only ever touched through that directory's fd with no-follow calls
//! (`O_NOFOLLOW | O_EXCL`, `unlinkat`, `symlinkat`, `linkat` without `AT_SYMLINK_FOLLOW`).
//! No crate does whiteout-aware, root-confined tar application, hence this module.
//! Not kept: timestamps, extended attributes, device nodes (skipped).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{Mode, SFlag, fchmod, fstatat, mkdirat, mknodat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};

use crate::{Error, Result};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// A zstd stream of any number of frames, skippable frames skipped, as `zstd -d` reads it
/// (zstd:chunked layers carry skippable frames). `ruzstd` decodes one frame at a time; this
/// strings its frames together.
struct Zstd<R: BufRead> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> Zstd<R> {
    fn new(source: R) -> Self {
        Self {
            source,
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }

    /// Reads the next frame's header; false at the end of the stream.
    fn next_frame(&mut self) -> std::io::Result<bool> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let want = u64::from(length);
                    let mut skip = (&mut self.source).take(want);
                    if std::io::copy(&mut skip, &mut std::io::sink())? < want {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
    }
}

impl<R: BufRead> Read for Zstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            let decoder = &mut self.decoder;
            while decoder.can_collect() < buf.len() && !decoder.is_finished() {
                let more = BlockDecodingStrategy::UptoBytes(buf.len() - decoder.can_collect());
                decoder
                    .decode_blocks(&mut self.source, more)
                    .map_err(std::io::Error::other)?;
            }
            let n = decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if decoder.is_finished() {
                self.in_frame = false;
            }
        }
    }
}

/// Applies the layer read from `blob` onto `root`.
pub fn apply_layer(root: &Path, blob: impl Read) -> Result<()> {
    let mut reader = BufReader::new(blob);
    let head = reader.fill_buf().map_err(Error::Archive)?.to_vec();
    let stream: Box<dyn Read> = match head.as_slice() {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] | [0x50..=0x5f, 0x2a, 0x4d, 0x18, ..] => {
            Box::new(Zstd::new(reader))
        }
        _ => Box::new(reader),
    };
    let root_fd = openat(
        AT_FDCWD,
        root,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys(root))?;
    let mut layer = Layer {
        root: root_fd,
        written: HashSet::new(),
    };
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().map_err(Error::Archive)? {
        let entry = entry.map_err(Error::Archive)?;
        layer.apply(entry)?;
    }
    Ok(())
}

/// A path inside the root, cleaned lexically: `..` at the top stays at the top.
pub fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn sys<P: AsRef<Path>>(path: P) -> impl FnOnce(Errno) -> Error + use<P> {
    let path = path.as_ref().display().to_string();
    move |source| Error::Sys { path, source }
}

struct Layer {
    root: OwnedFd,
    /// Paths this layer wrote, which its own opaque markers must not hide.
    written: HashSet<PathBuf>,
}

impl Layer {
    fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let path = clean(Path::new(OsStr::from_bytes(&raw)));
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(()); // the root itself
        };
        let (parent, name) = (parent.to_owned(), name.to_owned());
        let header = entry.header().clone();
        let kind = header.entry_type();
        let dir = self.ensure_dir(&parent)?;
        let name_str = name.to_string_lossy();
        if name_str == OPAQUE {
            return self.clear_lower(&dir, &parent);
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT) {
            return remove_at(&dir, OsStr::new(hidden), &parent);
        }
        let mode = Mode::from_bits_truncate(header.mode().unwrap_or(0o644) & 0o7777);
        let uid = header
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or(0);
        let gid = header
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .unwrap_or(0);
        let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let err = sys(path.clone());
        // What lies at `name` goes, unless a directory meets a directory.
        let existing = fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok();
        let existing_dir = existing.is_some_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
        });
        if existing.is_some() && !(kind == tar::EntryType::Directory && existing_dir) {
            remove_at(&dir, &name, &path)?;
        }
        match kind {
            tar::EntryType::Directory => {
                if !existing_dir {
                    mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o700))
                        .map_err(err)?;
                }
                let fd = openat(
                    &dir,
                    name.as_os_str(),
                    OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(sys(&path))?;
                fchown(&fd, owner.0, owner.1).map_err(sys(&path))?;
                fchmod(&fd, mode).map_err(sys(&path))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = openat(
                    &dir,
                    name.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(err)?;
                let mut file = File::from(fd);
                std::io::copy(&mut entry, &mut file).map_err(Error::Archive)?;
                // chown first: it clears set-id bits.
                fchown(file.as_fd(), owner.0, owner.1).map_err(sys(&path))?;
                fchmod(file.as_fd(), mode).map_err(sys(&path))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                symlinkat(OsStr::from_bytes(&target), &dir, name.as_os_str()).map_err(err)?;
                fchownat(
                    &dir,
                    name.as_os_str(),
                    owner.0,
                    owner.1,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(sys(&path))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| clean(Path::new(OsStr::from_bytes(&t))))
                    .unwrap_or_default();
                let (Some(tp), Some(tn)) = (target.parent(), target.file_name()) else {
                    return Ok(());
                };
                let tdir = self.open_dir(tp)?.ok_or_else(|| Error::Sys {
                    path: target.display().to_string(),
                    source: Errno::ENOENT,
                })?;
                // Without AT_SYMLINK_FOLLOW: a link to a symlink is a link to the symlink.
                linkat(&tdir, tn, &dir, name.as_os_str(), AtFlags::empty()).map_err(err)?;
            }
            tar::EntryType::Fifo => {
                mknodat(&dir, name.as_os_str(), SFlag::S_IFIFO, mode, 0).map_err(err)?;
            }
            _ => return Ok(()), // devices and anything else: skipped
        }
        self.written.insert(path);
        Ok(())
    }

    /// Opens `rel` (a directory) resolved inside the root; `None` if it does not exist.
    fn open_dir(&self, rel: &Path) -> Result<Option<OwnedFd>> {
        let target = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(&self.root, target, how) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(Error::Sys {
                path: rel.display().to_string(),
                source: e,
            }),
        }
    }

    /// Opens `rel`, making missing directories (0755, root-owned) on the way.
    fn ensure_dir(&self, rel: &Path) -> Result<OwnedFd> {
        if let Some(fd) = self.open_dir(rel)? {
            return Ok(fd);
        }
        let mut at = PathBuf::new();
        let mut fd = self.open_dir(&at)?.ok_or_else(|| Error::Sys {
            path: "/".into(),
            source: Errno::ENOENT,
        })?;
        for c in rel.components() {
            at.push(c);
            match self.open_dir(&at)? {
                Some(next) => fd = next,
                None => {
                    // A non-directory in the way is replaced, as a later entry would do.
                    let _ = unlinkat(&fd, c.as_os_str(), UnlinkatFlags::NoRemoveDir);
                    match mkdirat(&fd, c.as_os_str(), Mode::from_bits_truncate(0o700)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(sys(&at)(e)),
                    }
                    let opened = openat(
                        &fd,
                        c.as_os_str(),
                        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(sys(&at))?;
                    fchmod(&opened, Mode::from_bits_truncate(0o755)).map_err(sys(&at))?;
                    fd = self.open_dir(&at)?.ok_or_else(|| sys(&at)(Errno::ENOENT))?;
                }
            }
        }
        Ok(fd)
    }

    /// An opaque directory: everything in it that this layer did not write goes.
    fn clear_lower(&self, dir: &OwnedFd, rel: &Path) -> Result<()> {
        let listing = proc_path(dir);
        let entries = std::fs::read_dir(&listing).map_err(crate::error::io(rel))?;
        for e in entries.flatten() {
            let name = e.file_name();
            let child = rel.join(&name);
            let keep_below = self
                .written
                .iter()
                .any(|w| w.starts_with(&child) && *w != child);
            if self.written.contains(&child) && !keep_below {
                continue;
            }
            if keep_below {
                if let Some(sub) = self.open_dir(&child)? {
                    self.clear_lower(&sub, &child)?;
                }
                continue;
            }
            remove_at(dir, &name, &child)?;
        }
        Ok(())
    }
}

/// `/proc/self/fd/N`: a path for std's symlink-safe directory functions.
fn proc_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Removes `name` in `dir` (a directory with all it holds); never follows a symlink.
fn remove_at(dir: &OwnedFd, name: &OsStr, rel: &Path) -> Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {
            // std's remove_dir_all opens each level with O_NOFOLLOW (no TOCTOU escape).
            let p = proc_path(dir).join(name);
            std::fs::remove_dir_all(&p).map_err(crate::error::io(rel))
        }
        Err(e) => Err(sys(rel)(e)),
    }
}

#[cfg(test)]
mod tests;
