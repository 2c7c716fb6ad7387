//! Reading a `.safetensors` file (memory-mapped) into named tensors: the one reader of the
//! format, for the Hugging Face importer and sentence-transformers' `Dense` modules.

use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::ImportError;
use bertc_ir::{DType, Tensor};

/// Adds the tensors of the safetensors file `path` to `out`, by name, with the file.
pub(crate) fn open_safetensors(
    path: &Path,
    out: &mut HashMap<String, (PathBuf, Tensor)>,
) -> Result<(), ImportError> {
    let f = std::fs::File::open(path).map_err(|source| ImportError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    // SAFETY: the mapping is read-only; bertc does not modify model files while it runs.
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|source| ImportError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    let bad = |msg: String| ImportError::Model {
        file: path.to_path_buf(),
        msg: format!("not a valid safetensors file: {msg}"),
    };
    let (header, meta) =
        safetensors::SafeTensors::read_metadata(&map[..]).map_err(|e| bad(e.to_string()))?;
    let base = 8 + header;
    let bytes = Bytes::from_owner(map);
    for (name, info) in meta.tensors() {
        let dtype = match info.dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::I64 => DType::I64,
            safetensors::Dtype::I32 => DType::I32,
            safetensors::Dtype::I8 => DType::I8,
            safetensors::Dtype::U8 => DType::U8,
            safetensors::Dtype::BOOL => DType::Bool,
            other => {
                return Err(bad(format!(
                    "tensor '{name}' has unsupported dtype {other:?}"
                )))
            }
        };
        let (s, e) = info.data_offsets;
        let (s, e) = (base + s, base + e);
        if s > e || e > bytes.len() {
            return Err(bad(format!("tensor '{name}' lies outside the file")));
        }
        let t = Tensor::new(dtype, info.shape.clone(), bytes.slice(s..e))
            .ok_or_else(|| bad(format!("tensor '{name}': size does not match its shape")))?;
        out.insert(name.clone(), (path.to_path_buf(), t));
    }
    Ok(())
}
