//! Files named by input, and the rules a name and its file must pass before a byte is read.
//!
//! Headers name signal files, manifests name Parquet files, and layouts find headers,
//! annotation, label and licence files by listing folders. Every such file is opened here:
//!
//! 1. its name is a **plain file name**: not empty, no `/` or `\`, not `.` or `..`, no NUL or
//!    other control character (so never absolute and never a path into another folder);
//! 2. after resolving symbolic links it lies **inside its folder** (or below it): a link is
//!    followed only when its target stays inside;
//! 3. it is a **regular file**: FIFOs, devices, sockets and folders are refused, before opening
//!    and again on the opened handle, so swapping the file between check and open does not
//!    help. On Unix it is opened with `O_NOFOLLOW | O_NONBLOCK`, so opening a FIFO never blocks;
//! 4. its **size** is known before reading (the opened handle's metadata): readers read only
//!    the bytes they need, and never more than [`MAX_FILE_BYTES`] ([`MAX_TEXT_BYTES`] for text).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::error::DatasetError;

/// The most bytes read from one file: a signal file whose needed bytes exceed it is refused,
/// and so is a signal file larger than this when its header gives no sample count (and any
/// annotation file larger than this).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// The largest text file read (WFDB header, label CSV, licence file, `manifest.json`).
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Why a file name from input, or the file it names, is refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The name is not a plain file name (the reason says which rule it breaks).
    #[error("is not a plain file name: {0}")]
    NotPlain(&'static str),
    /// After resolving symbolic links the file lies outside its folder.
    #[error("resolves to {}, outside its folder {}", target.display(), folder.display())]
    Outside {
        /// Where the name resolves to.
        target: PathBuf,
        /// The folder it must stay in.
        folder: PathBuf,
    },
    /// The file is not a regular file.
    #[error("is not a regular file but a {0}")]
    NotRegular(&'static str),
    /// A folder was expected and this is not one.
    #[error("is not a folder")]
    NotFolder,
    /// The file holds more bytes than may be read from it.
    #[error("holds {len} bytes, more than the {max} bytes that may be read")]
    TooLarge {
        /// Size of the file.
        len: u64,
        /// The limit that applies.
        max: u64,
    },
    /// The file could not be found, opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl PathError {
    /// The error as a [`DatasetError::Io`] about `path` (a refusal becomes an I/O error of
    /// kind `InvalidInput` whose message is this error's).
    pub fn at(self, path: impl Into<PathBuf>) -> DatasetError {
        match self {
            PathError::Io(e) => DatasetError::io(path, e),
            other => DatasetError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, other),
            ),
        }
    }

    /// A sentence about the file called `name`, described as `what` (e.g. `signal file`), in
    /// the folder described as `folder` (e.g. `the record's folder`), for error messages:
    /// `signal file name "../x" is not a plain file name in the record's folder: it is `..``.
    pub fn describe(&self, what: &str, name: impl AsRef<OsStr>, folder: &str) -> String {
        let name = name.as_ref().to_string_lossy();
        match self {
            PathError::NotPlain(why) => {
                format!("{what} name {name:?} is not a plain file name in {folder}: {why}")
            }
            PathError::Outside { target, .. } => format!(
                "{what} {name:?} resolves outside {folder} (to {})",
                target.display()
            ),
            PathError::NotRegular(kind) => {
                format!("{what} {name:?} is not a regular file (it is a {kind})")
            }
            PathError::NotFolder => format!("{what} {name:?} is not a folder"),
            PathError::TooLarge { len, max } => format!(
                "{what} {name:?} holds {len} bytes, more than the {max} bytes that may be read"
            ),
            PathError::Io(e) => format!("{what} {name:?}: {e}"),
        }
    }

    /// Whether this is an I/O error of kind `NotFound` (the file does not exist).
    pub fn is_not_found(&self) -> bool {
        matches!(self, PathError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Checks that `name` is a plain file name: not empty, no `/` or `\`, not `.` or `..`, no NUL
/// or other control character.
pub fn check_name(name: impl AsRef<OsStr>) -> Result<(), PathError> {
    let name = name.as_ref();
    let text = name.to_string_lossy();
    if text.is_empty() {
        return Err(PathError::NotPlain("it is empty"));
    }
    if text == "." || text == ".." {
        return Err(PathError::NotPlain("it is `.` or `..`"));
    }
    if text.contains('/') {
        return Err(PathError::NotPlain("it contains `/`"));
    }
    if text.contains('\\') {
        return Err(PathError::NotPlain("it contains `\\`"));
    }
    if text.chars().any(char::is_control) {
        return Err(PathError::NotPlain("it contains a control character"));
    }
    // Whatever the platform's path syntax (drive prefixes, ...): exactly one plain component.
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(c)), None) if c == name => Ok(()),
        _ => Err(PathError::NotPlain("it is not a single path component")),
    }
}

/// A folder whose files are opened under the rules of this module.
///
/// The folder itself is trusted as given (it may be reached through links); only what an
/// entry of it leads to is checked. An entry that is not a symbolic link is inside by
/// construction (a plain name is one entry of the folder), so only links are resolved.
#[derive(Debug, Clone)]
pub struct Folder {
    dir: PathBuf,
}

impl Folder {
    /// The folder at `dir` (`""` is the current folder); an error when it is not a folder.
    pub fn new(dir: &Path) -> Result<Folder, PathError> {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if !std::fs::metadata(dir)?.is_dir() {
            return Err(PathError::NotFolder);
        }
        Ok(Folder {
            dir: dir.to_path_buf(),
        })
    }

    /// The folder as given.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the plain name `name` leads, with that path's metadata (links not followed), if
    /// it lies inside this folder or below it: the entry itself, or for a symbolic link its
    /// resolved target.
    fn locate(&self, name: &OsStr) -> Result<(PathBuf, std::fs::Metadata), PathError> {
        check_name(name)?;
        let entry = self.dir.join(name);
        let meta = std::fs::symlink_metadata(&entry)?;
        if !meta.file_type().is_symlink() {
            return Ok((entry, meta));
        }
        let folder = self.dir.canonicalize()?;
        let target = entry.canonicalize()?;
        if target == folder || !target.starts_with(&folder) {
            return Err(PathError::Outside { target, folder });
        }
        let meta = std::fs::symlink_metadata(&target)?;
        Ok((target, meta))
    }

    /// Where the plain name `name` leads, if that lies inside this folder or below it (the
    /// file's type is not checked): the entry itself, or for a symbolic link its target.
    pub fn resolve(&self, name: impl AsRef<OsStr>) -> Result<PathBuf, PathError> {
        self.locate(name.as_ref()).map(|(p, _)| p)
    }

    /// Opens the regular file called `name` in this folder (see the module documentation).
    pub fn open(&self, name: impl AsRef<OsStr>) -> Result<CheckedFile, PathError> {
        let (target, meta) = self.locate(name.as_ref())?;
        // Never open what is not a regular file (opening a device can have effects).
        let kind = kind_of(&meta.file_type());
        if kind != "regular file" {
            return Err(PathError::NotRegular(kind));
        }
        // No link is followed now: one swapped in since the check makes the open fail.
        let file = open_no_follow(&target)?;
        // The opened handle is what will be read: check it, not the name.
        let meta = file.metadata()?;
        let kind = kind_of(&meta.file_type());
        if kind != "regular file" {
            return Err(PathError::NotRegular(kind));
        }
        Ok(CheckedFile {
            file,
            len: meta.len(),
            path: target,
        })
    }

    /// The sub-folder called `name`, if it is a folder inside this one (links followed only
    /// when they stay inside).
    pub fn sub_folder(&self, name: impl AsRef<OsStr>) -> Result<Folder, PathError> {
        let (target, meta) = self.locate(name.as_ref())?;
        if !meta.is_dir() {
            return Err(PathError::NotFolder);
        }
        Ok(Folder { dir: target })
    }
}

/// Opens the regular file `name` in `dir` under the rules of this module.
pub fn open_in(dir: &Path, name: impl AsRef<OsStr>) -> Result<CheckedFile, PathError> {
    Folder::new(dir)?.open(name)
}

/// Opens the file at `path` (found by listing its folder, or given by a caller): its folder is
/// `path`'s parent and its name `path`'s last component, checked under the rules of this module.
pub fn open_listed(path: &Path) -> Result<CheckedFile, PathError> {
    let name = path
        .file_name()
        .ok_or(PathError::NotPlain("the path has no file name"))?;
    open_in(path.parent().unwrap_or(Path::new("")), name)
}

/// Like [`open_listed`], but `Ok(None)` when nothing exists at `path`.
pub fn open_listed_if_present(path: &Path) -> Result<Option<CheckedFile>, PathError> {
    match open_listed(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A regular file opened under the rules of this module, with its size from the opened
/// handle's metadata.
#[derive(Debug)]
pub struct CheckedFile {
    file: File,
    len: u64,
    path: PathBuf,
}

impl CheckedFile {
    /// Size in bytes when opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was empty when opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The path that was opened (for a symbolic link, its resolved target).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    pub fn into_file(self) -> File {
        self.file
    }

    /// Reads exactly `len` bytes starting at byte `offset`. Refused when `len` exceeds
    /// [`MAX_FILE_BYTES`] or the range passes the file's size; an error when the file has
    /// shrunk since it was opened. The buffer is reserved fallibly: never an abort.
    pub fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, PathError> {
        if len > MAX_FILE_BYTES {
            return Err(PathError::TooLarge {
                len,
                max: MAX_FILE_BYTES,
            });
        }
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(PathError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "bytes {offset}..+{len} lie past the end of the file ({} bytes)",
                    self.len
                ),
            )));
        }
        let want = usize::try_from(len).map_err(|_| PathError::TooLarge {
            len,
            max: usize::MAX as u64,
        })?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(want)
            .map_err(|e| PathError::Io(std::io::Error::new(std::io::ErrorKind::OutOfMemory, e)))?;
        let mut f = &self.file;
        f.seek(SeekFrom::Start(offset))?;
        f.take(len).read_to_end(&mut buf)?;
        if buf.len() != want {
            return Err(PathError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the file shrank while it was read ({} of {len} bytes at {offset})",
                    buf.len()
                ),
            )));
        }
        Ok(buf)
    }

    /// Reads the whole file, refused when it holds more than `max` bytes.
    pub fn read_all(&self, max: u64) -> Result<Vec<u8>, PathError> {
        if self.len > max {
            return Err(PathError::TooLarge { len: self.len, max });
        }
        self.read_range(0, self.len)
    }
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_file() {
        return "regular file";
    }
    if t.is_dir() {
        return "folder";
    }
    if t.is_symlink() {
        return "symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "FIFO";
        }
        if t.is_char_device() {
            return "character device";
        }
        if t.is_block_device() {
            return "block device";
        }
        if t.is_socket() {
            return "socket";
        }
    }
    "special file"
}

#[cfg(unix)]
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names() {
        for ok in [
            "101.dat",
            "E00271.mat",
            "a b.dat",
            "é.dat",
            ".hidden",
            "x..y",
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let why = |n: &str| match check_name(n) {
            Err(PathError::NotPlain(w)) => w,
            other => panic!("{n}: {other:?}"),
        };
        assert_eq!(why(""), "it is empty");
        assert_eq!(why("."), "it is `.` or `..`");
        assert_eq!(why(".."), "it is `.` or `..`");
        assert_eq!(why("../x"), "it contains `/`");
        assert_eq!(why("/srv/outside/canary.bin"), "it contains `/`");
        assert_eq!(why("/dev/zero"), "it contains `/`");
        assert_eq!(why("a\\b"), "it contains `\\`");
        assert_eq!(why("a\0b"), "it contains a control character");
        assert_eq!(why("a\nb"), "it contains a control character");
        assert_eq!(why("a\u{85}b"), "it contains a control character");
    }

    #[test]
    fn describe_names_the_file_and_the_rule() {
        let e = check_name("/srv/outside/canary.bin").unwrap_err();
        assert_eq!(
            e.describe(
                "signal file",
                "/srv/outside/canary.bin",
                "the record's folder"
            ),
            "signal file name \"/srv/outside/canary.bin\" is not a plain file name in the \
             record's folder: it contains `/`"
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_inside_are_followed_links_out_and_special_files_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/in.dat"), b"inside").unwrap();
        std::fs::write(tmp.path().join("out.dat"), b"outside").unwrap();
        std::os::unix::fs::symlink("sub/in.dat", dir.join("in-link")).unwrap();
        std::os::unix::fs::symlink("../out.dat", dir.join("out-link")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero-link")).unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(dir.join("fifo"))
            .status()
            .unwrap();
        assert!(st.success());
        let f = Folder::new(&dir).unwrap();
        let opened = f.open("in-link").unwrap();
        assert_eq!(
            (opened.len(), opened.read_all(10).unwrap()),
            (6, b"inside".to_vec())
        );
        assert!(matches!(f.open("out-link"), Err(PathError::Outside { .. })));
        assert!(matches!(
            f.open("zero-link"),
            Err(PathError::Outside { .. })
        ));
        assert!(matches!(f.open("fifo"), Err(PathError::NotRegular("FIFO"))));
        assert!(matches!(
            f.open("sub"),
            Err(PathError::NotRegular("folder"))
        ));
        assert!(f.open("missing").unwrap_err().is_not_found());
        assert!(matches!(
            f.open("sub/in.dat"),
            Err(PathError::NotPlain("it contains `/`"))
        ));
        assert!(matches!(
            opened.read_all(5),
            Err(PathError::TooLarge { len: 6, max: 5 })
        ));
        assert_eq!(opened.read_range(2, 3).unwrap(), b"sid".to_vec());
        assert!(opened.read_range(4, 3).is_err());
        assert!(opened.read_range(u64::MAX, 2).is_err());
        assert!(f.sub_folder("sub").is_ok());
        assert!(f.sub_folder("in-link").is_err());
    }
}
