//! `tokenizer.json` as a typed spec: the parts of the Hugging Face `tokenizers` pipeline that
//! bertc's artifact tokenizer implements, and a one-line error naming the file and the key for
//! everything else.

use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

use crate::spm::{Prepend, SpmStep};
use crate::TextError;

/// The whole text pipeline of one model.
#[derive(Clone, Debug)]
pub struct TextSpec {
    /// Where it was read from (for headers and messages).
    pub source: String,
    /// Tokens matched in the text before anything else (special tokens, user-added tokens).
    pub added: Vec<AddedToken>,
    pub normalizer: Option<BertNormalizer>,
    /// A SentencePiece-style normalizer's steps, in order (empty: none).
    pub spm: Vec<SpmStep>,
    pub pre_tokenizer: PreTokenizer,
    pub model: Model,
    pub template: Template,
}

/// An entry of `added_tokens`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    /// Matched in the normalized text rather than the raw text.
    pub normalized: bool,
    /// Absorbs the whitespace to its left / right.
    pub lstrip: bool,
    pub rstrip: bool,
}

/// `BertNormalizer`, with `strip_accents` resolved (`null` follows `lowercase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BertNormalizer {
    pub clean_text: bool,
    pub handle_chinese_chars: bool,
    pub strip_accents: bool,
    pub lowercase: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// Splits on whitespace (removed) and punctuation (kept, one token each).
    Bert,
    /// GPT-2's byte-level split (its regex), the bytes then mapped to the byte alphabet.
    ByteLevel { add_prefix_space: bool },
    /// SentencePiece's: spaces become `replacement` (prepended as `prepend` says), and with
    /// `split` each replacement starts a new word; after a `WhitespaceSplit` if
    /// `whitespace_split` (words split on whitespace, which is dropped, first).
    Metaspace {
        replacement: char,
        prepend: Prepend,
        split: bool,
        whitespace_split: bool,
    },
}

#[derive(Clone, Debug)]
pub enum Model {
    WordPiece {
        /// Tokens by id.
        vocab: Vec<String>,
        unk: u32,
        prefix: String,
        max_input_chars_per_word: usize,
    },
    /// Byte-level BPE: `vocab` by id as raw bytes (the byte alphabet undone; `None` for a
    /// token that is not a byte-level string and so can never be produced), merges in rank
    /// order as `(left, right, merged)` ids.
    Bpe {
        vocab: Vec<Option<Vec<u8>>>,
        merges: Vec<(u32, u32, u32)>,
        unk: Option<u32>,
        fuse_unk: bool,
        ignore_merges: bool,
    },
    /// SentencePiece's Unigram: the pieces by id with their log probabilities; the text's
    /// most probable segmentation into pieces (Viterbi), unknown characters as `unk` (runs of
    /// them fused).
    Unigram {
        vocab: Vec<String>,
        scores: Vec<f64>,
        unk: u32,
    },
}

impl Model {
    pub fn kind(&self) -> &'static str {
        match self {
            Model::WordPiece { .. } => "WordPiece",
            Model::Bpe { .. } => "byte-level BPE",
            Model::Unigram { .. } => "Unigram",
        }
    }

    pub fn vocab_len(&self) -> usize {
        match self {
            Model::WordPiece { vocab, .. } => vocab.len(),
            Model::Bpe { vocab, .. } => vocab.len(),
            Model::Unigram { vocab, .. } => vocab.len(),
        }
    }
}

/// One item of a post-processor template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Special token ids, each with this type id.
    Special(Vec<u32>, u32),
    /// The first (A) or second (B) sequence, with this type id.
    Sequence { second: bool, type_id: u32 },
}

/// What the post-processor adds around one text and a pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub single: Vec<Piece>,
    pub pair: Vec<Piece>,
}

impl Template {
    /// Special tokens the template adds to one text (`pair` false) or a pair.
    pub fn added(&self, pair: bool) -> usize {
        let t = if pair { &self.pair } else { &self.single };
        t.iter()
            .map(|p| match p {
                Piece::Special(ids, _) => ids.len(),
                Piece::Sequence { .. } => 0,
            })
            .sum()
    }
}

