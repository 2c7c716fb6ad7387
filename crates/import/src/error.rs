//! `ImportError`: why a model could not be imported, naming the file and, where there is one,
//! the node or tensor. Both importers and the loader return it.

use std::path::PathBuf;

use bertc_ir::IrError;

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
