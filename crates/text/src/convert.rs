//! A folder with a tokenizer's vocabulary files but no `tokenizer.json` (Google's BERT
//! checkpoints, the small BERTs, models saved by old transformers versions): the
//! `tokenizer.json` that transformers' fast tokenizer makes of them, from a WordPiece
//! `vocab.txt` (its `BertConverter`) or RoBERTa's `vocab.json` and `merges.txt`
//! (`RobertaConverter`), with `tokenizer_config.json` and `special_tokens_map.json`. One text
//! serves both readers: the spec (`TextSpec::from_json`) and the runtime's Hugging Face
//! tokenizer.

use serde_json::{json, Map, Value};
use std::path::Path;

use crate::TextError;

/// The `tokenizer.json` text for the folder `dir` from its vocabulary files (WordPiece
/// `vocab.txt`, else byte-level BPE `vocab.json` + `merges.txt`, else XLM-RoBERTa's
/// SentencePiece model: `crate::sentencepiece`), or `None` when it has none.
pub fn tokenizer_json(dir: &Path) -> Result<Option<(String, String)>, TextError> {
    if let Some(t) = wordpiece_tokenizer_json(dir)? {
        return Ok(Some((t, dir.join("vocab.txt").display().to_string())));
    }
    if let Some(t) = bpe_tokenizer_json(dir)? {
        return Ok(Some((t, dir.join("vocab.json").display().to_string())));
    }
    crate::sentencepiece::tokenizer_json(dir)
}

/// `tokenizer_class` values that are WordPiece tokenizers converted as BERT's.
const WORDPIECE_CLASSES: &[&str] = &[
    "BertTokenizer",
    "DistilBertTokenizer",
    "ElectraTokenizer",
    "MobileBertTokenizer",
    "SqueezeBertTokenizer",
    "LayoutLMTokenizer",
    "FunnelTokenizer",
];

fn read_json(path: &Path) -> Result<Option<Value>, TextError> {
    if !path.is_file() {
        return Ok(None);
    }
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| TextError::Io {
        file: file.clone(),
        msg: e.to_string(),
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TextError::Json {
            file,
            msg: e.to_string(),
        })
}

