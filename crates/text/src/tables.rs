//! The data the artifact's tokenizer reads: character classes as ranges, the character maps
//! (canonical decomposition, lowercase), the vocabulary as a hash table, BPE merges. Generated
//! from the Unicode crates the `tokenizers` crate uses, and only what the spec needs.

use std::sync::OnceLock;

use unicode_categories::UnicodeCategories;

use crate::spec::{Model, PreTokenizer, TextSpec};
use crate::spm::SpmStep;

/// The class bits of a character. Each is a property some stage of the pipeline tests; the C
/// side gets these names and values from [`CLASS_BITS`].
pub mod class {
    /// Dropped by `clean_text`: U+0000, U+FFFD and the "other" categories (Cc, Cf, Cn, Co,
    /// Cs) but tab, newline and carriage return.
    pub const DROP: u32 = 1;
    /// Becomes a space under `clean_text` (tab, newline, carriage return, White_Space).
    pub const CLEAN_SPACE: u32 = 2;
    /// A CJK ideograph, surrounded by spaces under `handle_chinese_chars`.
    pub const CJK: u32 = 4;
    /// A nonspacing mark (Mn), dropped after the decomposition by `strip_accents`.
    pub const MN: u32 = 8;
    /// Whitespace (Rust's `char::is_whitespace`), where BertPreTokenizer splits and added
    /// tokens' lstrip/rstrip reach.
    pub const SPACE: u32 = 16;
    /// ASCII or Unicode punctuation (Pc, Pd, Pe, Pf, Pi, Po, Ps): a token of its own.
    pub const PUNCT: u32 = 32;
    /// The byte-level regex's `\s`, `\p{L}` and `\p{N}`.
    pub const RE_SPACE: u32 = 64;
    pub const RE_LETTER: u32 = 128;
    pub const RE_NUMBER: u32 = 256;
    /// The canonical combining class is in bits 16..24.
    pub const CCC_SHIFT: u32 = 16;
    /// Grapheme cluster breaking (UAX #29 as `unicode-segmentation` implements it), for the
    /// Precompiled normalizer: joins what precedes it (Extend, ZWJ, SpacingMark: GB9, GB9a);
    pub const G_JOIN: u32 = 1 << 9;
    /// breaks on both sides (Control, CR, LF: GB4, GB5);
    pub const G_CONTROL: u32 = 1 << 10;
    /// joins what follows (Prepend: GB9b);
    pub const G_PREPEND: u32 = 1 << 11;
    /// Hangul, on the left of a pair: L (GB6), V or LV (GB7), LVT or T (GB8); on the right:
    /// what follows an L, a V, a T;
    pub const G_L: u32 = 1 << 12;
    pub const G_VLV: u32 = 1 << 13;
    pub const G_LVTT: u32 = 1 << 14;
    pub const G_AFTER_L: u32 = 1 << 15;
    pub const G_AFTER_V: u32 = 1 << 24;
    pub const G_AFTER_T: u32 = 1 << 25;
    /// Regional_Indicator (GB12, GB13), Extended_Pictographic (GB11).
    pub const G_RI: u32 = 1 << 26;
    pub const G_EXTPICT: u32 = 1 << 27;
    /// All of the grapheme bits.
    pub const GRAPHEME: u32 = G_JOIN
        | G_CONTROL
        | G_PREPEND
        | G_L
        | G_VLV
        | G_LVTT
        | G_AFTER_L
        | G_AFTER_V
        | G_AFTER_T
        | G_RI
        | G_EXTPICT;
}

