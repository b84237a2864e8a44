//! Finding one byte in the short fields and lines that make up most traffic.

/// Below this length a search reads eight bytes at a time itself; memchr's call and setup
/// cost more than that on the short fields and lines that make up most traffic.
const SHORT: usize = 64;

/// For each byte of `word` equal to `needle`, its high bit (exact: no false positives).
#[inline]
fn matches_in(word: u64, needle: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ (0x0101_0101_0101_0101 * u64::from(needle));
    !(((x & LOW7) + LOW7) | x | LOW7)
}

#[inline]
fn word_at(haystack: &[u8], at: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&haystack[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Where `needle` first is in `haystack`.
#[inline]
pub(crate) fn find_byte(needle: u8, haystack: &[u8]) -> Option<usize> {
    if haystack.len() >= SHORT {
        return memchr::memchr(needle, haystack);
    }
    let mut at = 0;
    while at + 8 <= haystack.len() {
        let m = matches_in(word_at(haystack, at), needle);
        if m != 0 {
            return Some(at + m.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    if at == haystack.len() {
        return None;
    }
    if haystack.len() >= 8 {
        // The last word again, overlapping bytes already seen (which hold no match).
        let last = haystack.len() - 8;
        let m = matches_in(word_at(haystack, last), needle);
        return (m != 0).then(|| last + m.trailing_zeros() as usize / 8);
    }
    haystack.iter().position(|&b| b == needle)
}

/// Where `needle` last is in `haystack`.
#[inline]
pub(crate) fn rfind_byte(needle: u8, haystack: &[u8]) -> Option<usize> {
    if haystack.len() >= SHORT {
        return memchr::memrchr(needle, haystack);
    }
    let mut end = haystack.len();
    while end >= 8 {
        let m = matches_in(word_at(haystack, end - 8), needle);
        if m != 0 {
            return Some(end - 8 + 7 - m.leading_zeros() as usize / 8);
        }
        end -= 8;
    }
    if end == 0 {
        return None;
    }
    if haystack.len() >= 8 {
        // The first word, overlapping bytes already seen (which hold no match).
        let m = matches_in(word_at(haystack, 0), needle);
        return (m != 0).then(|| 7 - m.leading_zeros() as usize / 8);
    }
    haystack.iter().rposition(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_searches_agree_with_memchr() {
        let hay: Vec<u8> = (0..70u8)
            .map(|i| [b'a', b'\t', 0x80, 0x01, 0xff][usize::from(i) % 5 * usize::from(i % 3 == 0)])
            .collect();
        for len in 0..hay.len() {
            for start in 0..len.min(9) {
                let h = &hay[start..len];
                for needle in [b'\t', 0x01, 0x80, 0xff, b'a', b'z', 0x00] {
                    assert_eq!(
                        find_byte(needle, h),
                        memchr::memchr(needle, h),
                        "{needle} in {h:?}"
                    );
                    assert_eq!(
                        rfind_byte(needle, h),
                        memchr::memrchr(needle, h),
                        "{needle} in {h:?}"
                    );
                }
            }
        }
    }
}
