//! GPT-2's byte alphabet (`bytes_to_unicode`): every byte as a printable character, so that a
//! byte-level BPE vocabulary is written as text. The artifact works on the raw bytes; the
//! vocabulary is mapped back here.

/// The character byte `b` is written as.
pub fn char_of(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return b as char;
    }
    // the others take 256, 257, ... in byte order
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("below U+0200")
}

/// The bytes a byte-level token stands for, or `None` when a character is not in the alphabet.
pub fn decode(token: &str) -> Option<Vec<u8>> {
    static INVERSE: std::sync::OnceLock<std::collections::HashMap<char, u8>> =
        std::sync::OnceLock::new();
    let inv = INVERSE.get_or_init(|| (0..=255u8).map(|b| (char_of(b), b)).collect());
    token.chars().map(|c| inv.get(&c).copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection_onto_256_chars() {
        let chars: std::collections::BTreeSet<char> = (0..=255u8).map(char_of).collect();
        assert_eq!(chars.len(), 256);
        assert_eq!(char_of(b' '), '\u{120}');
        assert_eq!(char_of(b'a'), 'a');
        assert_eq!(decode("\u{120}the"), Some(b" the".to_vec()));
        assert_eq!(decode("\u{4e00}"), None);
    }
}
