//! Reading inputs in the token-id text format (ids on stdin, optional mask and token type
//! files) or tokenizing texts, and checking them against the model before anything runs.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use bertc_ir::{Graph, Op, TokenTypes};
use bertc_runtime::{parse_id_line, Tokenizer};

use crate::CliError;

/// One input sequence.
pub struct Sequence {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub type_ids: Vec<i64>,
    /// Whether token type ids were given explicitly.
    pub explicit_types: bool,
}

fn read_lines(path: Option<&Path>) -> Result<Vec<String>, CliError> {
    let what = path.map_or("standard input".to_string(), |p| p.display().to_string());
    let io = |source| CliError::Io {
        what: what.clone(),
        source,
    };
    match path {
        Some(p) => Ok(std::fs::read_to_string(p)
            .map_err(io)?
            .lines()
            .map(str::to_string)
            .collect()),
        None => std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<_, _>>()
            .map_err(io),
    }
}

/// Reads ids from standard input and the optional mask and token type files.
pub fn read_id_files(mask: Option<&Path>, types: Option<&Path>) -> Result<Vec<Sequence>, CliError> {
    let ids = read_lines(None)?;
    let masks = mask.map(|p| read_lines(Some(p))).transpose()?;
    let tys = types.map(|p| read_lines(Some(p))).transpose()?;
    for (name, other) in [(mask, &masks), (types, &tys)] {
        if let (Some(p), Some(lines)) = (name, other) {
            if lines.len() != ids.len() {
                return Err(CliError::Input(format!(
                    "{}: {} lines, but standard input has {}",
                    p.display(),
                    lines.len(),
                    ids.len()
                )));
            }
        }
    }
    let mut out = Vec::with_capacity(ids.len());
    for (i, line) in ids.iter().enumerate() {
        let ids = parse_id_line(line, "standard input", i + 1)?;
        let aux = |lines: &Option<Vec<String>>,
                   path: Option<&Path>,
                   default: i64|
         -> Result<Vec<i64>, CliError> {
            match (lines, path) {
                (Some(l), Some(p)) => {
                    let v = parse_id_line(&l[i], &p.display().to_string(), i + 1)?;
                    if v.len() != ids.len() {
                        return Err(CliError::Input(format!(
                            "{} line {}: {} values for {} token ids",
                            p.display(),
                            i + 1,
                            v.len(),
                            ids.len()
                        )));
                    }
                    Ok(v)
                }
                _ => Ok(vec![default; ids.len()]),
            }
        };
        let mask = aux(&masks, mask, 1)?;
        if let Some(bad) = mask.iter().find(|&&m| m != 0 && m != 1) {
            return Err(CliError::Input(format!(
                "mask line {}: value {bad} is not 0 or 1",
                i + 1
            )));
        }
        let type_ids = aux(&tys, types, 0)?;
        out.push(Sequence {
            ids,
            mask,
            type_ids,
            explicit_types: types.is_some(),
        });
    }
    Ok(out)
}

/// The `tokenizer.json` beside a model (in its folder, beside the .onnx file, or in the
/// repository above a Hub `onnx/` folder); it may not exist.
pub fn tokenizer_beside(model: &Path) -> PathBuf {
    bertc_import::st::companion_dir(model)
        .unwrap_or_default()
        .join("tokenizer.json")
}

/// The text of the tokenizer `path` names and what to call it: the `tokenizer.json` itself,
/// or, when there is none, the one transformers makes of the vocabulary files beside it
/// (`vocab.txt`; `vocab.json` and `merges.txt`; `sentencepiece.bpe.model`:
/// `bertc_text::convert`); `None` when there
/// are none.
pub fn tokenizer_json(path: &Path) -> Result<Option<(String, String)>, CliError> {
    if path.is_file() || path.file_name().is_some_and(|f| f != "tokenizer.json") {
        let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
            what: path.display().to_string(),
            source,
        })?;
        return Ok(Some((text, path.display().to_string())));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    bertc_text::convert::tokenizer_json(dir).map_err(|e| CliError::Input(e.to_string()))
}

/// The Hugging Face tokenizer `path` names (see `tokenizer_json`).
pub fn open_tokenizer(path: &Path) -> Result<Tokenizer, CliError> {
    match tokenizer_json(path)? {
        Some((text, source)) => Ok(Tokenizer::from_json(&text, &source)?),
        None => Err(CliError::Input(format!(
            "{}: no such file (and no vocab.txt, vocab.json and merges.txt, or sentencepiece.bpe.model beside it)",
            path.display()
        ))),
    }
}
pub fn tokenize(tokenizer: &Path, texts: &[String]) -> Result<Vec<Sequence>, CliError> {
    let tok = open_tokenizer(tokenizer)?;
    texts
        .iter()
        .map(|t| {
            let e = tok.encode(t, None)?;
            Ok(Sequence {
                ids: e.ids,
                mask: e.attention_mask,
                type_ids: e.type_ids,
                explicit_types: false,
            })
        })
        .collect()
}

/// What the model accepts: vocabulary, token types, longest sequence.
pub struct Limits {
    vocab: Option<usize>,
    type_vocab: Option<usize>,
    type_input: bool,
    max_seq: Option<usize>,
}

impl Limits {
    pub fn of(g: &Graph) -> Limits {
        let mut l = Limits {
            vocab: None,
            type_vocab: None,
            type_input: g.input_named("token_type_ids").is_some(),
            max_seq: g.max_seq,
        };
        for n in g.canonical_order() {
            if let Op::Embedding { types, .. } = g.op(n) {
                let ops = g.operands(n);
                let first = 1 + (*types == TokenTypes::Input) as usize;
                let rows = |i: usize| {
                    ops.get(i)
                        .and_then(|&t| g.ty(t).shape[0].as_const())
                        .map(|v| v as usize)
                };
                l.vocab = rows(first);
                if *types == TokenTypes::Input {
                    l.type_vocab = rows(first + 2);
                }
            }
        }
        l
    }

    /// Checks one sequence; `line` (1-based) names it in errors.
    pub fn check(&self, s: &Sequence, line: usize) -> Result<(), CliError> {
        let err = |msg: String| Err(CliError::Input(format!("input line {line}: {msg}")));
        if let Some(max) = self.max_seq {
            if s.ids.len() > max {
                return err(format!(
                    "{} tokens, more than the model's maximum of {max}",
                    s.ids.len()
                ));
            }
        }
        if let Some(v) = self.vocab {
            if let Some(bad) = s.ids.iter().find(|&&id| id < 0 || id as usize >= v) {
                return err(format!(
                    "token id {bad} is out of range for the vocabulary of {v}"
                ));
            }
        }
        if s.explicit_types && !self.type_input {
            return err("the model takes no token type ids (remove --type-ids)".into());
        }
        if let Some(v) = self.type_vocab {
            if let Some(bad) = s.type_ids.iter().find(|&&t| t < 0 || t as usize >= v) {
                return err(format!(
                    "token type id {bad} is out of range for the {v} token types"
                ));
            }
        }
        Ok(())
    }
}
