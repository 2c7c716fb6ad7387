//! bertc's compiler core: the IR, the importers that build it (ONNX and Hugging Face
//! safetensors folders) and the reference interpreter that executes any IR. Nothing here knows
//! a pass; passes live in `bertc-passes`.

pub mod codegen;
pub mod hf;
pub mod interp;
pub mod ir;
pub mod onnx;

mod load;
pub use load::{load_model, LoadError, ModelSource};