/// The kinds this reader supports, for messages.
pub const SUPPORTED: &str = "normalizer BertNormalizer, a sequence of Precompiled, Strip and Replace (of a string or a repeated character), or none; pre-tokenizer BertPreTokenizer, ByteLevel or Metaspace (after WhitespaceSplit or not); model WordPiece, byte-level BPE or Unigram (with Metaspace); post-processor TemplateProcessing, BertProcessing, RobertaProcessing or none";

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, key: &str, msg: impl Into<String>) -> TextError {
        TextError::Spec {
            file: self.file.to_string(),
            key: key.to_string(),
            msg: msg.into(),
        }
    }

    fn unsupported(&self, key: &str, what: &str) -> TextError {
        TextError::Unsupported {
            file: self.file.to_string(),
            key: key.to_string(),
            kind: what.to_string(),
        }
    }

    fn bool_or(&self, v: &Value, key: &str, path: &str, default: bool) -> Result<bool, TextError> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.err(&format!("{path}.{key}"), "expected true or false")),
        }
    }

    fn str<'v>(&self, v: &'v Value, key: &str, path: &str) -> Result<&'v str, TextError> {
        v.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| self.err(&format!("{path}.{key}"), "expected a string"))
    }

    fn u32(&self, v: &Value, key: &str, path: &str) -> Result<u32, TextError> {
        v.get(key)
            .and_then(Value::as_u64)
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| self.err(&format!("{path}.{key}"), "expected a token id"))
    }

    fn kind<'v>(&self, v: &'v Value, path: &str) -> Result<&'v str, TextError> {
        self.str(v, "type", path)
    }
}

impl TextSpec {
    /// Reads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<TextSpec, TextError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TextError::Io {
            file: file.clone(),
            msg: e.to_string(),
        })?;
        TextSpec::from_json(&text, &file)
    }

    /// Parses the text of a `tokenizer.json`; `file` names it in errors.
    pub fn from_json(text: &str, file: &str) -> Result<TextSpec, TextError> {
        let c = Ctx { file };
        let root: Value = serde_json::from_str(text).map_err(|e| TextError::Json {
            file: file.to_string(),
            msg: e.to_string(),
        })?;
        if !root.is_object() {
            return Err(c.err("(root)", "expected an object"));
        }
        let model_v = root.get("model").ok_or_else(|| c.err("model", "missing"))?;
        let pre_v = root.get("pre_tokenizer").unwrap_or(&Value::Null);
        let norm_v = root.get("normalizer").unwrap_or(&Value::Null);
        let normalizer = normalizer(&c, norm_v)?;
        let spm = match normalizer {
            Some(_) => Vec::new(),
            None => match crate::spm::steps(norm_v) {
                None => Vec::new(),
                Some(Ok(steps)) => {
                    // the artifact holds one charsmap
                    let charsmaps = steps
                        .iter()
                        .filter(|s| matches!(s, SpmStep::Precompiled { .. }))
                        .count();
                    if charsmaps > 1 {
                        return Err(c.unsupported("normalizer", "more than one Precompiled step"));
                    }
                    steps
                }
                Some(Err((key, msg))) => return Err(c.err(&key, msg)),
            },
        };
        let pre_tokenizer = pre_tokenizer(&c, pre_v)?;
        let model = model(&c, model_v, pre_tokenizer)?;
        if !spm.is_empty() && !matches!(model, Model::Unigram { .. }) {
            return Err(c.unsupported(
                "normalizer",
                &format!(
                    "a SentencePiece-style normalizer with model {}",
                    model.kind()
                ),
            ));
        }
        let vocab_len = model.vocab_len();
        let added = added_tokens(
            &c,
            root.get("added_tokens").unwrap_or(&Value::Null),
            vocab_len,
        )?;
        let by_content: HashMap<&str, u32> =
            added.iter().map(|t| (t.content.as_str(), t.id)).collect();
        let lookup = |tok: &str| -> Option<u32> {
            by_content.get(tok).copied().or_else(|| model.token_id(tok))
        };
        let template = template(
            &c,
            root.get("post_processor").unwrap_or(&Value::Null),
            &lookup,
            vocab_len,
        )?;
        if let Some(t) = root.get("truncation").filter(|t| !t.is_null()) {
            // The artifact truncates to its own maximum length (as sentence-transformers
            // does); only the direction and the stride would change the tokens it keeps.
            if t.get("direction")
                .and_then(Value::as_str)
                .is_some_and(|d| d != "Right")
            {
                return Err(c.unsupported("truncation.direction", "left truncation"));
            }
        }
        Ok(TextSpec {
            source: file.to_string(),
            added,
            normalizer,
            spm,
            pre_tokenizer,
            model,
            template,
        })
    }
}

