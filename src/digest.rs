//! A stream's size and SHA-256, read through once in 64 KiB pieces (a
//! package on the laptop or on a Pi). A leaf: it imports nothing of ours.

use std::io::{self, Read};

/// How many bytes `from` gave, and their SHA-256.
pub(crate) fn sha256(mut from: impl Read) -> io::Result<(u64, Vec<u8>)> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        size += n as u64;
        context.update(&buffer[..n]);
    }
    Ok((size, context.finish().as_ref().to_vec()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stream_longer_than_one_piece_hashes_as_a_whole() {
        let bytes = vec![7u8; 200_000];
        let (size, sha) = super::sha256(&bytes[..]).unwrap();
        assert_eq!(size, 200_000);
        assert_eq!(
            sha,
            ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()
        );
    }
}
