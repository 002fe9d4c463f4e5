//! Words for errors that many modules report: what the operator reads
//! instead of Rust's own rendering. It knows nothing of pinpost.

/// An I/O error in plain words, without Rust's "(os error 2)" noise.
pub(crate) fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "no such file".into(),
        PermissionDenied => "permission denied".into(),
        IsADirectory => "it is a directory, not a file".into(),
        InvalidData => "it is not UTF-8 text".into(),
        _ => e.to_string(),
    }
}
