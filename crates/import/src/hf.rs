//! Hugging Face import: a folder with `config.json` and `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`) for BERT, RoBERTa / XLM-R, DistilBERT and ELECTRA encoders,
//! built directly into encoder-level ops. f32 weights are views of the memory-mapped files.

use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::ImportError;
use bertc_ir::{
    BinaryOp, DType, Dim, GeluApprox, Graph, NodeId, Op, Positions, Tensor, TensorType, TokenTypes,
    UnaryOp,
};

/// The encoder families the Hugging Face importer knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Bert,
    Roberta,
    DistilBert,
    Electra,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::DistilBert => "distilbert",
            Family::Electra => "electra",
        }
    }
}

/// The hyper-parameters of an encoder, as read from `config.json`.
#[derive(Clone, Debug)]
pub struct Config {
    pub family: Family,
    pub architecture: String,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub embedding_size: usize,
    pub act: GeluApproxOrRelu,
    pub eps: f32,
    pub pad_token_id: i64,
    pub num_labels: Option<usize>,
}

/// Activation of the FFN block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluApproxOrRelu {
    Gelu(GeluApprox),
    Relu,
}

/// Resolves the folder holding `config.json`: the folder itself or, for sentence-transformers
/// layouts, the Transformer module's folder named in `modules.json`.
pub fn model_dir(dir: &Path) -> PathBuf {
    if dir.join("config.json").exists() {
        return dir.to_path_buf();
    }
    if let Ok(s) = std::fs::read_to_string(dir.join("modules.json")) {
        if let Ok(Json::Array(mods)) = serde_json::from_str::<Json>(&s) {
            for m in mods {
                let ty = m.get("type").and_then(Json::as_str).unwrap_or("");
                let path = m.get("path").and_then(Json::as_str).unwrap_or("");
                if ty.ends_with("Transformer") && !path.is_empty() {
                    return dir.join(path);
                }
            }
        }
    }
    dir.to_path_buf()
}

pub fn read_config(dir: &Path) -> Result<Config, ImportError> {
    let file = dir.join("config.json");
    let text = std::fs::read_to_string(&file).map_err(|source| ImportError::Io {
        file: file.clone(),
        source,
    })?;
    let j: Json = serde_json::from_str(&text).map_err(|e| ImportError::Model {
        file: file.clone(),
        msg: format!("invalid JSON: {e}"),
    })?;
    let err = |msg: String| ImportError::Model {
        file: file.clone(),
        msg,
    };
    let get_usize = |k: &str| -> Result<usize, ImportError> {
        j.get(k)
            .and_then(Json::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| {
                err(format!(
                    "missing or invalid key '{k}' (a non-negative integer)"
                ))
            })
    };
    let model_type = j
        .get("model_type")
        .and_then(Json::as_str)
        .ok_or_else(|| err("missing key 'model_type'".into()))?;
    let family = match model_type {
        "bert" => Family::Bert,
        "roberta" | "xlm-roberta" | "camembert" => Family::Roberta,
        "distilbert" => Family::DistilBert,
        "electra" => Family::Electra,
        other => return Err(err(format!("unsupported model_type '{other}' (supported: bert, roberta, xlm-roberta, distilbert, electra)"))),
    };
    let architecture = j
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_string();
    let act_name = if family == Family::DistilBert {
        "activation"
    } else {
        "hidden_act"
    };
    let act = match j.get(act_name).and_then(Json::as_str).unwrap_or("gelu") {
        "gelu" => GeluApproxOrRelu::Gelu(GeluApprox::Erf),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => GeluApproxOrRelu::Gelu(GeluApprox::Tanh),
        "relu" => GeluApproxOrRelu::Relu,
        other => return Err(err(format!("unsupported activation '{other}'"))),
    };
    if let Some(p) = j.get("position_embedding_type").and_then(Json::as_str) {
        if p != "absolute" {
            return Err(err(format!(
                "unsupported position_embedding_type '{p}' (only absolute)"
            )));
        }
    }
    let (layers, hidden, heads, intermediate) = if family == Family::DistilBert {
        (
            get_usize("n_layers")?,
            get_usize("dim")?,
            get_usize("n_heads")?,
            get_usize("hidden_dim")?,
        )
    } else {
        (
            get_usize("num_hidden_layers")?,
            get_usize("hidden_size")?,
            get_usize("num_attention_heads")?,
            get_usize("intermediate_size")?,
        )
    };
    if heads == 0 || hidden % heads != 0 {
        return Err(err(format!(
            "hidden size {hidden} is not a multiple of {heads} heads"
        )));
    }
    let eps = match family {
        Family::DistilBert => 1e-12,
        _ => j
            .get("layer_norm_eps")
            .and_then(Json::as_f64)
            .ok_or_else(|| err("missing or invalid key 'layer_norm_eps'".into()))?
            as f32,
    };
    let num_labels = if architecture.ends_with("ForSequenceClassification") {
        Some(match j.get("id2label").and_then(Json::as_object) {
            Some(m) => m.len(),
            None => j.get("num_labels").and_then(Json::as_u64).unwrap_or(2) as usize,
        })
    } else {
        None
    };
    Ok(Config {
        family,
        architecture,
        layers,
        hidden,
        heads,
        intermediate,
        vocab: get_usize("vocab_size")?,
        max_positions: get_usize("max_position_embeddings")?,
        type_vocab: if family == Family::DistilBert {
            0
        } else {
            get_usize("type_vocab_size")?
        },
        embedding_size: if family == Family::Electra {
            get_usize("embedding_size")?
        } else {
            hidden
        },
        act,
        eps,
        pad_token_id: j
            .get("pad_token_id")
            .and_then(Json::as_i64)
            .unwrap_or(if family == Family::Roberta { 1 } else { 0 }),
        num_labels,
    })
}

