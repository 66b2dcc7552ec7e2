//! The `safetensors` format: an 8-byte little-endian header length, a JSON
//! header naming each tensor's dtype, shape and byte range, then the bytes.
//! Read whole (a model is loaded once); F32, F16 and BF16 become `f32`.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// One tensor, as `f32`, row-major.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// The tensors of a file, by name.
#[derive(Debug)]
pub struct Tensors {
    file: String,
    tensors: HashMap<String, Tensor>,
}

impl Tensors {
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let len = bytes
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or("shorter than a safetensors header")?;
        let len = usize::try_from(len).map_err(|_| "header length out of range")?;
        let header = bytes
            .get(8..8usize.saturating_add(len))
            .ok_or("the header runs past the end")?;
        let entries: HashMap<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|e| format!("header: {e}"))?;
        let data = &bytes[8 + len..];
        let mut tensors = HashMap::new();
        for (name, value) in entries {
            if name == "__metadata__" {
                continue;
            }
            let entry: Entry =
                serde_json::from_value(value).map_err(|e| format!("tensor {name}: {e}"))?;
            let [from, to] = entry.data_offsets;
            let raw = data
                .get(from..to)
                .filter(|_| from <= to)
                .ok_or_else(|| format!("tensor {name}: its bytes run past the end"))?;
            let values = match entry.dtype.as_str() {
                "F32" => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<_>>(),
                "F16" => raw
                    .chunks_exact(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
                "BF16" => raw
                    .chunks_exact(2)
                    .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                    .collect(),
                // Integer tensors (BERT's position_ids) are not weights.
                "I64" | "I32" | "U8" | "I8" | "BOOL" => continue,
                other => return Err(format!("tensor {name}: dtype {other} is not supported")),
            };
            let count: usize = entry.shape.iter().product();
            if values.len() != count {
                return Err(format!(
                    "tensor {name}: {} values for shape {:?}",
                    values.len(),
                    entry.shape
                ));
            }
            tensors.insert(
                name,
                Tensor {
                    shape: entry.shape,
                    data: values,
                },
            );
        }
        Ok(Tensors {
            file: String::new(),
            tensors,
        })
    }

    /// Names the file in errors.
    pub fn named(mut self, file: &str) -> Self {
        self.file = file.to_string();
        self
    }

    /// Takes the tensor `name`, which must have `shape`.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, String> {
        let tensor = self
            .tensors
            .remove(name)
            .ok_or_else(|| format!("{}: no tensor {name}", self.file))?;
        if tensor.shape != shape {
            return Err(format!(
                "{}: tensor {name} has shape {:?}, expected {shape:?}",
                self.file, tensor.shape
            ));
        }
        Ok(tensor)
    }

    /// The shape of `name`, if the file has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }
}

/// Writes `tensors` (F32) as a safetensors file's bytes.
pub fn write(tensors: &[(&str, &Tensor)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, tensor) in tensors {
        let end = offset + tensor.data.len() * 4;
        header.insert(
            (*name).to_string(),
            serde_json::json!({"dtype": "F32", "shape": tensor.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, tensor) in tensors {
        for v in &tensor.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// IEEE half precision to single.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise it.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_tensors_read_back_and_shapes_are_checked() {
        let t = Tensor {
            shape: vec![2, 3],
            data: vec![1.0, -2.0, 0.5, 3.0, 4.0, 5.0],
        };
        let bytes = write(&[("w", &t)]);
        let mut read = Tensors::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.shape("w"), Some(&[2usize, 3][..]));
        assert!(read.take("w", &[3, 2]).is_err());
        let mut read = Tensors::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.take("w", &[2, 3]).map(|t| t.data), Ok(t.data));
        assert!(Tensors::parse(&bytes[..10]).is_err(), "truncated");
    }

    #[test]
    fn half_precision_converts_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
