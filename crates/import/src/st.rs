//! A sentence-transformers folder's pipeline after the encoder: `modules.json` and the modules
//! it lists (`Pooling` with its `config.json`, `Normalize`), and `sentence_bert_config.json`'s
//! `max_seq_length`: what `SentenceTransformer.encode()` computes from the last hidden state.

use serde_json::Value;
use std::path::{Path, PathBuf};

use crate::ImportError;

/// How the token rows become one vector (`1_Pooling/config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Max,
}

/// The modules after the encoder, as bertc compiles them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentencePipeline {
    /// The folder holding `modules.json`.
    pub dir: PathBuf,
    pub pooling: Pooling,
    /// A `Normalize` module: the embedding divided by its L2 norm.
    pub normalize: bool,
    /// `sentence_bert_config.json`'s `max_seq_length`: texts are truncated to it.
    pub max_seq_length: Option<usize>,
}

/// The folder of a model's companion files: the model folder itself, or the folder of an
/// `.onnx` file; for a file in a Hub repository's `onnx/` folder, the repository's.
pub fn companion_dir(model: &Path) -> Option<PathBuf> {
    let dir = if model.is_dir() {
        model.to_path_buf()
    } else {
        model.parent()?.to_path_buf()
    };
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    if !dir.join("config.json").is_file() && dir.file_name().is_some_and(|n| n == "onnx") {
        if let Some(up) = dir.parent().filter(|u| u.join("config.json").is_file()) {
            return Some(up.to_path_buf());
        }
    }
    Some(dir)
}

fn read_json(file: &Path) -> Result<Value, ImportError> {
    let text = std::fs::read_to_string(file).map_err(|source| ImportError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ImportError::Model {
        file: file.to_path_buf(),
        msg: format!("not JSON: {e}"),
    })
}

/// The pipeline of the sentence-transformers folder `model` belongs to, or `None` when there
/// is no `modules.json`.
pub fn read(model: &Path) -> Result<Option<SentencePipeline>, ImportError> {
    let Some(dir) = companion_dir(model) else {
        return Ok(None);
    };
    let modules_file = dir.join("modules.json");
    if !modules_file.is_file() {
        return Ok(None);
    }
    let err = |file: &Path, msg: String| ImportError::Model {
        file: file.to_path_buf(),
        msg,
    };
    let modules = read_json(&modules_file)?;
    let list = modules
        .as_array()
        .ok_or_else(|| err(&modules_file, "expected a list of modules".into()))?;
    let mut pooling = None;
    let mut normalize = false;
    for (i, m) in list.iter().enumerate() {
        let ty = m
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| err(&modules_file, format!("module {i}: no \"type\"")))?;
        let path = m.get("path").and_then(Value::as_str).unwrap_or("");
        let short = ty.rsplit('.').next().unwrap_or(ty);
        match short {
            "Transformer" if i == 0 => {}
            "Pooling" if pooling.is_none() => {
                pooling = Some(read_pooling(&dir, path)?);
            }
            "Normalize" if pooling.is_some() && !normalize => normalize = true,
            _ => {
                return Err(err(
                    &modules_file,
                    format!("module {i} ({ty}, '{path}') is not supported after {}: bertc compiles a Transformer, then one Pooling, then an optional Normalize", if i == 0 { "the start" } else { "the modules before it" }),
                ))
            }
        }
    }
    let pooling = pooling.ok_or_else(|| err(&modules_file, "no Pooling module".into()))?;
    let mut max_seq_length = None;
    let sb = dir.join("sentence_bert_config.json");
    if sb.is_file() {
        let v = read_json(&sb)?;
        if v.get("do_lower_case").and_then(Value::as_bool) == Some(true) {
            return Err(err(
                &sb,
                "do_lower_case: lowercasing before the tokenizer is not supported".into(),
            ));
        }
        match v.get("max_seq_length") {
            None | Some(Value::Null) => {}
            Some(m) => {
                let n = m
                    .as_u64()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| err(&sb, format!("max_seq_length: {m} is not a length")))?;
                max_seq_length = Some(n as usize);
            }
        }
    }
    Ok(Some(SentencePipeline {
        dir,
        pooling,
        normalize,
        max_seq_length,
    }))
}

fn read_pooling(dir: &Path, path: &str) -> Result<Pooling, ImportError> {
    if path.contains("..") || path.starts_with('/') {
        return Err(ImportError::Model {
            file: dir.join("modules.json"),
            msg: format!("Pooling path '{path}' is not a plain relative folder"),
        });
    }
    let file = dir.join(path).join("config.json");
    let v = read_json(&file)?;
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let modes = [
        ("pooling_mode_mean_tokens", Some(Pooling::Mean)),
        ("pooling_mode_cls_token", Some(Pooling::Cls)),
        ("pooling_mode_max_tokens", Some(Pooling::Max)),
        ("pooling_mode_mean_sqrt_len_tokens", None),
        ("pooling_mode_weightedmean_tokens", None),
        ("pooling_mode_lasttoken", None),
    ];
    let on: Vec<_> = modes.iter().filter(|(k, _)| flag(k)).collect();
    match on.as_slice() {
        // `include_prompt` does not matter: bertc adds no prompt, so every token is pooled
        [(_, Some(p))] => Ok(*p),
        [(k, None)] => Err(ImportError::Model {
            file,
            msg: format!("{k} is not supported (supported: mean, cls and max pooling)"),
        }),
        [] => Err(ImportError::Model {
            file,
            msg: "no pooling mode is set".into(),
        }),
        _ => Err(ImportError::Model {
            file,
            msg: format!(
                "several pooling modes ({}) concatenated are not supported",
                on.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}