/// Tensors of one or more safetensors files, by name.
struct Weights {
    tensors: HashMap<String, (PathBuf, Tensor)>,
    prefix: String,
}

impl Weights {
    fn open(dir: &Path) -> Result<Weights, ImportError> {
        let mut tensors = HashMap::new();
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.exists() {
            crate::safetensors_file::open_safetensors(&single, &mut tensors)?;
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|source| ImportError::Io {
                file: index.clone(),
                source,
            })?;
            let j: Json = serde_json::from_str(&text).map_err(|e| ImportError::Model {
                file: index.clone(),
                msg: format!("invalid JSON: {e}"),
            })?;
            let map = j
                .get("weight_map")
                .and_then(Json::as_object)
                .ok_or_else(|| ImportError::Model {
                    file: index.clone(),
                    msg: "missing 'weight_map'".into(),
                })?;
            let mut files: Vec<&str> = map.values().filter_map(Json::as_str).collect();
            files.sort_unstable();
            files.dedup();
            for f in files {
                if Path::new(f)
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(ImportError::Model {
                        file: index.clone(),
                        msg: format!("shard '{f}' must be a plain file name"),
                    });
                }
                crate::safetensors_file::open_safetensors(&dir.join(f), &mut tensors)?;
            }
        } else {
            return Err(ImportError::Model {
                file: dir.to_path_buf(),
                msg: "no model.safetensors or model.safetensors.index.json in the folder".into(),
            });
        }
        let prefix = ["", "bert.", "roberta.", "distilbert.", "electra.", "model."]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
            .ok_or_else(|| ImportError::Model {
                file: dir.to_path_buf(),
                msg:
                    "no tensor 'embeddings.word_embeddings.weight' (with or without a model prefix)"
                        .into(),
            })?
            .to_string();
        Ok(Weights { tensors, prefix })
    }

    fn find(&self, names: &[String]) -> Option<(&str, &(PathBuf, Tensor))> {
        names
            .iter()
            .find_map(|n| self.tensors.get_key_value(n).map(|(k, v)| (k.as_str(), v)))
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(&format!("{}{name}", self.prefix))
            || self.tensors.contains_key(name)
    }
}

struct Build<'a> {
    g: Graph,
    w: &'a Weights,
    dir: PathBuf,
}

impl Build<'_> {
    /// A weight as an f32 constant of the expected shape. `name` is relative to the model
    /// prefix; `alts` are other spellings (older checkpoints).
    fn weight(
        &mut self,
        name: &str,
        shape: &[usize],
        alts: &[&str],
    ) -> Result<NodeId, ImportError> {
        let mut names = vec![format!("{}{name}", self.w.prefix), name.to_string()];
        names.extend(alts.iter().map(|a| format!("{}{a}", self.w.prefix)));
        let (key, (file, t)) = self.w.find(&names).ok_or_else(|| ImportError::Model {
            file: self.dir.clone(),
            msg: format!("missing tensor '{}{name}'", self.w.prefix),
        })?;
        if t.shape != shape {
            return Err(ImportError::Tensor {
                file: file.clone(),
                name: key.to_string(),
                msg: format!("has shape {:?}, the config implies {:?}", t.shape, shape),
            });
        }
        let t = match t.dtype {
            DType::F32 => t.clone(),
            d if d.is_float() => Tensor::from_f32(t.shape.clone(), &t.to_f32_vec()),
            d => {
                return Err(ImportError::Tensor {
                    file: file.clone(),
                    name: key.to_string(),
                    msg: format!("has dtype {d}, expected a float type"),
                })
            }
        };
        let key = key.to_string();
        Ok(self.g.add_const(&key, t))
    }

    fn add(&mut self, op: Op, ins: &[NodeId], name: &str) -> Result<NodeId, ImportError> {
        self.g.add(op, ins, name).map_err(|source| ImportError::Ir {
            file: self.dir.clone(),
            source,
        })
    }

    fn linear(
        &mut self,
        x: NodeId,
        name: &str,
        out: usize,
        inp: usize,
    ) -> Result<NodeId, ImportError> {
        let w = self.weight(&format!("{name}.weight"), &[out, inp], &[])?;
        let b = self.weight(&format!("{name}.bias"), &[out], &[])?;
        self.add(Op::Linear, &[x, w, b], name)
    }

    fn layer_norm(
        &mut self,
        x: NodeId,
        name: &str,
        h: usize,
        eps: f32,
    ) -> Result<NodeId, ImportError> {
        let g = self.weight(&format!("{name}.weight"), &[h], &[&format!("{name}.gamma")])?;
        let b = self.weight(&format!("{name}.bias"), &[h], &[&format!("{name}.beta")])?;
        self.add(Op::LayerNorm { eps }, &[x, g, b], name)
    }
}

