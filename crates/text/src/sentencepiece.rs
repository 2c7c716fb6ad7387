//! A folder with a SentencePiece model (`sentencepiece.bpe.model`, as XLM-RoBERTa checkpoints
//! have it) but no `tokenizer.json`: the `tokenizer.json` transformers' `XLMRobertaConverter`
//! makes of it (fairseq's ids: `<s> <pad> </s> <unk>`, the model's pieces but its first three,
//! `<mask>`; the model's charsmap, Strip, Replace, Metaspace; `<s> A </s></s> B </s>`). The
//! model file is the protobuf `ModelProto`, read here by the few fields the conversion needs.

use serde_json::{json, Value};
use std::path::Path;

use crate::TextError;

/// The file name of XLM-RoBERTa's SentencePiece model.
pub const XLMR_MODEL: &str = "sentencepiece.bpe.model";

/// Other SentencePiece model names, of tokenizers not converted here.
const OTHER_MODELS: &[&str] = &["spiece.model", "tokenizer.model", "sentencepiece.model"];

/// One protobuf field: its number and value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    Fixed64,
}

/// The fields of one protobuf message, or `None` if it is malformed.
fn fields(mut b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let f = match key & 7 {
            0 => Field::Varint(varint(&mut b)?),
            1 => {
                b = b.get(8..)?;
                Field::Fixed64
            }
            2 => {
                let n = usize::try_from(varint(&mut b)?).ok()?;
                let (v, rest) = (b.get(..n)?, b.get(n..)?);
                b = rest;
                Field::Bytes(v)
            }
            5 => {
                let v = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
                b = &b[4..];
                Field::Fixed32(v)
            }
            _ => return None,
        };
        out.push((key >> 3, f));
    }
    Some(out)
}

/// A piece of the model: its text, score and type (1 normal, 2 unknown, 3 control, 4 user
/// defined, 5 unused, 6 byte).
struct Piece {
    text: String,
    score: f32,
}

