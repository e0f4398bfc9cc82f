//! The bundle file a log index is stored in beside its Parquet file: the
//! index's files (tantivy's, and its blocks' index's under their own
//! directory) concatenated, each named, so one object-store read fetches
//! a whole index.
//!
//! ```text
//! "LPIDX001" | per file: name length (u32 LE) | name (UTF-8)
//!            | data length (u64 LE) | data
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

const BUNDLE_MAGIC: &[u8; 8] = b"LPIDX001";

/// An empty bundle, to [`push_file`] files onto.
pub(crate) fn new_bundle() -> Vec<u8> {
    BUNDLE_MAGIC.to_vec()
}

/// Appends the file `name` holding `data`.
pub(crate) fn push_file(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
}

/// The files of a bundle, named, borrowed from its bytes; an error for
/// anything that is not a whole bundle.
pub(crate) fn read_bundle(bytes: &[u8]) -> Result<Vec<(PathBuf, &[u8])>> {
    let corrupt = || StorageError::Internal("corrupt index bundle".into());
    let mut rest = bytes
        .strip_prefix(BUNDLE_MAGIC.as_slice())
        .ok_or_else(corrupt)?;
    let mut files = Vec::new();
    while !rest.is_empty() {
        let name_len = take(&mut rest, 4).ok_or_else(corrupt)?;
        let name_len = u32::from_le_bytes(name_len.try_into().map_err(|_| corrupt())?);
        let name = take(&mut rest, name_len as usize).ok_or_else(corrupt)?;
        let data_len = take(&mut rest, 8).ok_or_else(corrupt)?;
        let data_len = u64::from_le_bytes(data_len.try_into().map_err(|_| corrupt())?);
        let data_len = usize::try_from(data_len).map_err(|_| corrupt())?;
        let data = take(&mut rest, data_len).ok_or_else(corrupt)?;
        let name = std::str::from_utf8(name).map_err(|_| corrupt())?;
        files.push((Path::new(name).to_path_buf(), data));
    }
    Ok(files)
}

/// The next `len` bytes of `rest`, which moves past them; `None` when it
/// holds fewer.
fn take<'a>(rest: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if rest.len() < len {
        return None;
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_back_as_pushed_and_truncation_is_refused() {
        let mut bundle = new_bundle();
        push_file(&mut bundle, "meta.json", b"{}");
        push_file(&mut bundle, "blocks/a.idx", b"");
        let files = read_bundle(&bundle).unwrap();
        assert_eq!(
            files,
            vec![
                (PathBuf::from("meta.json"), b"{}".as_slice()),
                (PathBuf::from("blocks/a.idx"), b"".as_slice()),
            ]
        );
        for len in [0, 7, bundle.len() - 1] {
            assert!(read_bundle(&bundle[..len]).is_err(), "{len} bytes");
        }
        let mut huge = new_bundle();
        huge.extend_from_slice(&1u32.to_le_bytes());
        huge.push(b'x');
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(read_bundle(&huge).is_err(), "a length past the end");
    }
}