/// Imports a Hugging Face model folder.
pub fn import_folder(dir: &Path) -> Result<Graph, ImportError> {
    let dir = model_dir(dir);
    let cfg = read_config(&dir)?;
    let w = Weights::open(&dir)?;
    build(&cfg, &w, &dir)
}

fn build(cfg: &Config, w: &Weights, dir: &Path) -> Result<Graph, ImportError> {
    let mut b = Build {
        g: Graph::new(),
        w,
        dir: dir.to_path_buf(),
    };
    let ids_ty = TensorType::new(DType::I64, vec![Dim::BATCH, Dim::SEQ]);
    let ids = b.g.add_input("input_ids", ids_ty.clone());
    let mask = b.g.add_input("attention_mask", ids_ty.clone());
    let (h, e) = (cfg.hidden, cfg.embedding_size);
    let has_types = cfg.type_vocab > 0 && w.has("embeddings.token_type_embeddings.weight");
    let types = match (has_types, cfg.type_vocab) {
        (false, _) => TokenTypes::Absent,
        (true, 1) => TokenTypes::Zero,
        (true, _) => TokenTypes::Input,
    };
    let mut emb_in = vec![ids];
    if types == TokenTypes::Input {
        emb_in.push(b.g.add_input("token_type_ids", ids_ty));
    }
    emb_in.push(b.weight("embeddings.word_embeddings.weight", &[cfg.vocab, e], &[])?);
    emb_in.push(b.weight(
        "embeddings.position_embeddings.weight",
        &[cfg.max_positions, e],
        &[],
    )?);
    if types != TokenTypes::Absent {
        emb_in.push(b.weight(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab, e],
            &[],
        )?);
    }
    let positions = match cfg.family {
        Family::Roberta => Positions::PaddingAware {
            pad: cfg.pad_token_id,
        },
        _ => Positions::Arange { offset: 0 },
    };
    b.g.max_seq = Some(positions.max_seq(cfg.max_positions));
    let emb = b.add(
        Op::Embedding {
            positions,
            types,
            sum_qdq: None,
        },
        &emb_in,
        "embeddings",
    )?;
    let mut x = b.layer_norm(emb, "embeddings.LayerNorm", e, cfg.eps)?;
    if cfg.family == Family::Electra && e != h || w.has("embeddings_project.weight") {
        x = b.linear(x, "embeddings_project", h, e)?;
    }
    let head_dim = h / cfg.heads;
    let scale = (head_dim as f64).powf(-0.5) as f32;
    let act = match cfg.act {
        GeluApproxOrRelu::Gelu(approx) => Op::Gelu { approx },
        GeluApproxOrRelu::Relu => Op::Unary(UnaryOp::Relu),
    };
    for l in 0..cfg.layers {
        let n = |s: &str| match cfg.family {
            Family::DistilBert => format!("transformer.layer.{l}.{s}"),
            _ => format!("encoder.layer.{l}.{s}"),
        };
        let names: [String; 8] = match cfg.family {
            Family::DistilBert => [
                n("attention.q_lin"),
                n("attention.k_lin"),
                n("attention.v_lin"),
                n("attention.out_lin"),
                n("sa_layer_norm"),
                n("ffn.lin1"),
                n("ffn.lin2"),
                n("output_layer_norm"),
            ],
            _ => [
                n("attention.self.query"),
                n("attention.self.key"),
                n("attention.self.value"),
                n("attention.output.dense"),
                n("attention.output.LayerNorm"),
                n("intermediate.dense"),
                n("output.dense"),
                n("output.LayerNorm"),
            ],
        };
        let q = b.linear(x, &names[0], h, h)?;
        let k = b.linear(x, &names[1], h, h)?;
        let v = b.linear(x, &names[2], h, h)?;
        let a = b.add(
            Op::Attention {
                heads: cfg.heads,
                scale,
                quant: Default::default(),
            },
            &[q, k, v, mask],
            &n("attention"),
        )?;
        let o = b.linear(a, &names[3], h, h)?;
        let r = b.add(Op::Binary(BinaryOp::Add), &[o, x], &n("attention.residual"))?;
        x = b.layer_norm(r, &names[4], h, cfg.eps)?;
        let up = b.linear(x, &names[5], cfg.intermediate, h)?;
        let act_out = b.add(act.clone(), &[up], &n("activation"))?;
        let down = b.linear(act_out, &names[6], h, cfg.intermediate)?;
        let r = b.add(Op::Binary(BinaryOp::Add), &[down, x], &n("output.residual"))?;
        x = b.layer_norm(r, &names[7], h, cfg.eps)?;
    }
    let last = x;
    let mut outputs: Vec<(String, NodeId)> = vec![("last_hidden_state".into(), last)];
    let has_pooler = cfg.family != Family::DistilBert && w.has("pooler.dense.weight");
    if has_pooler {
        let zero = b.g.add_const("cls_index", Tensor::from_i64(vec![], &[0]));
        let cls = b.add(Op::Gather { axis: 1 }, &[last, zero], "pooler.cls")?;
        let d = b.linear(cls, "pooler.dense", h, h)?;
        let p = b.add(Op::Unary(UnaryOp::Tanh), &[d], "pooler_output")?;
        outputs.push(("pooler_output".into(), p));
    }
    if let Some(labels) = cfg.num_labels {
        if cfg.family != Family::Bert || !has_pooler {
            return Err(ImportError::Model {
                file: dir.join("config.json"),
                msg: format!("the classification head of '{}' is not supported (only BertForSequenceClassification)", cfg.architecture),
            });
        }
        let pooled = outputs[1].1;
        let wc = b.g.add_const(
            "classifier.weight",
            tensor_named(w, "classifier.weight", &[labels, h], dir)?,
        );
        let bc = b.g.add_const(
            "classifier.bias",
            tensor_named(w, "classifier.bias", &[labels], dir)?,
        );
        let logits = b.add(Op::Linear, &[pooled, wc, bc], "classifier")?;
        outputs.insert(0, ("logits".into(), logits));
    }
    b.g.outputs = outputs;
    b.g.remove_dead();
    b.g.verify().map_err(|source| ImportError::Ir {
        file: dir.to_path_buf(),
        source,
    })?;
    Ok(b.g)
}