impl Model {
    /// The id of a token written as in `tokenizer.json` (byte-level strings for BPE).
    pub fn token_id(&self, tok: &str) -> Option<u32> {
        match self {
            Model::WordPiece { vocab, .. } => vocab.iter().position(|t| t == tok).map(|i| i as u32),
            // a piece listed twice maps to its last id, as `tokenizers`' piece map does
            Model::Unigram { vocab, .. } => vocab.iter().rposition(|t| t == tok).map(|i| i as u32),
            Model::Bpe { vocab, .. } => {
                let bytes = crate::bytelevel::decode(tok)?;
                vocab
                    .iter()
                    .position(|t| t.as_deref() == Some(bytes.as_slice()))
                    .map(|i| i as u32)
            }
        }
    }
}

fn normalizer(c: &Ctx, v: &Value) -> Result<Option<BertNormalizer>, TextError> {
    if v.is_null() {
        return Ok(None);
    }
    match c.kind(v, "normalizer")? {
        "BertNormalizer" => {
            let lowercase = c.bool_or(v, "lowercase", "normalizer", true)?;
            Ok(Some(BertNormalizer {
                clean_text: c.bool_or(v, "clean_text", "normalizer", true)?,
                handle_chinese_chars: c.bool_or(v, "handle_chinese_chars", "normalizer", true)?,
                strip_accents: c.bool_or(v, "strip_accents", "normalizer", lowercase)?,
                lowercase,
            }))
        }
        _ if crate::spm::steps(v).is_some() => Ok(None),
        k => Err(c.unsupported("normalizer.type", &format!("normalizer {k}"))),
    }
}

fn pre_tokenizer(c: &Ctx, v: &Value) -> Result<PreTokenizer, TextError> {
    if v.is_null() {
        return Err(c.unsupported("pre_tokenizer", "no pre-tokenizer"));
    }
    match c.kind(v, "pre_tokenizer")? {
        "BertPreTokenizer" => Ok(PreTokenizer::Bert),
        "ByteLevel" => {
            if !c.bool_or(v, "use_regex", "pre_tokenizer", true)? {
                return Err(c.unsupported("pre_tokenizer.use_regex", "ByteLevel without its regex"));
            }
            Ok(PreTokenizer::ByteLevel {
                add_prefix_space: c.bool_or(v, "add_prefix_space", "pre_tokenizer", true)?,
            })
        }
        "Metaspace" => metaspace(c, v, "pre_tokenizer", false),
        "Sequence" => {
            let list = v
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or_else(|| c.err("pre_tokenizer.pretokenizers", "expected a list"))?;
            let kinds: Vec<&str> = list
                .iter()
                .map(|p| p.get("type").and_then(Value::as_str).unwrap_or(""))
                .collect();
            match kinds.as_slice() {
                ["WhitespaceSplit", "Metaspace"] => {
                    metaspace(c, &list[1], "pre_tokenizer.pretokenizers[1]", true)
                }
                ["Metaspace"] => metaspace(c, &list[0], "pre_tokenizer.pretokenizers[0]", false),
                _ => Err(c.unsupported(
                    "pre_tokenizer.pretokenizers",
                    &format!("the pre-tokenizer sequence {kinds:?}"),
                )),
            }
        }
        k => Err(c.unsupported("pre_tokenizer.type", &format!("pre-tokenizer {k}"))),
    }
}

fn metaspace(
    c: &Ctx,
    v: &Value,
    path: &str,
    whitespace_split: bool,
) -> Result<PreTokenizer, TextError> {
    let r = c.str(v, "replacement", path)?;
    let mut chars = r.chars();
    let (Some(replacement), None) = (chars.next(), chars.next()) else {
        return Err(c.err(&format!("{path}.replacement"), "expected one character"));
    };
    let prepend = match v.get("prepend_scheme").and_then(Value::as_str) {
        Some("always") => Prepend::Always,
        Some("first") => Prepend::First,
        Some("never") => Prepend::Never,
        Some(s) => {
            return Err(c.err(
                &format!("{path}.prepend_scheme"),
                format!("'{s}': expected always, first or never"),
            ))
        }
        // before tokenizers 0.14, `add_prefix_space`
        None => match c.bool_or(v, "add_prefix_space", path, true)? {
            true => Prepend::Always,
            false => Prepend::Never,
        },
    };
    Ok(PreTokenizer::Metaspace {
        replacement,
        prepend,
        split: c.bool_or(v, "split", path, true)?,
        whitespace_split,
    })
}