/// The class bits by name, for the C side.
pub const CLASS_BITS: &[(&str, u32)] = &[
    ("DROP", class::DROP),
    ("CLEAN_SPACE", class::CLEAN_SPACE),
    ("CJK", class::CJK),
    ("MN", class::MN),
    ("SPACE", class::SPACE),
    ("PUNCT", class::PUNCT),
    ("RE_SPACE", class::RE_SPACE),
    ("RE_LETTER", class::RE_LETTER),
    ("RE_NUMBER", class::RE_NUMBER),
    ("G_JOIN", class::G_JOIN),
    ("G_CONTROL", class::G_CONTROL),
    ("G_PREPEND", class::G_PREPEND),
    ("G_L", class::G_L),
    ("G_VLV", class::G_VLV),
    ("G_LVTT", class::G_LVTT),
    ("G_AFTER_L", class::G_AFTER_L),
    ("G_AFTER_V", class::G_AFTER_V),
    ("G_AFTER_T", class::G_AFTER_T),
    ("G_RI", class::G_RI),
    ("G_EXTPICT", class::G_EXTPICT),
];

/// Code points mapped to sequences: sorted `cps`, `cps[i]` maps to `pool[off[i]..off[i+1]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CharMap {
    pub cps: Vec<u32>,
    pub off: Vec<u32>,
    pub pool: Vec<u32>,
}

/// Byte strings in an open-addressing hash table (FNV-1a, linear probing): string `i` is
/// `pool[off[i]..off[i+1]]`; `slots` (a power of two long) hold `i + 1`, 0 for empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StringTable {
    pub pool: Vec<u8>,
    pub off: Vec<u32>,
    pub slots: Vec<u32>,
    /// The longest string, in bytes.
    pub max_len: usize,
}

/// BPE merges in a hash table keyed by the pair: slot `s` holds `left[s], right[s]` (both
/// `u32::MAX` when empty), the merge's rank and the merged token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeTable {
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    pub rank: Vec<u32>,
    pub merged: Vec<u32>,
}

/// Everything the C tokenizer reads.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    /// The class bits in use (others are zero in `class_values`).
    pub class_mask: u32,
    /// Ranges: `class_values[i]` holds from `class_starts[i]` to the next start.
    pub class_starts: Vec<u32>,
    pub class_values: Vec<u32>,
    pub decompose: Option<CharMap>,
    pub lowercase: Option<CharMap>,
    /// WordPiece: the vocabulary by id (a token not in the table is `off[i] == off[i+1]`
    /// and never matched). BPE: the raw bytes of each token.
    pub vocab: StringTable,
    pub merges: Option<MergeTable>,
    /// BPE: the token of each single byte (`u32::MAX`: none).
    pub byte_tokens: Option<Vec<u32>>,
    /// The added tokens' contents, in the order of `TextSpec::added`.
    pub added: StringTable,
}

/// FNV-1a, 32 bits; the C side computes the same (`fnv1a` in the template).
pub fn fnv1a(h: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ b as u32).wrapping_mul(16_777_619))
}

pub const FNV_SEED: u32 = 2_166_136_261;

fn regex_class(pattern: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .expect("a Unicode class");
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        _ => unreachable!("{pattern} is a Unicode class"),
    }
}

fn in_ranges(r: &[(u32, u32)], cp: u32) -> bool {
    r.binary_search_by(|&(a, b)| {
        if b < cp {
            std::cmp::Ordering::Less
        } else if a > cp {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    })
    .is_ok()
}

/// The CJK blocks BERT's `_is_chinese_char` names (the same in `tokenizers`).
const CJK: [(u32, u32); 8] = [
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
];

/// Every class bit of every code point, computed once per process (1.1 million characters).
fn all_classes() -> &'static Vec<u32> {
    static ALL: OnceLock<Vec<u32>> = OnceLock::new();
    ALL.get_or_init(|| {
        let (s, l, n) = (
            regex_class(r"\s"),
            regex_class(r"\p{L}"),
            regex_class(r"\p{N}"),
        );
        (0..=0x10FFFFu32)
            .map(|cp| {
                let Some(c) = char::from_u32(cp) else {
                    return 0; // surrogates never come out of valid UTF-8
                };
                let mut v = 0;
                let tnr = matches!(c, '\t' | '\n' | '\r');
                if cp == 0 || cp == 0xFFFD || (!tnr && c.is_other()) {
                    v |= class::DROP;
                }
                if tnr || c.is_whitespace() {
                    v |= class::CLEAN_SPACE;
                }
                if CJK.iter().any(|&(a, b)| (a..=b).contains(&cp)) {
                    v |= class::CJK;
                }
                if c.is_mark_nonspacing() {
                    v |= class::MN;
                }
                if c.is_whitespace() {
                    v |= class::SPACE;
                }
                if c.is_ascii_punctuation() || c.is_punctuation() {
                    v |= class::PUNCT;
                }
                if in_ranges(&s, cp) {
                    v |= class::RE_SPACE;
                }
                if in_ranges(&l, cp) {
                    v |= class::RE_LETTER;
                }
                if in_ranges(&n, cp) {
                    v |= class::RE_NUMBER;
                }
                let ccc = unicode_normalization_alignments::char::canonical_combining_class(c);
                v | (ccc as u32) << class::CCC_SHIFT
            })
            .collect()
    })
}

