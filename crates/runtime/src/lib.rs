//! What a program that embeds a bertc artifact needs besides the artifact itself: loading it
//! (`Artifact`, with `tokenize` and `Model::run_text` when the artifact has its tokenizer
//! compiled in), the parsing of the token-id text format every bertc program reads, and pooling
//! helpers. With the default feature `hf-tokenizers`, also `Tokenizer`: a model's
//! `tokenizer.json` through the Hugging Face `tokenizers` crate, which bertc itself needs
//! before any artifact exists (calibration text, `bertc run --text` through the interpreter);
//! a program that only runs artifacts builds this crate with `default-features = false`. This
//! crate never depends on the compiler or on Cranelift.

mod artifact;

pub use artifact::{Api, Artifact, Library, Model, TextApi};

#[cfg(feature = "hf-tokenizers")]
use std::path::Path;

/// Errors of the runtime helpers.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{file}: cannot load the tokenizer: {msg}")]
    Tokenizer { file: String, msg: String },
    #[error("cannot tokenize {text:?}: {msg}")]
    Encode { text: String, msg: String },
    #[error("{file}: {msg}")]
    Artifact { file: String, msg: String },
    #[error("{0}")]
    Run(String),
    #[error("{source_name} line {line}: {msg}")]
    Parse {
        source_name: String,
        line: usize,
        msg: String,
    },
}

/// One tokenized sequence: ids, attention mask and token type ids, of equal length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub type_ids: Vec<i64>,
}

#[cfg(feature = "hf-tokenizers")]
/// A model's tokenizer, with the truncation and padding of `tokenizer.json` switched off so
/// that every text keeps its own length (as transformers' `AutoTokenizer` does by default).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

#[cfg(feature = "hf-tokenizers")]
impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Tokenizer, RuntimeError> {
        let err = |msg: String| RuntimeError::Tokenizer {
            file: path.display().to_string(),
            msg,
        };
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        Tokenizer::new(inner, &path.display().to_string())
    }

    /// A tokenizer from the text of a `tokenizer.json`; `source` names it in errors.
    pub fn from_json(text: &str, source: &str) -> Result<Tokenizer, RuntimeError> {
        let inner: tokenizers::Tokenizer =
            text.parse()
                .map_err(|e: tokenizers::Error| RuntimeError::Tokenizer {
                    file: source.to_string(),
                    msg: e.to_string(),
                })?;
        Tokenizer::new(inner, source)
    }

    fn new(mut inner: tokenizers::Tokenizer, source: &str) -> Result<Tokenizer, RuntimeError> {
        let err = |msg: String| RuntimeError::Tokenizer {
            file: source.to_string(),
            msg,
        };
        inner
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        Ok(Tokenizer { inner })
    }

    /// Tokenizes one text, or a pair of texts (`[CLS] A [SEP] B [SEP]` for BERT), with the
    /// model's special tokens.
    pub fn encode(&self, text: &str, pair: Option<&str>) -> Result<Encoding, RuntimeError> {
        let enc = match pair {
            Some(p) => self.inner.encode((text, p), true),
            None => self.inner.encode(text, true),
        }
        .map_err(|e| RuntimeError::Encode {
            text: text.to_string(),
            msg: e.to_string(),
        })?;
        Ok(Encoding {
            ids: enc.get_ids().iter().map(|&v| v as i64).collect(),
            attention_mask: enc.get_attention_mask().iter().map(|&v| v as i64).collect(),
            type_ids: enc.get_type_ids().iter().map(|&v| v as i64).collect(),
        })
    }
}

/// Parses one line of the token-id text format: integers separated by spaces (or tabs).
/// `source_name` and `line` (1-based) name the place in errors.
pub fn parse_id_line(text: &str, source_name: &str, line: usize) -> Result<Vec<i64>, RuntimeError> {
    let err = |msg: String| RuntimeError::Parse {
        source_name: source_name.to_string(),
        line,
        msg,
    };
    let ids: Vec<i64> = text
        .split_whitespace()
        .map(|w| {
            w.parse::<i64>()
                .map_err(|_| err(format!("'{w}' is not an integer")))
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(err("empty sequence".into()));
    }
    Ok(ids)
}

/// Mean of the rows of `hidden[seq][width]` whose mask is non-zero.
pub fn mean_pool(hidden: &[f32], mask: &[i64], width: usize) -> Vec<f32> {
    let mut acc = vec![0f64; width];
    let mut n = 0f64;
    for (row, &m) in hidden.chunks(width).zip(mask) {
        if m != 0 {
            n += 1.0;
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v as f64;
            }
        }
    }
    acc.into_iter().map(|a| (a / n.max(1.0)) as f32).collect()
}

/// `v / ‖v‖` (zero vectors stay zero).
pub fn l2_normalize(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    v.iter()
        .map(|&x| if n > 0.0 { (x as f64 / n) as f32 } else { 0.0 })
        .collect()
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
