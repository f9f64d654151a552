//! Owner-only files: private keys and store files are created mode 0600 (whatever the umask),
//! and secret files that others may read are found so start-up can warn about them. Names no
//! other module; it must not decide what is secret (callers name the files) nor log.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The mode of every private file sipward creates: read and write for its owner only.
pub const PRIVATE_MODE: u32 = 0o600;
/// Permission bits that let someone other than the owner read (or write) a file.
const OTHERS_MASK: u32 = 0o077;

/// Opens `path` for writing, creating it 0600 when missing; an existing file is truncated
/// and narrowed to 0600 too (the mode given at creation does not apply to it).
pub fn create_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(PRIVATE_MODE))?;
    Ok(file)
}

/// Writes `bytes` to a 0600 file at `path` (see [`create_private`]).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = create_private(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates an empty 0600 file at `path` when none exists, so a database opened on it next
/// (SQLite gives its `-wal` and `-shm` files the database file's mode) is private. An existing
/// file is left as it is.
pub fn ensure_private(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)
    {
        Ok(file) => file.set_permissions(Permissions::from_mode(PRIVATE_MODE)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Like [`ensure_private`], and an existing file is narrowed to 0600 as well (its content is
/// kept): for a store file an operator may have copied in with a looser mode.
pub fn make_private(path: &Path) -> io::Result<()> {
    ensure_private(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(PRIVATE_MODE))
}

/// A file whose permission bits let others than its owner at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    pub path: PathBuf,
    /// The permission bits (`0o644`, …).
    pub mode: u32,
}

/// The files of `paths` that are group- or world-accessible (symlinks followed); files that
/// cannot be read for their metadata are skipped (loading them already reported that).
pub fn exposed<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Vec<Exposed> {
    paths
        .into_iter()
        .filter_map(|path| {
            let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
            (mode & OTHERS_MASK != 0).then(|| Exposed {
                path: path.clone(),
                mode,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_files_are_0600_new_or_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.key");
        write_private(&fresh, b"k").unwrap();
        assert_eq!(mode(&fresh), 0o600);

        let old = dir.path().join("old.key");
        std::fs::write(&old, "previous").unwrap();
        std::fs::set_permissions(&old, Permissions::from_mode(0o644)).unwrap();
        write_private(&old, b"new").unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read(&old).unwrap(), b"new");
    }

    #[test]
    fn ensure_private_creates_0600_and_keeps_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("devices.db");
        ensure_private(&db).unwrap();
        assert_eq!(mode(&db), 0o600);

        let kept = dir.path().join("kept.db");
        std::fs::write(&kept, "data").unwrap();
        std::fs::set_permissions(&kept, Permissions::from_mode(0o640)).unwrap();
        ensure_private(&kept).unwrap();
        assert_eq!(mode(&kept), 0o640);
        assert_eq!(std::fs::read(&kept).unwrap(), b"data");
    }

    #[test]
    fn exposed_lists_group_and_world_access_only() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = [0o600, 0o640, 0o604, 0o400]
            .iter()
            .map(|m| {
                let p = dir.path().join(format!("{m:o}"));
                std::fs::write(&p, "s").unwrap();
                std::fs::set_permissions(&p, Permissions::from_mode(*m)).unwrap();
                p
            })
            .collect();
        let missing = dir.path().join("missing");
        let found = exposed(paths.iter().chain([&missing]));
        let modes: Vec<u32> = found.iter().map(|e| e.mode).collect();
        assert_eq!(modes, vec![0o640, 0o604]);
    }
}