fn vocab_by_id(c: &Ctx, v: &Value) -> Result<Vec<String>, TextError> {
    let map = v
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| c.err("model.vocab", "expected an object of token: id"))?;
    let mut by_id: Vec<Option<String>> = vec![None; map.len()];
    for (tok, id) in map {
        let id = id
            .as_u64()
            .filter(|&i| (i as usize) < map.len())
            .ok_or_else(|| {
                c.err(
                    &format!("model.vocab.{tok}"),
                    format!("id {id} is not below the vocabulary's size {}", map.len()),
                )
            })?;
        if by_id[id as usize].replace(tok.clone()).is_some() {
            return Err(c.err(
                &format!("model.vocab.{tok}"),
                format!("id {id} is given to two tokens"),
            ));
        }
    }
    // every slot is filled: n distinct ids below n
    Ok(by_id.into_iter().map(Option::unwrap_or_default).collect())
}

fn model(c: &Ctx, v: &Value, pre: PreTokenizer) -> Result<Model, TextError> {
    match c.kind(v, "model")? {
        "WordPiece" => {
            if matches!(pre, PreTokenizer::Metaspace { .. }) {
                return Err(c.unsupported("model.type", "WordPiece after Metaspace"));
            }
            let vocab = vocab_by_id(c, v)?;
            let unk_tok = c.str(v, "unk_token", "model")?;
            let unk = vocab.iter().position(|t| t == unk_tok).ok_or_else(|| {
                c.err(
                    "model.unk_token",
                    format!("'{unk_tok}' is not in the vocabulary"),
                )
            })?;
            let max = v
                .get("max_input_chars_per_word")
                .map(|m| {
                    m.as_u64()
                        .ok_or_else(|| c.err("model.max_input_chars_per_word", "expected a count"))
                })
                .transpose()?
                .unwrap_or(100);
            Ok(Model::WordPiece {
                vocab,
                unk: unk as u32,
                prefix: v
                    .get("continuing_subword_prefix")
                    .and_then(Value::as_str)
                    .unwrap_or("##")
                    .to_string(),
                max_input_chars_per_word: max as usize,
            })
        }
        "BPE" => {
            if !matches!(pre, PreTokenizer::ByteLevel { .. }) {
                return Err(c.unsupported("model.type", "BPE without a ByteLevel pre-tokenizer"));
            }
            for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
                if v.get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
                {
                    return Err(
                        c.unsupported(&format!("model.{key}"), &format!("BPE with a {key}"))
                    );
                }
            }
            if v.get("dropout").is_some_and(|d| !d.is_null()) {
                return Err(c.unsupported(
                    "model.dropout",
                    "BPE dropout (tokenization would be random)",
                ));
            }
            if c.bool_or(v, "byte_fallback", "model", false)? {
                return Err(c.unsupported("model.byte_fallback", "BPE byte fallback"));
            }
            let names = vocab_by_id(c, v)?;
            let vocab: Vec<Option<Vec<u8>>> =
                names.iter().map(|t| crate::bytelevel::decode(t)).collect();
            let ids: HashMap<&str, u32> = names
                .iter()
                .enumerate()
                .map(|(i, t)| (t.as_str(), i as u32))
                .collect();
            let merges_v = v
                .get("merges")
                .and_then(Value::as_array)
                .ok_or_else(|| c.err("model.merges", "expected a list"))?;
            let mut merges = Vec::with_capacity(merges_v.len());
            for (i, m) in merges_v.iter().enumerate() {
                let key = format!("model.merges[{i}]");
                let (a, b) = match m {
                    Value::String(s) => s
                        .split_once(' ')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .ok_or_else(|| c.err(&key, "expected two tokens separated by a space"))?,
                    Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                        (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                        _ => return Err(c.err(&key, "expected two tokens")),
                    },
                    _ => return Err(c.err(&key, "expected two tokens")),
                };
                let id = |t: &str| {
                    ids.get(t)
                        .copied()
                        .ok_or_else(|| c.err(&key, format!("'{t}' is not in the vocabulary")))
                };
                merges.push((id(&a)?, id(&b)?, id(&format!("{a}{b}"))?));
            }
            let unk = match v.get("unk_token") {
                None | Some(Value::Null) => None,
                Some(Value::String(u)) => Some(*ids.get(u.as_str()).ok_or_else(|| {
                    c.err("model.unk_token", format!("'{u}' is not in the vocabulary"))
                })?),
                Some(_) => return Err(c.err("model.unk_token", "expected a string")),
            };
            Ok(Model::Bpe {
                vocab,
                merges,
                unk,
                fuse_unk: c.bool_or(v, "fuse_unk", "model", false)?,
                ignore_merges: c.bool_or(v, "ignore_merges", "model", false)?,
            })
        }
        "Unigram" => unigram(c, v, pre),
        k => Err(c.unsupported("model.type", &format!("model {k}"))),
    }
}