/// What the conversion reads of a `ModelProto`: the pieces, the model type (1 Unigram), the
/// charsmap.
fn read_model(b: &[u8]) -> Option<(Vec<Piece>, u64, Vec<u8>)> {
    let (mut pieces, mut model_type, mut charsmap) = (Vec::new(), 1, Vec::new());
    for (no, f) in fields(b)? {
        match (no, f) {
            (1, Field::Bytes(p)) => {
                let (mut text, mut score) = (String::new(), 0.0);
                for (no, f) in fields(p)? {
                    match (no, f) {
                        (1, Field::Bytes(s)) => text = String::from_utf8(s.to_vec()).ok()?,
                        (2, Field::Fixed32(s)) => score = f32::from_bits(s),
                        _ => {}
                    }
                }
                pieces.push(Piece { text, score });
            }
            (2, Field::Bytes(t)) => {
                for (no, f) in fields(t)? {
                    if let (3, Field::Varint(v)) = (no, f) {
                        model_type = v;
                    }
                }
            }
            (3, Field::Bytes(n)) => {
                for (no, f) in fields(n)? {
                    if let (2, Field::Bytes(c)) = (no, f) {
                        charsmap = c.to_vec();
                    }
                }
            }
            _ => {}
        }
    }
    Some((pieces, model_type, charsmap))
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let v = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The `tokenizer.json` text for the folder `dir` from its SentencePiece model, or `None` when
/// it has none. A tokenizer class other than XLM-RoBERTa's, a model that is not Unigram or a
/// SentencePiece model of another name is an unsupported kind.
pub fn tokenizer_json(dir: &Path) -> Result<Option<(String, String)>, TextError> {
    let file = dir.join(XLMR_MODEL);
    if !file.is_file() {
        if let Some(other) = OTHER_MODELS
            .iter()
            .map(|m| dir.join(m))
            .find(|p| p.is_file())
        {
            return Err(TextError::Unsupported {
                file: other.display().to_string(),
                key: "(file)".into(),
                kind: "a SentencePiece model without a tokenizer.json other than XLM-RoBERTa's sentencepiece.bpe.model".into(),
            });
        }
        return Ok(None);
    }
    let name = file.display().to_string();
    let config = dir.join("tokenizer_config.json");
    if let Ok(text) = std::fs::read_to_string(&config) {
        let class = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("tokenizer_class")?.as_str().map(str::to_string));
        if let Some(c) = class.filter(|c| !c.starts_with("XLMRobertaTokenizer")) {
            return Err(TextError::Unsupported {
                file: config.display().to_string(),
                key: "tokenizer_class".into(),
                kind: format!("{c} from {XLMR_MODEL} without a tokenizer.json (such a folder is read as XLM-RoBERTa's)"),
            });
        }
    }
    let bytes = std::fs::read(&file).map_err(|e| TextError::Io {
        file: name.clone(),
        msg: e.to_string(),
    })?;
    let bad = |msg: &str| TextError::Spec {
        file: name.clone(),
        key: "(file)".into(),
        msg: msg.into(),
    };
    let (pieces, model_type, charsmap) =
        read_model(&bytes).ok_or_else(|| bad("not a SentencePiece model (protobuf ModelProto)"))?;
    if model_type != 1 {
        return Err(TextError::Unsupported {
            file: name,
            key: "trainer_spec.model_type".into(),
            kind: format!("SentencePiece model type {model_type} (only Unigram, 1, is converted)"),
        });
    }
    if pieces.len() < 3 {
        return Err(bad("fewer than three pieces"));
    }
    // XLMRobertaConverter: fairseq's four specials, the pieces but the first three, <mask>
    let mut vocab: Vec<Value> = ["<s>", "<pad>", "</s>", "<unk>"]
        .iter()
        .map(|s| json!([s, 0.0]))
        .collect();
    vocab.extend(pieces[3..].iter().map(|p| json!([p.text, p.score as f64])));
    vocab.push(json!(["<mask>", 0.0]));
    let mask = vocab.len() - 1;
    let special = |id: usize, content: &str, lstrip: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": lstrip,
               "rstrip": false, "normalized": false, "special": true})
    };
    let mut normalizers = Vec::new();
    if !charsmap.is_empty() {
        normalizers.push(json!({"type": "Precompiled", "precompiled_charsmap": base64(&charsmap)}));
    }
    normalizers.push(json!({"type": "Strip", "strip_left": false, "strip_right": true}));
    normalizers
        .push(json!({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "\u{2581}"}));
    let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}",
                           "prepend_scheme": "always", "split": true});
    let tok = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    let seq = |s: &str| json!({"Sequence": {"id": s, "type_id": 0}});
    let t = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        // XLMRobertaTokenizer's mask token absorbs the space before it
        "added_tokens": [special(0, "<s>", false), special(1, "<pad>", false),
                         special(2, "</s>", false), special(3, "<unk>", false),
                         special(mask, "<mask>", true)],
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [tok("<s>"), seq("A"), tok("</s>")],
            "pair": [tok("<s>"), seq("A"), tok("</s>"), tok("</s>"), seq("B"), tok("</s>")],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]},
            },
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": false},
    });
    Ok(Some((t.to_string(), name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_encodes() {
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hello!"), "aGVsbG8h");
        assert_eq!(base64(b"hi"), "aGk=");
    }

    /// The conversion of `scripts/unigram-tokenizer`'s model is what transformers' AutoTokenizer
    /// wrote for it, key for key.
    #[test]
    fn converts_as_transformers_does() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/unigram");
        let (ours, _) = tokenizer_json(&dir).unwrap().unwrap();
        let ours: Value = serde_json::from_str(&ours).unwrap();
        let theirs: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
                .unwrap();
        for key in theirs.as_object().unwrap().keys() {
            assert_eq!(ours[key], theirs[key], "{key}");
        }
        assert_eq!(
            ours.as_object().unwrap().len(),
            theirs.as_object().unwrap().len()
        );
    }

    #[test]
    fn malformed_protobuf_is_none() {
        assert!(read_model(&[0x0A, 0x05, 1]).is_none());
        assert!(read_model(&[0xFF]).is_none());
    }
}