/// The grapheme-cluster class bits of a character (`class::G_*`): what the C side's cluster
/// breaking tests, probed from `unicode-segmentation` (the crate whose `graphemes(true)` the
/// `tokenizers` crate calls) by the clusters it makes of short strings, so that the artifact
/// splits text into the same clusters.
fn grapheme_bits(c: char) -> u32 {
    use class::*;
    use unicode_segmentation::UnicodeSegmentation;
    let n = |s: &str| s.graphemes(true).count();
    let with = |a: &str, b: &str| {
        let mut s = String::with_capacity(16);
        s.push_str(a);
        s.push_str(b);
        n(&s)
    };
    let cs = c.to_string();
    let mut v = 0;
    // Extend, ZWJ, SpacingMark: joins whatever precedes (GB9, GB9a)
    let joiner = with("a", &cs) == 1;
    if joiner {
        v |= G_JOIN;
    }
    // Prepend: joins what follows (GB9b)
    let prepend = with(&cs, "a") == 1;
    if prepend {
        v |= G_PREPEND;
    }
    // Control, CR, LF: not even an Extend joins them (GB4)
    if with(&cs, "\u{301}") == 2 {
        v |= G_CONTROL;
    }
    if !prepend {
        let (l, vv, t) = (
            with(&cs, "\u{1100}") == 1,
            with(&cs, "\u{1161}") == 1,
            with(&cs, "\u{11A8}") == 1,
        );
        // as the left of a Hangul pair: L (GB6), V or LV (GB7), LVT or T (GB8)
        if l && vv && !t {
            v |= G_L;
        } else if vv && t && !l {
            v |= G_VLV;
        } else if t && !vv && !l {
            v |= G_LVTT;
        }
    }
    if !joiner {
        // as the right of a Hangul pair
        if with("\u{1100}", &cs) == 1 {
            v |= G_AFTER_L;
        }
        if with("\u{1161}", &cs) == 1 {
            v |= G_AFTER_V;
        }
        if with("\u{11A8}", &cs) == 1 {
            v |= G_AFTER_T;
        }
        // Extended_Pictographic: joins an emoji and a ZWJ (GB11)
        if with("\u{1F44D}\u{200D}", &cs) == 1 {
            v |= G_EXTPICT;
        }
    }
    // Regional_Indicator: three make a pair and one (GB12, GB13)
    if n(&cs.repeat(3)) == 2 {
        v |= G_RI;
    }
    v
}

/// The grapheme bits of every code point, probed once per process when a tokenizer needs them.
fn all_grapheme_bits() -> &'static Vec<u32> {
    static ALL: OnceLock<Vec<u32>> = OnceLock::new();
    ALL.get_or_init(|| {
        (0..=0x10FFFFu32)
            .map(|cp| char::from_u32(cp).map_or(0, grapheme_bits))
            .collect()
    })
}

/// Hangul syllables decompose by formula (the C side computes it); the table holds the rest.
pub const HANGUL_FIRST: u32 = 0xAC00;
pub const HANGUL_LAST: u32 = 0xD7A3;

