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

/// The model a path names: the path itself, except a folder without safetensors that holds
/// an ONNX export (`model.onnx`, as `optimum-cli export onnx` writes it, or `onnx/model.onnx`,
/// the Hub's layout), which names that file (its companions, `tokenizer.json` and a
/// sentence-transformers `modules.json`, are found beside it as for any `.onnx` file).
pub fn model_file(path: &Path) -> std::path::PathBuf {
    let has = |f: &str| path.join(f).is_file();
    if path.is_dir() && !has("model.safetensors") && !has("model.safetensors.index.json") {
        for f in ["model.onnx", "onnx/model.onnx"] {
            if has(f) {
                return path.join(f);
            }
        }
    }
    path.to_path_buf()
}

/// Imports a model: an `.onnx` file (ONNX import, op soup as exported) or a folder with
/// `config.json` and safetensors (Hugging Face import, encoder-level ops).
pub fn load_model(path: &Path) -> Result<Graph, ImportError> {
    let path = &model_file(path);
    match ModelSource::of(path) {
        ModelSource::HuggingFace => crate::hf::import_folder(path),
        ModelSource::Onnx => crate::onnx::import_file(path),
    }
}
