//! ONNX tensors: a `TensorProto`'s elements from `raw_data`, the typed fields or an external
//! data file beside the model (a plain relative path), checked against dtype x shape; and
//! serialized `TensorProto` files as the ONNX backend tests store inputs and outputs.

use bytes::Bytes;
use prost::Message;
use std::path::{Component, Path};

use super::proto::TensorProto;
use crate::ImportError;
use bertc_ir::{DType, Tensor};

/// Reads a serialized `TensorProto` file (as the ONNX backend tests store their inputs and
/// outputs): its name and the tensor.
pub fn read_tensor_file(path: &Path) -> Result<(String, Tensor), ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    let t = TensorProto::decode(Bytes::from(bytes)).map_err(|e| ImportError::Decode {
        file: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let tensor = decode_tensor(&t, path, &dir)?;
    Ok((t.name, tensor))
}

/// Decodes a `TensorProto` from raw data, typed fields or an external file.
pub(super) fn decode_tensor(
    t: &TensorProto,
    file: &Path,
    dir: &Path,
) -> Result<Tensor, ImportError> {
    let err = |msg: String| ImportError::Tensor {
        file: file.to_path_buf(),
        name: t.name.clone(),
        msg,
    };
    let dtype = DType::from_onnx(t.data_type)
        .ok_or_else(|| err(format!("unsupported data type {}", t.data_type)))?;
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative dimension {d}"))))
        .collect::<Result<_, _>>()?;
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n < (1 << 40))
        .ok_or_else(|| err("too many elements".into()))?;
    let nbytes = numel * dtype.size();
    let data: Bytes = if t.data_location == 1 {
        external(t, dir).map_err(err)?
    } else if !t.raw_data.is_empty() || numel == 0 {
        t.raw_data.clone()
    } else {
        let mut b: Vec<u8> = Vec::with_capacity(nbytes);
        match dtype {
            DType::F32 => t
                .float_data
                .iter()
                .for_each(|v| b.extend_from_slice(&v.to_le_bytes())),
            DType::F64 => t
                .double_data
                .iter()
                .for_each(|v| b.extend_from_slice(&v.to_le_bytes())),
            DType::I64 => t
                .int64_data
                .iter()
                .for_each(|v| b.extend_from_slice(&v.to_le_bytes())),
            DType::I32 => t
                .int32_data
                .iter()
                .for_each(|v| b.extend_from_slice(&v.to_le_bytes())),
            DType::I16 | DType::F16 | DType::BF16 => t
                .int32_data
                .iter()
                .for_each(|v| b.extend_from_slice(&(*v as u16).to_le_bytes())),
            DType::I8 | DType::U8 | DType::Bool => {
                t.int32_data.iter().for_each(|v| b.push(*v as u8))
            }
        }
        Bytes::from(b)
    };
    if data.len() != nbytes {
        return Err(err(format!(
            "holds {} bytes but {} of {dtype} need {nbytes}",
            data.len(),
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        )));
    }
    Tensor::new(dtype, shape, data).ok_or_else(|| err("inconsistent tensor".into()))
}

fn external(t: &TensorProto, dir: &Path) -> Result<Bytes, String> {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.clone())
    };
    let loc = get("location").ok_or("external data without a location")?;
    let rel = Path::new(&loc);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "external data location '{loc}' must be a plain relative path"
        ));
    }
    let path = dir.join(rel);
    let f =
        std::fs::File::open(&path).map_err(|e| format!("external data {}: {e}", path.display()))?;
    // SAFETY: the mapping is read-only; bertc does not modify model files while it runs.
    let map = unsafe { memmap2::Mmap::map(&f) }
        .map_err(|e| format!("external data {}: {e}", path.display()))?;
    let parse = |k: &str| -> Result<Option<usize>, String> {
        get(k)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| format!("bad external data {k} '{v}'"))
            })
            .transpose()
    };
    let off = parse("offset")?.unwrap_or(0);
    let len = match parse("length")? {
        Some(l) => l,
        None => map
            .len()
            .checked_sub(off)
            .ok_or("external data offset beyond the file")?,
    };
    let end = off
        .checked_add(len)
        .filter(|&e| e <= map.len())
        .ok_or_else(|| {
            format!(
                "external data {}..{} beyond the end of {} ({} bytes)",
                off,
                off.saturating_add(len),
                path.display(),
                map.len()
            )
        })?;
    Ok(Bytes::from_owner(map).slice(off..end))
}