/// A special token as transformers writes it: a string, or an object with `content`.
fn token_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The `tokenizer.json` text for the WordPiece folder `dir`, or `None` when it has no
/// `vocab.txt`.
pub fn wordpiece_tokenizer_json(dir: &Path) -> Result<Option<String>, TextError> {
    let vocab_file = dir.join("vocab.txt");
    if !vocab_file.is_file() {
        return Ok(None);
    }
    let vfile = vocab_file.display().to_string();
    let config_file = dir.join("tokenizer_config.json");
    let cfile = config_file.display().to_string();
    let config = read_json(&config_file)?.unwrap_or(Value::Null);
    let spec_err = |file: &str, key: &str, msg: String| TextError::Spec {
        file: file.to_string(),
        key: key.to_string(),
        msg,
    };
    if let Some(class) = config.get("tokenizer_class").and_then(Value::as_str) {
        let base = class.strip_suffix("Fast").unwrap_or(class);
        if !WORDPIECE_CLASSES.contains(&base) {
            return Err(TextError::Unsupported {
                file: cfile,
                key: "tokenizer_class".into(),
                kind: format!("{class} from vocab.txt without a tokenizer.json (a vocab.txt folder is read as BERT's WordPiece: {})", WORDPIECE_CLASSES.join(", ")),
            });
        }
    }
    if dir.join("added_tokens.json").is_file() {
        return Err(TextError::Unsupported {
            file: dir.join("added_tokens.json").display().to_string(),
            key: "(root)".into(),
            kind: "added tokens beside a vocab.txt".into(),
        });
    }
    let flag = |key: &str, default: bool| -> Result<bool, TextError> {
        match config.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(spec_err(&cfile, key, "expected true or false".into())),
        }
    };
    let lowercase = flag("do_lower_case", true)?;
    let chinese = flag("tokenize_chinese_chars", true)?;
    let strip_accents = match config.get("strip_accents") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Bool(b)) => Value::Bool(*b),
        Some(_) => {
            return Err(spec_err(
                &cfile,
                "strip_accents",
                "expected true, false or null".into(),
            ))
        }
    };
    let text = std::fs::read_to_string(&vocab_file).map_err(|e| TextError::Io {
        file: vfile.clone(),
        msg: e.to_string(),
    })?;
    // as transformers' `load_vocab`: one token a line (Python's universal newlines: `\n`,
    // `\r\n` or `\r`), the newline removed, a later line with the same token taking the id
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let mut vocab = Map::new();
    for (i, t) in lines.iter().enumerate() {
        vocab.insert((*t).to_string(), json!(i));
    }
    let specials = read_json(&dir.join("special_tokens_map.json"))?.unwrap_or(Value::Null);
    let special = |key: &str, default: &str| special_token(&config, &specials, key, default);
    let names = [
        ("pad_token", "[PAD]"),
        ("unk_token", "[UNK]"),
        ("cls_token", "[CLS]"),
        ("sep_token", "[SEP]"),
        ("mask_token", "[MASK]"),
    ];
    let tokens: Vec<String> = names.iter().map(|(k, d)| special(k, d)).collect();
    let id = |t: &str| vocab.get(t).and_then(Value::as_u64);
    let (unk, cls, sep) = (&tokens[1], &tokens[2], &tokens[3]);
    require_tokens(
        &vocab,
        &vfile,
        &[(unk, "unk_token"), (cls, "cls_token"), (sep, "sep_token")],
    )?;
    let extra: Vec<String> = specials
        .get("additional_special_tokens")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(token_str).collect())
        .unwrap_or_default();
    let added = added_specials(
        &vocab,
        tokens.iter().chain(&extra).cloned(),
        |_| false,
        false,
    );
    let st = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": chinese, "strip_accents": strip_accents,
                       "lowercase": lowercase},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [st(cls, 0), seq("A", 0), st(sep, 0)],
            "pair": [st(cls, 0), seq("A", 0), st(sep, 0), seq("B", 1), st(sep, 1)],
            "special_tokens": {
                cls.as_str(): {"id": cls, "ids": [id(cls)], "tokens": [cls]},
                sep.as_str(): {"id": sep, "ids": [id(sep)], "tokens": [sep]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": unk, "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    });
    Ok(Some(tok.to_string()))
}

/// Checks that each `(token, config key)` is in `vocab` (`file` names it in the error).
fn require_tokens(
    vocab: &Map<String, Value>,
    file: &str,
    tokens: &[(&str, &str)],
) -> Result<(), TextError> {
    match tokens.iter().find(|(t, _)| !vocab.contains_key(*t)) {
        Some((t, key)) => Err(TextError::Spec {
            file: file.to_string(),
            key: key.to_string(),
            msg: format!("the special token '{t}' is not in the vocabulary"),
        }),
        None => Ok(()),
    }
}

/// `added_tokens` for the special tokens `tokens` that are in `vocab`, by id, each special;
/// `lstrip` says which absorb the space before them (they are then not normalized either).
fn added_specials(
    vocab: &Map<String, Value>,
    tokens: impl IntoIterator<Item = String>,
    lstrip: impl Fn(&str) -> bool,
    normalized: bool,
) -> Vec<Value> {
    let mut added: Vec<(u64, String)> = tokens
        .into_iter()
        .filter_map(|t| vocab.get(&t).and_then(Value::as_u64).map(|i| (i, t)))
        .collect();
    added.sort();
    added.dedup();
    added
        .into_iter()
        .map(|(i, t)| {
            let l = lstrip(&t);
            json!({"id": i, "content": t, "single_word": false, "lstrip": l,
                   "rstrip": false, "normalized": normalized && !l, "special": true})
        })
        .collect()
}

/// `tokenizer_class` values that are byte-level BPE tokenizers converted as RoBERTa's.
const BPE_CLASSES: &[&str] = &["RobertaTokenizer", "LongformerTokenizer", "BartTokenizer"];

/// The config's (or the special tokens map's) special token `key`, else `default`.
fn special_token(config: &Value, specials: &Value, key: &str, default: &str) -> String {
    specials
        .get(key)
        .and_then(token_str)
        .or_else(|| config.get(key).and_then(token_str))
        .unwrap_or_else(|| default.to_string())
}

