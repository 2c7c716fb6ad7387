//! A sentence-transformers folder's pipeline after the encoder: `modules.json` and the modules
//! it lists (`Pooling` with its `config.json`, `Dense` projections with their weights,
//! `Normalize`), and `sentence_bert_config.json`'s `max_seq_length`: what
//! `SentenceTransformer.encode()` computes from the last hidden state.

use bertc_ir::{DType, PoolMode, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::ImportError;

/// How the token rows become one vector (`1_Pooling/config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Max,
    /// `lasttoken`, `mean_sqrt_len_tokens` or `weightedmean`.
    Mode(PoolMode),
}

/// The activation of a `Dense` module (`activation_function` in its `config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseAct {
    Identity,
    Tanh,
    Relu,
    /// PyTorch's `nn.GELU()`, the erf form.
    Gelu,
}

/// A `Dense` module: `act(x @ weightᵀ + bias)` on the pooled vector, `weight` f32
/// `[out_features, in_features]`, `bias` `[out_features]`.
#[derive(Clone, Debug)]
pub struct Dense {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub act: DenseAct,
}

/// The modules after the encoder, as bertc compiles them.
#[derive(Clone, Debug)]
pub struct SentencePipeline {
    /// The folder holding `modules.json`.
    pub dir: PathBuf,
    /// The pooling modes, concatenated in this order when there are several.
    pub pooling: Vec<Pooling>,
    /// `Dense` modules after the pooling, in order.
    pub dense: Vec<Dense>,
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
    let mut dense = Vec::new();
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
            "Dense" if pooling.is_some() && !normalize => {
                dense.push(read_dense(&dir, path)?);
            }
            "Normalize" if pooling.is_some() && !normalize => normalize = true,
            _ => {
                return Err(err(
                    &modules_file,
                    format!("module {i} ({ty}, '{path}') is not supported after {}: bertc compiles a Transformer, then one Pooling, Dense modules and an optional Normalize", if i == 0 { "the start" } else { "the modules before it" }),
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
        dense,
        normalize,
        max_seq_length,
    }))
}

/// A module's folder: `path` must stay inside `dir`.
fn module_dir(dir: &Path, path: &str, what: &str) -> Result<PathBuf, ImportError> {
    if path.contains("..") || path.starts_with('/') {
        return Err(ImportError::Model {
            file: dir.join("modules.json"),
            msg: format!("{what} path '{path}' is not a plain relative folder"),
        });
    }
    Ok(dir.join(path))
}

/// A `Dense` module's `config.json` and `model.safetensors` (`linear.weight`,
/// `linear.bias`).
fn read_dense(dir: &Path, path: &str) -> Result<Dense, ImportError> {
    let mdir = module_dir(dir, path, "Dense")?;
    let file = mdir.join("config.json");
    let v = read_json(&file)?;
    let bad = |file: &Path, msg: String| ImportError::Model {
        file: file.to_path_buf(),
        msg,
    };
    let dim = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| bad(&file, format!("{k}: expected a positive integer")))
    };
    let (n_in, n_out) = (dim("in_features")?, dim("out_features")?);
    let has_bias = v.get("bias").and_then(Value::as_bool).unwrap_or(true);
    let act_name = v
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("torch.nn.modules.activation.Tanh");
    let act = match act_name.rsplit('.').next().unwrap_or(act_name) {
        "Identity" => DenseAct::Identity,
        "Tanh" => DenseAct::Tanh,
        "ReLU" => DenseAct::Relu,
        "GELU" => DenseAct::Gelu,
        _ => {
            return Err(bad(
                &file,
                format!(
                "activation_function '{act_name}' is not supported (Identity, Tanh, ReLU, GELU)"
            ),
            ))
        }
    };
    let wfile = mdir.join("model.safetensors");
    if !wfile.is_file() {
        let what = if mdir.join("pytorch_model.bin").is_file() {
            "only pytorch_model.bin (a pickle, which bertc does not read); save the model again with a current sentence-transformers, which writes model.safetensors"
        } else {
            "no model.safetensors"
        };
        return Err(bad(&mdir, format!("Dense module: {what}")));
    }
    let mut tensors = HashMap::new();
    crate::safetensors_file::open_safetensors(&wfile, &mut tensors)?;
    let mut take = |name: &str, shape: &[usize]| -> Result<Tensor, ImportError> {
        let (_, t) = tensors
            .remove(name)
            .ok_or_else(|| bad(&wfile, format!("no tensor '{name}'")))?;
        if t.shape != shape || !t.dtype.is_float() {
            return Err(bad(
                &wfile,
                format!(
                    "tensor '{name}' is {:?} {:?}, expected float {shape:?} (in_features {n_in}, out_features {n_out})",
                    t.dtype, t.shape
                ),
            ));
        }
        Ok(if t.dtype == DType::F32 {
            t
        } else {
            Tensor::from_f32(t.shape.clone(), &t.to_f32_vec())
        })
    };
    let weight = take("linear.weight", &[n_out, n_in])?;
    let bias = if has_bias {
        Some(take("linear.bias", &[n_out])?)
    } else {
        None
    };
    Ok(Dense { weight, bias, act })
}

fn read_pooling(dir: &Path, path: &str) -> Result<Vec<Pooling>, ImportError> {
    let file = module_dir(dir, path, "Pooling")?.join("config.json");
    let v = read_json(&file)?;
    // sentence-transformers 5 writes `pooling_mode` (a name or a list, concatenated in its
    // order); earlier versions one flag a mode, concatenated in this order, mean when none
    let modes = [
        ("cls", "pooling_mode_cls_token", Pooling::Cls),
        ("max", "pooling_mode_max_tokens", Pooling::Max),
        ("mean", "pooling_mode_mean_tokens", Pooling::Mean),
        (
            "mean_sqrt_len_tokens",
            "pooling_mode_mean_sqrt_len_tokens",
            Pooling::Mode(PoolMode::MeanSqrtLen),
        ),
        (
            "weightedmean",
            "pooling_mode_weightedmean_tokens",
            Pooling::Mode(PoolMode::WeightedMean),
        ),
        (
            "lasttoken",
            "pooling_mode_lasttoken",
            Pooling::Mode(PoolMode::LastToken),
        ),
    ];
    let named: Vec<&str> = match v.get("pooling_mode") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(other) => {
            return Err(ImportError::Model {
                file,
                msg: format!("pooling_mode: {other} is not a mode name"),
            })
        }
    };
    let on: Vec<_> =
        if named.is_empty() {
            let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
            modes.iter().filter(|(_, k, _)| flag(k)).collect()
        } else {
            let mut on = Vec::new();
            for n in named {
                on.push(modes.iter().find(|(m, _, _)| *m == n).ok_or_else(|| {
                    ImportError::Model {
                        file: file.clone(),
                        msg: format!("pooling_mode '{n}' is unknown"),
                    }
                })?);
            }
            on
        };
    // `include_prompt` does not matter: bertc adds no prompt, so every token is pooled
    Ok(if on.is_empty() {
        vec![Pooling::Mean]
    } else {
        on.into_iter().map(|(_, _, p)| *p).collect()
    })
}
