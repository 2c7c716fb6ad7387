//! SentencePiece-style pipelines (XLM-RoBERTa and the other Unigram tokenizers that
//! transformers converts from a `.model` file): the normalizer steps (`Precompiled`, `Strip`,
//! `Replace`) as a typed list and the precompiled charsmap's double-array trie. (The grapheme
//! cluster classes the `Precompiled` step needs are tables: `tables::grapheme_bits`.)

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

    /// The artifact holds one charsmap: a second Precompiled step is refused, not ignored.
    #[test]
    fn a_second_charsmap_is_refused() {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/unigram/tokenizer.json"
        );
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let first = v["normalizer"]["normalizers"][0].clone();
        v["normalizer"]["normalizers"]
            .as_array_mut()
            .unwrap()
            .push(first);
        let err = crate::TextSpec::from_json(&v.to_string(), "t.json").unwrap_err();
        assert!(
            err.to_string().contains("more than one Precompiled step"),
            "{err}"
        );
    }

    #[test]
    fn repetitions_are_read() {
        assert_eq!(repetition(" {2,}"), Some((" ".into(), 2)));
        assert_eq!(repetition("x+"), Some(("x".into(), 1)));
        assert_eq!(repetition("ab+"), None);
        assert_eq!(repetition(" {2,3}"), None);
    }
}
