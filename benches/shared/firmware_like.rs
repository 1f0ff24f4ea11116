//! The benchmarks' firmware-like input, one definition for all of them: a pseudo-random body
//! with runs of 0xFF that compress about 2:1 at zlib level 6, as real images do (repeated text
//! would flatter every compressor and no hash cares).

/// A firmware-like buffer: a pseudo-random body with runs that compress, as real code does.
pub fn firmware_like(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = state.to_le_bytes();
        if word[0] < 32 {
            out.extend(std::iter::repeat_n(0xff, usize::from(word[1]) % 64));
        } else {
            out.extend_from_slice(&word[..4]);
        }
    }
    out.truncate(len);
    out
}
