//! `bertc eval`: accuracy of a model or a compiled shared library on sentence similarity (the
//! Spearman correlation of embedding cosines with gold scores, as the STS Benchmark reports
//! it) and the agreement of two models' embeddings.

use std::path::Path;

use bertc_passes::OutputKind;
use bertc_runtime::Tokenizer;

use crate::encoder::Encoder;
use crate::scratch::Scratch;
use crate::CliError;

/// One sentence pair with its gold similarity.
pub struct Pair {
    pub a: String,
    pub b: String,
    pub gold: f64,
}

/// Reads an STS Benchmark file: tab-separated, no quoting, gold score in field 5, the two
/// sentences in fields 6 and 7.
pub fn read_sts(path: &Path) -> Result<Vec<Pair>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Io {
        what: path.display().to_string(),
        source: e,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let bad = |msg: &str| CliError::Input(format!("{}:{}: {msg}", path.display(), i + 1));
        if f.len() < 7 {
            return Err(bad(
                "expected at least 7 tab-separated fields (STS Benchmark format)",
            ));
        }
        let gold: f64 = f[4]
            .trim()
            .parse()
            .map_err(|_| bad(&format!("gold score '{}' is not a number", f[4])))?;
        out.push(Pair {
            a: f[5].to_string(),
            b: f[6].to_string(),
            gold,
        });
    }
    if out.is_empty() {
        return Err(CliError::Input(format!(
            "{}: no sentence pairs",
            path.display()
        )));
    }
    Ok(out)
}

/// Ranks with ties given their mean rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
}

pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

/// Spearman's rank correlation.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

/// Opens a `.so` artifact (`name` is its symbol prefix) or compiles a model (an .onnx file
/// or a Hugging Face folder) to one, with `prepare` applied to the graph before code
/// generation.
pub fn open_encoder(path: &Path, name: Option<&str>, threads: i32) -> Result<Encoder, CliError> {
    let tmp = Scratch::new("eval")?;
    let (so, name) = crate::compile::shared_library(
        path,
        name,
        (OutputKind::Mean, None),
        &Default::default(),
        &tmp,
        "eval",
    )?;
    Encoder::from_so(&so, &name, threads, Some(tmp))
}

fn dotf(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Tokenizes texts (special tokens included).
pub fn tokenize_texts(tok: &Tokenizer, texts: &[&str]) -> Result<Vec<Vec<i64>>, CliError> {
    texts.iter().map(|t| Ok(tok.encode(t, None)?.ids)).collect()
}

/// STS scores of an encoder on pairs: (Spearman x100, Pearson x100).
pub fn sts_score(
    enc: &mut Encoder,
    tok: &Tokenizer,
    pairs: &[Pair],
) -> Result<(f64, f64), CliError> {
    let a: Vec<&str> = pairs.iter().map(|p| p.a.as_str()).collect();
    let b: Vec<&str> = pairs.iter().map(|p| p.b.as_str()).collect();
    let ea = enc.embed(&tokenize_texts(tok, &a)?)?;
    let eb = enc.embed(&tokenize_texts(tok, &b)?)?;
    let cos: Vec<f64> = ea.iter().zip(&eb).map(|(x, y)| dotf(x, y)).collect();
    let gold: Vec<f64> = pairs.iter().map(|p| p.gold).collect();
    Ok((100.0 * spearman(&cos, &gold), 100.0 * pearson(&cos, &gold)))
}

/// Mean and minimum cosine between two encoders' embeddings of the same texts.
pub fn agreement(
    a: &mut Encoder,
    b: &mut Encoder,
    seqs: &[Vec<i64>],
) -> Result<(f64, f64), CliError> {
    let (ea, eb) = (a.embed(seqs)?, b.embed(seqs)?);
    let cos: Vec<f64> = ea.iter().zip(&eb).map(|(x, y)| dotf(x, y)).collect();
    let mean = cos.iter().sum::<f64>() / cos.len().max(1) as f64;
    let min = cos.iter().copied().fold(f64::INFINITY, f64::min);
    Ok((mean, min))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_with_ties() {
        // by hand: ranks [1, 2.5, 2.5, 4, 5] and [2, 1, 3.5, 3.5, 5]; Σdxdy = 7.25,
        // Σdx² = Σdy² = 9.5
        let r = spearman(&[1.0, 2.0, 2.0, 3.0, 5.0], &[2.0, 1.0, 4.0, 4.0, 9.0]);
        assert!((r - 7.25 / 9.5).abs() < 1e-12, "{r}");
        assert_eq!(ranks(&[3.0, 1.0, 3.0]), vec![2.5, 1.0, 2.5]);
    }
}