fn hangul(cp: u32) -> Vec<u32> {
    let s = cp - HANGUL_FIRST;
    let (l, v, t) = (0x1100 + s / 588, 0x1161 + (s % 588) / 28, 0x11A7 + s % 28);
    if t == 0x11A7 {
        vec![l, v]
    } else {
        vec![l, v, t]
    }
}

fn char_map(f: impl Fn(char) -> Option<Vec<u32>>) -> CharMap {
    let mut m = CharMap {
        off: vec![0],
        ..CharMap::default()
    };
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        if let Some(seq) = f(c) {
            m.cps.push(c as u32);
            m.pool.extend(seq);
            m.off.push(m.pool.len() as u32);
        }
    }
    m
}

fn string_table<'a>(strings: impl Iterator<Item = Option<&'a [u8]>>) -> StringTable {
    let mut t = StringTable {
        off: vec![0],
        ..StringTable::default()
    };
    let mut present = Vec::new();
    for (i, s) in strings.enumerate() {
        if let Some(s) = s {
            t.pool.extend_from_slice(s);
            t.max_len = t.max_len.max(s.len());
            present.push(i);
        }
        t.off.push(t.pool.len() as u32);
    }
    let size = (2 * present.len()).next_power_of_two().max(2);
    t.slots = vec![0; size];
    for i in present {
        let s = &t.pool[t.off[i] as usize..t.off[i + 1] as usize];
        let mut h = fnv1a(FNV_SEED, s) as usize & (size - 1);
        loop {
            match t.slots[h] {
                0 => {
                    t.slots[h] = i as u32 + 1;
                    break;
                }
                j => {
                    let j = j as usize - 1;
                    if &t.pool[t.off[j] as usize..t.off[j + 1] as usize] == s {
                        break; // a duplicate keeps the first id, as a vocabulary map does
                    }
                }
            }
            h = (h + 1) & (size - 1);
        }
    }
    t
}

