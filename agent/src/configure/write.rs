//! The only place `configure` writes to disk.
//!
//! Every file is replaced atomically (temp file in the same directory, fsync, rename), so Patroni or a WAL tool
//! never reads half a config, and every start re-renders everything (Spilo never overwrote an existing file, so a
//! container restart with changed env silently kept the old config). When running as root, what we create is
//! handed to `postgres`, which Patroni and the WAL tools run as.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Error;

/// World-readable: certificates, the schedule, pam configuration.
pub const PUBLIC: u32 = 0o644;
/// Passwords, keys and storage credentials (Spilo wrote them 0644).
pub const SECRET: u32 = 0o600;

#[derive(Debug, Clone)]
pub struct OutFile {
    /// Absolute path as seen inside the container (not under `--root`).
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
    /// Leave an existing file alone (the generated certificate and key).
    pub keep_existing: bool,
}

impl OutFile {
    pub fn new(path: &Path, contents: Vec<u8>, mode: u32) -> Self {
        OutFile {
            path: path.to_path_buf(),
            contents,
            mode,
            keep_existing: false,
        }
    }

    pub fn keep_existing(mut self) -> Self {
        self.keep_existing = true;
        self
    }
}

#[derive(Debug, Clone)]
pub struct OutDir {
    pub path: PathBuf,
    pub mode: u32,
    /// The directory belongs to us entirely (an envdir): its mode and owner are enforced even if it exists, and
    /// files we did not render this time are removed so a variable dropped from the env does not linger.
    pub exclusive: bool,
}

/// Owner for everything we create: `postgres` when we run as root and that user exists.
fn owner() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres").ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

pub fn rooted(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Follows symlinks at the destination (the Spilo image links e.g. `/etc/pam.d/postgresql` into `/run`), so the
/// rename replaces the target rather than the link. Absolute link targets are re-rooted.
fn resolve(root: &Path, mut path: PathBuf) -> PathBuf {
    for _ in 0..16 {
        let Ok(link) = fs::read_link(&path) else {
            break;
        };
        path = if link.is_absolute() {
            rooted(root, &link)
        } else {
            path.parent()
                .map_or_else(|| link.clone(), |p| p.join(&link))
        };
    }
    path
}

pub fn write_all(root: &Path, dirs: &[OutDir], files: &[OutFile]) -> Result<(), Error> {
    let owner = owner();
    let mut dirs: Vec<&OutDir> = dirs.iter().collect();
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    for dir in &dirs {
        ensure_dir(
            &resolve(root, rooted(root, &dir.path)),
            Some(dir.mode),
            dir.exclusive,
            owner,
        )?;
    }
    for file in files {
        write_file(root, file, owner)?;
    }
    for dir in dirs.iter().filter(|d| d.exclusive) {
        let keep: BTreeSet<&std::ffi::OsStr> = files
            .iter()
            .filter(|f| f.path.parent() == Some(&dir.path))
            .filter_map(|f| f.path.file_name())
            .collect();
        prune(&resolve(root, rooted(root, &dir.path)), &keep)?;
    }
    Ok(())
}

fn write_file(root: &Path, file: &OutFile, owner: Option<(u32, u32)>) -> Result<(), Error> {
    let target = resolve(root, rooted(root, &file.path));
    if file.keep_existing && fs::symlink_metadata(&target).is_ok() {
        return Ok(());
    }
    let parent = target
        .parent()
        .ok_or_else(|| Error::io(&target, std::io::ErrorKind::InvalidInput.into()))?;
    ensure_dir(parent, None, false, owner)?;
    let io = |e| Error::io(&target, e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".pgherd-")
        .tempfile_in(parent)
        .map_err(io)?;
    tmp.write_all(&file.contents).map_err(io)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid)).map_err(io)?;
    }
    tmp.as_file()
        .set_permissions(Permissions::from_mode(file.mode))
        .map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(&target).map_err(|e| io(e.error))?;
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(parent, e))
}

