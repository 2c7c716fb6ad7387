//! Loading a model from disk: an `.onnx` file goes through the ONNX importer, a folder through
//! the Hugging Face importer.

use std::path::Path;

use bertc_ir::Graph;

use crate::ImportError;

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
