//! CRC-32 (IEEE, the one crc32fast computes) as arithmetic on the raw
//! register, so the spool can check many overlapping candidate frames in
//! one pass over a damaged file instead of one pass per candidate.
//!
//! # What it owns
//! Feeding bytes to a register, and jumping a register over a run of zero
//! bytes in constant time (a few table look-ups), which is what lets a
//! frame's checksum be computed from two running values taken at its body's
//! start and end: `feed(0, a ‖ b) = zeros(feed(0, a), |b|) ^ feed(0, b)`.
//!
//! # What it must not know
//! Frames, files or the spool's format.

use std::sync::OnceLock;

/// The reflected IEEE polynomial.
const POLY: u32 = 0xEDB8_8320;

/// The register after feeding `data` to a register holding `reg`.
/// crc32fast keeps the complement of the register as its state.
pub(super) fn feed(reg: u32, data: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(!reg);
    hasher.update(data);
    !hasher.finalize()
}

/// The register after feeding one byte (cheaper than [`feed`] for one).
pub(super) fn byte(reg: u32, b: u8) -> u32 {
    BYTE_TABLE[usize::from(reg as u8 ^ b)] ^ (reg >> 8)
}

/// One byte through the register, by the classic table (built at compile
/// time, so even an unoptimised test build looks it up).
const BYTE_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut reg = i as u32;
        let mut bit = 0;
        while bit < 8 {
            reg = if reg & 1 != 0 {
                (reg >> 1) ^ POLY
            } else {
                reg >> 1
            };
            bit += 1;
        }
        t[i] = reg;
        i += 1;
    }
    t
};

/// The CRC-32 of `data` as crc32fast computes it, from the register.
#[cfg(test)]
pub(super) fn finish(reg: u32) -> u32 {
    !reg
}

/// The register a CRC-32 starts from.
pub(super) const START: u32 = !0;

/// The register after feeding `n` zero bytes to a register holding `reg`.
pub(super) fn zeros(reg: u32, n: u32) -> u32 {
    let jumps = jumps();
    let (mut v, mut n, mut level) = (reg, n, 0);
    while n != 0 {
        let digit = (n & 15) as usize;
        if digit != 0 {
            v = jumps[level * 15 + digit - 1].apply(v);
        }
        n >>= 4;
        level += 1;
    }
    v
}

/// A linear map on 32-bit registers (over GF(2)), tabulated by byte so
/// applying it costs four look-ups.
struct Linear([[u32; 256]; 4]);

impl Linear {
    fn from_images(images: &[u32; 32]) -> Linear {
        let mut t = [[0u32; 256]; 4];
        for (k, table) in t.iter_mut().enumerate() {
            for b in 1..256usize {
                let low = b.trailing_zeros() as usize;
                table[b] = table[b & (b - 1)] ^ images[8 * k + low];
            }
        }
        Linear(t)
    }

    fn apply(&self, v: u32) -> u32 {
        let [a, b, c, d] = v.to_le_bytes();
        self.0[0][usize::from(a)]
            ^ self.0[1][usize::from(b)]
            ^ self.0[2][usize::from(c)]
            ^ self.0[3][usize::from(d)]
    }

    fn images(&self) -> [u32; 32] {
        std::array::from_fn(|i| self.apply(1 << i))
    }
}

fn zero_byte(reg: u32) -> u32 {
    byte(reg, 0)
}

/// `jumps()[level * 15 + d - 1]` jumps `d × 16^level` zero bytes: eight
/// levels cover every u32 length, 480 KiB built once, on first use.
fn jumps() -> &'static [Linear] {
    static JUMPS: OnceLock<Vec<Linear>> = OnceLock::new();
    JUMPS.get_or_init(|| {
        let mut maps = Vec::with_capacity(8 * 15);
        // Jumps 16^level zero bytes.
        let mut unit = Linear::from_images(&std::array::from_fn(|i| zero_byte(1 << i)));
        for _ in 0..8 {
            let mut images = unit.images();
            let mut step = Vec::with_capacity(15);
            for d in 1..=15 {
                if d > 1 {
                    images = images.map(|v| unit.apply(v));
                }
                step.push(Linear::from_images(&images));
            }
            // 16 × 16^level = 16^level after 15 × 16^level.
            let next = Linear::from_images(&images.map(|v| unit.apply(v)));
            maps.extend(step);
            unit = next;
        }
        maps
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeding_from_the_start_register_is_crc32() {
        for data in [&b""[..], b"a", b"123456789", &[0u8; 100], &[0xff; 33]] {
            assert_eq!(finish(feed(START, data)), crc32fast::hash(data));
        }
        assert_eq!(finish(feed(START, b"123456789")), 0xCBF4_3926);
        for b in [0u8, 1, 0x50, 0xff] {
            assert_eq!(byte(START, b), feed(START, &[b]));
        }
    }

    #[test]
    fn jumping_zeros_equals_feeding_them() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let lengths = [
            0u32,
            1,
            2,
            15,
            16,
            17,
            255,
            256,
            4097,
            65_536,
            1 << 20,
            16 << 20,
        ];
        let random: Vec<u32> = (0..20).map(|_| (next() % 300_000) as u32).collect();
        for n in lengths.into_iter().chain(random) {
            let reg = next() as u32;
            let fed = feed(reg, &vec![0; n as usize]);
            assert_eq!(zeros(reg, n), fed, "{n} zero bytes from {reg:#x}");
        }
    }

    #[test]
    fn a_checksum_of_a_slice_follows_from_running_values_at_its_ends() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let running = |x: usize| feed(0, &data[..x]);
        for (b, e) in [(0, 0), (3, 3), (10, 400), (1234, 4999), (0, 5000)] {
            let body = running(e) ^ zeros(running(b), (e - b) as u32);
            assert_eq!(body, feed(0, &data[b..e]));
            // And with a start register in front, as a frame's kind byte is.
            let whole = zeros(feed(START, &[7]), (e - b) as u32) ^ body;
            let mut framed = vec![7];
            framed.extend_from_slice(&data[b..e]);
            assert_eq!(finish(whole), crc32fast::hash(&framed));
        }
    }
}