/// A tensor by its exact name (outside the encoder prefix), converted to f32.
fn tensor_named(
    w: &Weights,
    name: &str,
    shape: &[usize],
    dir: &Path,
) -> Result<Tensor, ImportError> {
    let (file, t) = w.tensors.get(name).ok_or_else(|| ImportError::Model {
        file: dir.to_path_buf(),
        msg: format!("missing tensor '{name}'"),
    })?;
    if t.shape != shape || !t.dtype.is_float() {
        return Err(ImportError::Tensor {
            file: file.clone(),
            name: name.into(),
            msg: format!("has {}{:?}, expected float {:?}", t.dtype, t.shape, shape),
        });
    }
    Ok(if t.dtype == DType::F32 {
        t.clone()
    } else {
        Tensor::from_f32(t.shape.clone(), &t.to_f32_vec())
    })
}

/// The class names of a classifier, by logit index, from the `id2label` of the
/// `config.json` beside the model (empty when there is none); a missing index is `LABEL_i`.
pub fn id2label(model: &Path) -> Result<Vec<String>, ImportError> {
    let Some(file) = crate::st::companion_dir(model)
        .map(|d| d.join("config.json"))
        .filter(|f| f.is_file())
    else {
        return Ok(Vec::new());
    };
    let err = |msg: String| ImportError::Model {
        file: file.clone(),
        msg,
    };
    let text = std::fs::read_to_string(&file).map_err(|source| ImportError::Io {
        file: file.clone(),
        source,
    })?;
    let j: Json = serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
    let Some(map) = j.get("id2label").and_then(Json::as_object) else {
        return Ok(Vec::new());
    };
    let mut labels = vec![None; map.len()];
    for (k, v) in map {
        let i = k
            .parse::<usize>()
            .ok()
            .filter(|&i| i < map.len())
            .ok_or_else(|| {
                err(format!(
                    "id2label: key '{k}' is not an index below {}",
                    map.len()
                ))
            })?;
        let name = v
            .as_str()
            .ok_or_else(|| err(format!("id2label.{k}: expected a string")))?;
        labels[i] = Some(name.to_string());
    }
    Ok(labels
        .into_iter()
        .enumerate()
        .map(|(i, l)| l.unwrap_or_else(|| format!("LABEL_{i}")))
        .collect())
}
