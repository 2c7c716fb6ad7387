//! SentencePiece-style pipelines (XLM-RoBERTa and the other Unigram tokenizers that
//! transformers converts from a `.model` file): the normalizer steps (`Precompiled`, `Strip`,
//! `Replace`) as a typed list, the precompiled charsmap's double-array trie, and the grapheme
//! cluster classes the `Precompiled` step needs, probed from `unicode-segmentation` (the crate
//! whose `graphemes(true)` the `tokenizers` crate calls) so that the artifact splits text into
//! the same clusters.

use serde_json::Value;

/// One step of a SentencePiece-style normalizer, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum SpmStep {
    /// SentencePiece's normalization rules: the charsmap's double-array trie (`trie`, as the
    /// file stores it) and the NUL-terminated replacements it points into (`normalized`).
    Precompiled { trie: Vec<u32>, normalized: Vec<u8> },
    /// Removes whitespace (`char::is_whitespace`) from the start and/or the end.
    Strip { left: bool, right: bool },
    /// Replaces each leftmost, non-overlapping match: `min` or more repetitions of `unit`
    /// (a regex `X{n,}` or `X+`), or with `literal` exactly `unit` once.
    Replace {
        unit: String,
        min: usize,
        literal: bool,
        content: String,
    },
}

/// Where Metaspace prepends its replacement character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepend {
    Always,
    /// Only to the text's first piece (not after an added token).
    First,
    Never,
}

/// Reads a normalizer made of SentencePiece-style steps (a `Sequence` of them or one), or
/// `None` if `v` is not one (a `BertNormalizer`, say); `Err((key, message))` for a step it
/// cannot run.
pub fn steps(v: &Value) -> Option<Result<Vec<SpmStep>, (String, String)>> {
    let kind = v.get("type")?.as_str()?;
    let list: Vec<(&Value, String)> = match kind {
        "Sequence" => v
            .get("normalizers")?
            .as_array()?
            .iter()
            .enumerate()
            .map(|(i, s)| (s, format!("normalizer.normalizers[{i}]")))
            .collect(),
        "Precompiled" | "Strip" | "Replace" => vec![(v, "normalizer".to_string())],
        _ => return None,
    };
    Some(list.into_iter().map(|(s, path)| step(s, &path)).collect())
}

fn step(v: &Value, path: &str) -> Result<SpmStep, (String, String)> {
    let err = |key: &str, msg: &str| (format!("{path}.{key}"), msg.to_string());
    let flag = |key: &str| match v.get(key) {
        Some(Value::Bool(b)) => Ok(*b),
        None | Some(Value::Null) => Ok(true),
        _ => Err(err(key, "expected true or false")),
    };
    match v.get("type").and_then(Value::as_str).unwrap_or("") {
        "Precompiled" => {
            let b64 = v
                .get("precompiled_charsmap")
                .and_then(Value::as_str)
                .ok_or_else(|| err("precompiled_charsmap", "expected a base64 string"))?;
            let bytes =
                base64(b64).ok_or_else(|| err("precompiled_charsmap", "not valid base64"))?;
            let (trie, normalized) = charsmap(&bytes)
                .ok_or_else(|| err("precompiled_charsmap", "not a SentencePiece charsmap"))?;
            Ok(SpmStep::Precompiled { trie, normalized })
        }
        "Strip" => Ok(SpmStep::Strip {
            left: flag("strip_left")?,
            right: flag("strip_right")?,
        }),
        "Replace" => {
            let content = v
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| err("content", "expected a string"))?
                .to_string();
            let pattern = v.get("pattern").ok_or_else(|| err("pattern", "missing"))?;
            if let Some(s) = pattern.get("String").and_then(Value::as_str) {
                if s.is_empty() {
                    return Err(err("pattern.String", "an empty pattern"));
                }
                return Ok(SpmStep::Replace {
                    unit: s.to_string(),
                    min: 1,
                    literal: true,
                    content,
                });
            }
            let re = pattern
                .get("Regex")
                .and_then(Value::as_str)
                .ok_or_else(|| err("pattern", "expected {\"String\": ...} or {\"Regex\": ...}"))?;
            let (unit, min) = repetition(re).ok_or_else(|| {
                err(
                    "pattern.Regex",
                    &format!("'{re}': only a repeated character (X{{n,}} or X+) is supported"),
                )
            })?;
            Ok(SpmStep::Replace {
                unit,
                min,
                literal: false,
                content,
            })
        }
        k => Err(err(
            "type",
            &format!("normalizer step {k} is not supported"),
        )),
    }
}

/// A regex that is one literal character repeated at least `min` times, unbounded.
fn repetition(re: &str) -> Option<(String, usize)> {
    use regex_syntax::hir::{HirKind, Literal};
    let hir = regex_syntax::Parser::new().parse(re).ok()?;
    let HirKind::Repetition(r) = hir.kind() else {
        return None;
    };
    if r.max.is_some() || !r.greedy || r.min == 0 {
        return None;
    }
    let HirKind::Literal(Literal(bytes)) = r.sub.kind() else {
        return None;
    };
    let s = std::str::from_utf8(bytes).ok()?;
    (s.chars().count() == 1).then(|| (s.to_string(), r.min as usize))
}

/// Standard base64 (with padding).
fn base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

/// A SentencePiece charsmap: a little-endian u32 byte size of the trie, the trie's units, then
/// the replacements.
fn charsmap(b: &[u8]) -> Option<(Vec<u32>, Vec<u8>)> {
    let size = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let trie_bytes = b.get(4..4 + size)?;
    if size % 4 != 0 || size == 0 {
        return None;
    }
    let trie: Vec<u32> = trie_bytes
        .chunks(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    Some((trie, b[4 + size..].to_vec()))
}

/// The grapheme-cluster class bits of a character (see `tables::class`): what the C side's
/// cluster breaking tests, probed from `unicode-segmentation` by the clusters it makes of short
/// strings.
pub fn grapheme_bits(c: char) -> u32 {
    use crate::tables::class::*;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes() {
        assert_eq!(base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64("aGk=").unwrap(), b"hi");
        assert!(base64("a$==").is_none());
    }

    #[test]
    fn repetitions_are_read() {
        assert_eq!(repetition(" {2,}"), Some((" ".into(), 2)));
        assert_eq!(repetition("x+"), Some(("x".into(), 1)));
        assert_eq!(repetition("ab+"), None);
        assert_eq!(repetition(" {2,3}"), None);
    }

    #[test]
    fn grapheme_classes() {
        use crate::tables::class::*;
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
