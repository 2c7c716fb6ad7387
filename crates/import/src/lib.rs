//! bertc's importers: an ONNX file (the op soup an exporter wrote, raised later by
//! `bertc-passes`) or a Hugging Face folder (`config.json` + safetensors, built directly as
//! encoder-level ops) into the IR. Every failure is one `ImportError` naming the file and, where
//! there is one, the node or tensor.

pub mod hf;
pub mod onnx;
pub mod st;

mod error;
mod load;
mod safetensors_file;

pub use error::ImportError;
pub use load::{load_model, model_file, ModelSource};