/// Creates `path` and missing ancestors (0755 unless `mode` is given for the last one). Mode and owner are only
/// applied to directories we create, or always when `enforce`.
fn ensure_dir(
    path: &Path,
    mode: Option<u32>,
    enforce: bool,
    owner: Option<(u32, u32)>,
) -> Result<(), Error> {
    let mut missing = Vec::new();
    let mut cursor = Some(path);
    while let Some(dir) = cursor {
        if dir.is_dir() {
            break;
        }
        missing.push(dir);
        cursor = dir.parent();
    }
    for dir in missing.iter().rev() {
        DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })
            .map_err(|e| Error::io(*dir, e))?;
        let mode = if *dir == path {
            mode.unwrap_or(0o755)
        } else {
            0o755
        };
        set_owner_and_mode(dir, mode, owner)?;
    }
    if enforce && missing.is_empty() {
        set_owner_and_mode(path, mode.unwrap_or(0o755), owner)?;
    }
    Ok(())
}

/// Owner first: chown may clear the setgid bit that `/run/postgresql` (2775) needs.
fn set_owner_and_mode(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), Error> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| Error::io(path, e))?;
    }
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|e| Error::io(path, e))
}

fn prune(dir: &Path, keep: &BTreeSet<&std::ffi::OsStr>) -> Result<(), Error> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let is_file = entry
            .file_type()
            .map_err(|e| Error::io(entry.path(), e))?
            .is_file();
        if is_file && !keep.contains(entry.file_name().as_os_str()) {
            fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn writes_atomically_with_modes_and_rewrites() {
        let root = tempfile::tempdir().unwrap();
        let dirs = [
            OutDir {
                path: "/run/etc/env".into(),
                mode: 0o700,
                exclusive: true,
            },
            OutDir {
                path: "/run/postgresql".into(),
                mode: 0o2775,
                exclusive: false,
            },
            OutDir {
                path: "/tmpdir".into(),
                mode: 0o1777,
                exclusive: false,
            },
        ];
        let files = [
            OutFile::new(Path::new("/run/etc/env/A"), b"1".to_vec(), SECRET),
            OutFile::new(Path::new("/run/etc/env/B"), b"2".to_vec(), SECRET),
            OutFile::new(Path::new("/run/x.yml"), b"x".to_vec(), SECRET),
        ];
        write_all(root.path(), &dirs, &files).unwrap();
        let r = |p: &str| root.path().join(p);
        assert_eq!(fs::read(r("run/etc/env/A")).unwrap(), b"1");
        assert_eq!(mode(&r("run/etc/env/A")), 0o600);
        assert_eq!(mode(&r("run/etc/env")), 0o700);
        assert_eq!(mode(&r("run/postgresql")), 0o2775);
        assert_eq!(mode(&r("tmpdir")), 0o1777);
        assert_eq!(mode(&r("run/etc")), 0o755);

        // Second run: B dropped from the env, A changed; no temp files left behind.
        let files = [OutFile::new(
            Path::new("/run/etc/env/A"),
            b"changed".to_vec(),
            SECRET,
        )];
        write_all(root.path(), &dirs, &files).unwrap();
        assert_eq!(fs::read(r("run/etc/env/A")).unwrap(), b"changed");
        assert!(!r("run/etc/env/B").exists());
        let names: Vec<_> = fs::read_dir(r("run/etc/env"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["A"]);
        assert!(fs::read_dir(r("run")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".pgherd")));
    }

    #[test]
    fn keep_existing_and_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let r = |p: &str| root.path().join(p);
        fs::create_dir_all(r("etc/pam.d")).unwrap();
        fs::create_dir_all(r("run")).unwrap();
        std::os::unix::fs::symlink("/run/pam.d-postgresql", r("etc/pam.d/postgresql")).unwrap();
        fs::write(r("run/key"), b"old").unwrap();
        let files = [
            OutFile::new(Path::new("/etc/pam.d/postgresql"), b"pam".to_vec(), PUBLIC),
            OutFile::new(Path::new("/run/key"), b"new".to_vec(), SECRET).keep_existing(),
        ];
        write_all(root.path(), &[], &files).unwrap();
        assert_eq!(fs::read(r("run/pam.d-postgresql")).unwrap(), b"pam");
        assert!(fs::symlink_metadata(r("etc/pam.d/postgresql"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(r("run/key")).unwrap(), b"old");
    }
}
