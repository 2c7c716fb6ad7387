//! A model's text pipeline as data for the artifact's own tokenizer. `spec` reads
//! `tokenizer.json` into a typed [`TextSpec`] (normalizer, pre-tokenizer, model, added tokens,
//! post-processor template) and names the file and key of anything it does not support;
//! `tables` turns a spec into the tables the generated C tokenizer reads (character classes and
//! maps generated from the same Unicode crates the Hugging Face `tokenizers` crate uses, the
//! vocabulary and merges as hash tables), only those the spec needs. The C itself is a template
//! of `bertc-codegen` (`glue/tokenizer.c`); this crate has no C and no code generation.

pub mod bytelevel;
pub mod convert;
pub mod sentencepiece;
pub mod spec;
pub mod spm;
pub mod tables;

pub use spec::{AddedToken, BertNormalizer, Model, Piece, PreTokenizer, Template, TextSpec};
pub use spm::{Prepend, SpmStep};
pub use tables::Tables;

/// Errors reading a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("{file}: {msg}")]
    Io { file: String, msg: String },
    #[error("{file}: not JSON: {msg}")]
    Json { file: String, msg: String },
    #[error("{file}: {key}: {msg}")]
    Spec {
        file: String,
        key: String,
        msg: String,
    },
    #[error(
        "{file}: {key}: {kind} is not supported (supported: {})",
        spec::SUPPORTED
    )]
    Unsupported {
        file: String,
        key: String,
        kind: String,
    },
}
