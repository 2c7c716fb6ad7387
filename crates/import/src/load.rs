//! Loading a model from disk: an `.onnx` file goes through the ONNX importer, a folder through
//! the Hugging Face importer. Every failure is a `ImportError` naming the file and, where there
//! is one, the node or tensor.

use std::path::{Path, PathBuf};

use bertc_ir::{Graph, IrError};

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not a valid ONNX model: {msg}")]
    Decode { file: PathBuf, msg: String },
    #[error("{file}: node '{node}': unsupported op '{op}'")]
    UnsupportedOp {
        file: PathBuf,
        node: String,
        op: String,
    },
    #[error("{file}: node '{node}' ({op}): {msg}")]
    Node {
        file: PathBuf,
        node: String,
        op: String,
        msg: String,
    },
    #[error("{file}: tensor '{name}': {msg}")]
    Tensor {
        file: PathBuf,
        name: String,
        msg: String,
    },
    #[error("{file}: {msg}")]
    Model { file: PathBuf, msg: String },
    #[error("{file}: {source}")]
    Ir { file: PathBuf, source: IrError },
}

/// Which importer a path selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelSource {
    Onnx,
    HuggingFace,
}

impl ModelSource {
    pub fn of(path: &Path) -> ModelSource {
        if path.is_dir() {
            ModelSource::HuggingFace
        } else {
            ModelSource::Onnx
        }
    }
}

/// Imports a model: an `.onnx` file (ONNX import, op soup as exported) or a folder with
/// `config.json` and safetensors (Hugging Face import, encoder-level ops).
pub fn load_model(path: &Path) -> Result<Graph, ImportError> {
    match ModelSource::of(path) {
        ModelSource::HuggingFace => crate::hf::import_folder(path),
        ModelSource::Onnx => crate::onnx::import_file(path),
    }
}