fn unigram(c: &Ctx, v: &Value, pre: PreTokenizer) -> Result<Model, TextError> {
    if !matches!(pre, PreTokenizer::Metaspace { .. }) {
        return Err(c.unsupported("model.type", "Unigram without a Metaspace pre-tokenizer"));
    }
    if c.bool_or(v, "byte_fallback", "model", false)? {
        return Err(c.unsupported("model.byte_fallback", "Unigram byte fallback"));
    }
    let list = v
        .get("vocab")
        .and_then(Value::as_array)
        .ok_or_else(|| c.err("model.vocab", "expected a list of [piece, score]"))?;
    let (mut vocab, mut scores) = (
        Vec::with_capacity(list.len()),
        Vec::with_capacity(list.len()),
    );
    for (i, e) in list.iter().enumerate() {
        let pair = e.as_array().filter(|p| p.len() == 2);
        let (Some(piece), Some(score)) = (
            pair.and_then(|p| p[0].as_str()),
            pair.and_then(|p| p[1].as_f64()),
        ) else {
            return Err(c.err(&format!("model.vocab[{i}]"), "expected [piece, score]"));
        };
        vocab.push(piece.to_string());
        scores.push(score);
    }
    let unk = match v.get("unk_id") {
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|&u| (u as usize) < vocab.len())
            .ok_or_else(|| c.err("model.unk_id", "expected an id within the vocabulary"))?,
        _ => return Err(c.unsupported("model.unk_id", "Unigram without an unknown token")),
    };
    Ok(Model::Unigram {
        vocab,
        scores,
        unk: unk as u32,
    })
}

fn added_tokens(c: &Ctx, v: &Value, vocab_len: usize) -> Result<Vec<AddedToken>, TextError> {
    let Some(list) = v.as_array() else {
        return if v.is_null() {
            Ok(Vec::new())
        } else {
            Err(c.err("added_tokens", "expected a list"))
        };
    };
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let path = format!("added_tokens[{i}]");
        let id = c.u32(t, "id", &path)?;
        if id as usize >= vocab_len {
            // tokenizers accepts ids past the model's vocabulary; the encoder's embedding
            // table has no row for them
            return Err(c.err(
                &format!("{path}.id"),
                format!("id {id} is beyond the vocabulary of {vocab_len}"),
            ));
        }
        let content = c.str(t, "content", &path)?.to_string();
        if content.is_empty() {
            return Err(c.err(&format!("{path}.content"), "an empty added token"));
        }
        if c.bool_or(t, "single_word", &path, false)? {
            return Err(c.unsupported(
                &format!("{path}.single_word"),
                "added tokens matched as single words",
            ));
        }
        out.push(AddedToken {
            id,
            content,
            normalized: c.bool_or(t, "normalized", &path, true)?,
            lstrip: c.bool_or(t, "lstrip", &path, false)?,
            rstrip: c.bool_or(t, "rstrip", &path, false)?,
        });
    }
    Ok(out)
}