/// The `tokenizer.json` text for the byte-level BPE folder `dir` (`vocab.json`,
/// `merges.txt`), as transformers' `RobertaTokenizerFast` converts it, or `None` when it has
/// no such files.
pub fn bpe_tokenizer_json(dir: &Path) -> Result<Option<String>, TextError> {
    let (vocab_file, merges_file) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if !vocab_file.is_file() || !merges_file.is_file() {
        return Ok(None);
    }
    let config_file = dir.join("tokenizer_config.json");
    let cfile = config_file.display().to_string();
    let config = read_json(&config_file)?.unwrap_or(Value::Null);
    let class = config
        .get("tokenizer_class")
        .and_then(Value::as_str)
        .unwrap_or("RobertaTokenizer");
    if !BPE_CLASSES.contains(&class.strip_suffix("Fast").unwrap_or(class)) {
        return Err(TextError::Unsupported {
            file: cfile,
            key: "tokenizer_class".into(),
            kind: format!("{class} from vocab.json and merges.txt without a tokenizer.json (such a folder is read as RoBERTa's byte-level BPE: {})", BPE_CLASSES.join(", ")),
        });
    }
    let vfile = vocab_file.display().to_string();
    let vocab = read_json(&vocab_file)?.unwrap_or(Value::Null);
    let Some(vocab) = vocab.as_object() else {
        return Err(TextError::Spec {
            file: vfile,
            key: "(root)".into(),
            msg: "expected an object of tokens and ids".into(),
        });
    };
    let mfile = merges_file.display().to_string();
    let text = std::fs::read_to_string(&merges_file).map_err(|e| TextError::Io {
        file: mfile.clone(),
        msg: e.to_string(),
    })?;
    // as transformers' `RobertaTokenizer`: the first line (`#version`) and the last (empty
    // after the final newline) are dropped, each other line split at whitespace
    let lines: Vec<&str> = text.split('\n').collect();
    let mut merges = Vec::new();
    for (i, l) in lines
        .iter()
        .enumerate()
        .take(lines.len().saturating_sub(1))
        .skip(1)
    {
        let parts: Vec<&str> = l.split_whitespace().collect();
        match parts[..] {
            [a, b] => merges.push(json!([a, b])),
            _ => {
                return Err(TextError::Spec {
                    file: mfile,
                    key: format!("line {}", i + 1),
                    msg: "expected two tokens".into(),
                })
            }
        }
    }
    let flag =
        |key: &str, default: bool| config.get(key).and_then(Value::as_bool).unwrap_or(default);
    let prefix = flag("add_prefix_space", false);
    let trim = flag("trim_offsets", true);
    let specials = read_json(&dir.join("special_tokens_map.json"))?.unwrap_or(Value::Null);
    let tok = |key: &str, default: &str| special_token(&config, &specials, key, default);
    let (cls, sep) = (tok("cls_token", "<s>"), tok("sep_token", "</s>"));
    let id = |t: &str| vocab.get(t).and_then(Value::as_u64);
    require_tokens(vocab, &vfile, &[(&cls, "cls_token"), (&sep, "sep_token")])?;
    let mask = tok("mask_token", "<mask>");
    // the mask token absorbs the space before it (RobertaTokenizer's `lstrip=True`)
    let names = [
        tok("bos_token", "<s>"),
        tok("pad_token", "<pad>"),
        tok("eos_token", "</s>"),
        tok("unk_token", "<unk>"),
        cls.clone(),
        sep.clone(),
        mask.clone(),
    ];
    let added = added_specials(vocab, names, |t| t == mask, true);
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true,
                          "use_regex": true},
        "post_processor": {"type": "RobertaProcessing", "sep": [sep, id(&sep)],
                           "cls": [cls, id(&cls)], "trim_offsets": trim,
                           "add_prefix_space": prefix},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
                  "byte_fallback": false, "ignore_merges": false, "vocab": vocab,
                  "merges": merges},
    });
    Ok(Some(tok.to_string()))
}
