//! The drift file: the frequency estimate kept across restarts, in chrony's
//! format ("FREQ_PPM SKEW_PPM"). Written atomically (temp file in the same
//! directory, fsync, rename) so a crash never leaves half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::discipline::{DriftParseError, format_drift, parse_drift};
use super::units::Frequency;

#[derive(Debug, thiserror::Error)]
pub enum DriftFileError {
    #[error("reading drift file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {cause}")]
    Parse {
        path: PathBuf,
        cause: DriftParseError,
    },
    #[error("writing drift file {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Reads the frequency from `path`; Ok(None) when the file does not exist.
pub fn read(path: &Path) -> Result<Option<Frequency>, DriftFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_drift(&text)
            .map(Some)
            .map_err(|cause| DriftFileError::Parse {
                path: path.to_owned(),
                cause,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(DriftFileError::Read {
            path: path.to_owned(),
            cause,
        }),
    }
}

/// Writes `frequency` (and its standard error) to `path` atomically.
pub fn write(
    path: &Path,
    frequency: Frequency,
    frequency_sd: Frequency,
) -> Result<(), DriftFileError> {
    let err = |cause| DriftFileError::Write {
        path: path.to_owned(),
        cause,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".drift")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(format_drift(frequency, frequency_sd).as_bytes())
        .map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Best effort: make the rename durable.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("timectl.drift");
        assert_eq!(read(&path).expect("missing is fine"), None);
        write(
            &path,
            Frequency::from_fraction(23.5e-6),
            Frequency::from_ppm(0.2),
        )
        .expect("write");
        let f = read(&path).expect("read").expect("present");
        assert!((f.fraction() - 23.5e-6).abs() < 1e-12);
        std::fs::write(&path, "garbage\n").expect("overwrite");
        let e = read(&path).expect_err("garbage is an error");
        assert!(e.to_string().contains("timectl.drift"), "{e}");
    }
}