fn template(
    c: &Ctx,
    v: &Value,
    lookup: &dyn Fn(&str) -> Option<u32>,
    vocab_len: usize,
) -> Result<Template, TextError> {
    let seq = |second, type_id| Piece::Sequence { second, type_id };
    if v.is_null() {
        return Ok(Template {
            single: vec![seq(false, 0)],
            pair: vec![seq(false, 0), seq(true, 1)],
        });
    }
    let pair_tok = |key: &str| -> Result<u32, TextError> {
        let p = v.get(key).and_then(Value::as_array);
        let id = p
            .and_then(|p| p.get(1))
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| c.err(&format!("post_processor.{key}"), "expected [token, id]"))?;
        if id as usize >= vocab_len {
            return Err(c.err(
                &format!("post_processor.{key}"),
                format!("id {id} is beyond the vocabulary of {vocab_len}"),
            ));
        }
        Ok(id)
    };
    match c.kind(v, "post_processor")? {
        "BertProcessing" => {
            let (cls, sep) = (pair_tok("cls")?, pair_tok("sep")?);
            let s = |id, t| Piece::Special(vec![id], t);
            Ok(Template {
                single: vec![s(cls, 0), seq(false, 0), s(sep, 0)],
                pair: vec![s(cls, 0), seq(false, 0), s(sep, 0), seq(true, 1), s(sep, 1)],
            })
        }
        "RobertaProcessing" => {
            let (cls, sep) = (pair_tok("cls")?, pair_tok("sep")?);
            let s = |id| Piece::Special(vec![id], 0);
            Ok(Template {
                single: vec![s(cls), seq(false, 0), s(sep)],
                pair: vec![s(cls), seq(false, 0), s(sep), s(sep), seq(true, 0), s(sep)],
            })
        }
        "TemplateProcessing" => {
            let specials = v.get("special_tokens").and_then(Value::as_object);
            let special_ids = |name: &str, path: &str| -> Result<Vec<u32>, TextError> {
                if let Some(ids) = specials
                    .and_then(|m| m.get(name))
                    .and_then(|s| s.get("ids"))
                    .and_then(Value::as_array)
                {
                    return ids
                        .iter()
                        .map(|i| {
                            i.as_u64()
                                .and_then(|i| u32::try_from(i).ok())
                                .filter(|&i| (i as usize) < vocab_len)
                                .ok_or_else(|| {
                                    c.err(
                                        &format!("post_processor.special_tokens.{name}.ids"),
                                        "expected token ids within the vocabulary",
                                    )
                                })
                        })
                        .collect();
                }
                lookup(name)
                    .map(|i| vec![i])
                    .ok_or_else(|| c.err(path, format!("special token '{name}' is neither in special_tokens nor in the vocabulary")))
            };
            let items = |key: &str| -> Result<Vec<Piece>, TextError> {
                let path = format!("post_processor.{key}");
                let list = v
                    .get(key)
                    .and_then(Value::as_array)
                    .ok_or_else(|| c.err(&path, "expected a list of template pieces"))?;
                let mut out = Vec::new();
                for (i, item) in list.iter().enumerate() {
                    let ip = format!("{path}[{i}]");
                    if let Some(s) = item.get("SpecialToken") {
                        let name = c.str(s, "id", &ip)?;
                        let type_id = c.u32(s, "type_id", &ip)?;
                        out.push(Piece::Special(special_ids(name, &ip)?, type_id));
                    } else if let Some(s) = item.get("Sequence") {
                        let second = match c.str(s, "id", &ip)? {
                            "A" => false,
                            "B" => true,
                            other => return Err(c.err(&ip, format!("unknown sequence '{other}'"))),
                        };
                        out.push(seq(second, c.u32(s, "type_id", &ip)?));
                    } else {
                        return Err(c.err(&ip, "expected SpecialToken or Sequence"));
                    }
                }
                Ok(out)
            };
            let t = Template {
                single: items("single")?,
                pair: items("pair")?,
            };
            let count = |p: &[Piece], second| {
                p.iter()
                    .filter(|x| matches!(x, Piece::Sequence { second: s, .. } if *s == second))
                    .count()
            };
            if count(&t.single, false) != 1 || count(&t.single, true) != 0 {
                return Err(c.err(
                    "post_processor.single",
                    "must hold sequence A once and not B",
                ));
            }
            if count(&t.pair, false) != 1 || count(&t.pair, true) != 1 {
                return Err(c.err(
                    "post_processor.pair",
                    "must hold sequences A and B once each",
                ));
            }
            Ok(t)
        }
        k => Err(c.unsupported("post_processor.type", &format!("post-processor {k}"))),
    }
}