/// The merge table's hash of a pair; the C side computes the same (`pair_hash`).
pub fn pair_hash(a: u32, b: u32) -> u32 {
    let k = ((a as u64) << 32 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (k >> 32) as u32
}

fn merge_table(merges: &[(u32, u32, u32)]) -> MergeTable {
    let size = (2 * merges.len()).next_power_of_two().max(2);
    let mut t = MergeTable {
        left: vec![u32::MAX; size],
        right: vec![u32::MAX; size],
        rank: vec![0; size],
        merged: vec![0; size],
    };
    for (rank, &(a, b, m)) in merges.iter().enumerate() {
        let mut h = pair_hash(a, b) as usize & (size - 1);
        while t.left[h] != u32::MAX {
            if (t.left[h], t.right[h]) == (a, b) {
                break;
            }
            h = (h + 1) & (size - 1);
        }
        if t.left[h] == u32::MAX {
            // the first rank of a pair listed twice wins, as in `tokenizers`' merge map
            (t.left[h], t.right[h], t.rank[h], t.merged[h]) = (a, b, rank as u32, m);
        }
    }
    t
}

impl Tables {
    pub fn new(spec: &TextSpec) -> Tables {
        let mut mask = 0;
        if let Some(n) = &spec.normalizer {
            if n.clean_text {
                mask |= class::DROP | class::CLEAN_SPACE;
            }
            if n.handle_chinese_chars {
                mask |= class::CJK;
            }
            if n.strip_accents {
                mask |= class::MN | 0xFF << class::CCC_SHIFT;
            }
        }
        match spec.pre_tokenizer {
            PreTokenizer::Bert => mask |= class::SPACE | class::PUNCT,
            PreTokenizer::ByteLevel { .. } => {
                mask |= class::RE_SPACE | class::RE_LETTER | class::RE_NUMBER
            }
            PreTokenizer::Metaspace {
                whitespace_split, ..
            } => {
                if whitespace_split {
                    mask |= class::SPACE;
                }
            }
        }
        for step in &spec.spm {
            match step {
                SpmStep::Precompiled { .. } => mask |= class::GRAPHEME,
                SpmStep::Strip { .. } => mask |= class::SPACE,
                SpmStep::Replace { .. } => {}
            }
        }
        if spec.added.iter().any(|t| t.lstrip || t.rstrip) {
            mask |= class::SPACE;
        }
        let all = all_classes();
        let graphemes = (mask & class::GRAPHEME != 0).then(all_grapheme_bits);
        let (mut starts, mut values) = (Vec::new(), Vec::new());
        for (cp, &v) in all.iter().enumerate() {
            let g = graphemes.map_or(0, |g| g[cp]);
            let v = (v | g) & mask;
            if values.last() != Some(&v) {
                starts.push(cp as u32);
                values.push(v);
            }
        }
        let strip = spec.normalizer.is_some_and(|n| n.strip_accents);
        let decompose = strip.then(|| {
            char_map(|c| {
                let cp = c as u32;
                let mut d = Vec::new();
                unicode_normalization_alignments::char::decompose_canonical(c, |x| {
                    d.push(x as u32)
                });
                if (HANGUL_FIRST..=HANGUL_LAST).contains(&cp) {
                    assert_eq!(d, hangul(cp), "the Hangul formula");
                    return None;
                }
                (d != [cp]).then_some(d)
            })
        });
        let lowercase = spec.normalizer.is_some_and(|n| n.lowercase).then(|| {
            char_map(|c| {
                let l: Vec<u32> = c.to_lowercase().map(|x| x as u32).collect();
                (l != [c as u32]).then_some(l)
            })
        });
        let (vocab, merges, byte_tokens) = match &spec.model {
            Model::WordPiece { vocab, .. } => (
                string_table(vocab.iter().map(|t| Some(t.as_bytes()))),
                None,
                None,
            ),
            Model::Bpe { vocab, merges, .. } => {
                let table = string_table(vocab.iter().map(|t| t.as_deref()));
                let bytes = (0..=255u8)
                    .map(|b| {
                        vocab
                            .iter()
                            .position(|t| t.as_deref() == Some(&[b][..]))
                            .map_or(u32::MAX, |i| i as u32)
                    })
                    .collect();
                (table, Some(merge_table(merges)), Some(bytes))
            }
            // a piece listed twice maps to its last id, as `tokenizers`' piece map does
            Model::Unigram { vocab, .. } => {
                let mut last = std::collections::HashMap::new();
                for (i, t) in vocab.iter().enumerate() {
                    last.insert(t.as_str(), i);
                }
                let kept = vocab
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (last[t.as_str()] == i).then_some(t.as_bytes()));
                (string_table(kept), None, None)
            }
        };
        let added = string_table(spec.added.iter().map(|t| Some(t.content.as_bytes())));
        Tables {
            class_mask: mask,
            class_starts: starts,
            class_values: values,
            decompose,
            lowercase,
            vocab,
            merges,
            byte_tokens,
            added,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grapheme_classes() {
        use class::*;
        assert_ne!(grapheme_bits('\u{301}') & G_JOIN, 0);
        assert_ne!(grapheme_bits('\u{200D}') & G_JOIN, 0);
        assert_ne!(grapheme_bits('\n') & G_CONTROL, 0);
        assert_ne!(grapheme_bits('\u{600}') & G_PREPEND, 0);
        assert_ne!(grapheme_bits('\u{1F1FA}') & G_RI, 0);
        assert_ne!(grapheme_bits('\u{1F600}') & G_EXTPICT, 0);
        assert_ne!(grapheme_bits('\u{1100}') & G_L, 0);
        assert_ne!(grapheme_bits('\u{AC00}') & G_VLV, 0);
        assert_ne!(grapheme_bits('\u{AC01}') & G_LVTT, 0);
        assert_eq!(grapheme_bits('a'), 0);
    }
}
