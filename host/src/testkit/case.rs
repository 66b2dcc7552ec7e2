//! A test case: one JSON file in the cases directory.
//!
//! ```json
//! {
//!   "name": "greets by name",
//!   "kind": "greet",
//!   "payload": {"name": "Ada"},
//!   "expect": {"result": {"greeting": "hello, Ada"}},
//!   "budget": {"wall_ms": 1000, "fuel": 50000000, "memory_mb": 8},
//!   "vectors": {"docs": [{"id": "a", "vector": [1, 0], "metadata": {}}]}
//! }
//! ```
//!
//! `expect` holds any of: `result` (exact JSON), `result_contains` (a JSON
//! subset: every key given must be there with a matching value; arrays
//! match element by element), `error` (the failure kind: `fatal`,
//! `retryable`, `trap`, `timeout`, `out_of_memory`, `fuel`),
//! `error_contains` (text in the failure message), `children` (the kinds
//! of the child tasks submitted, in order). Without `expect` the case must
//! succeed. `name` defaults to the file name, `kind` to the plugin's first
//! kind. Recorded HTTP lives beside the case as `<file stem>.http.json`.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub name: String,
    pub kind: Option<String>,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub expect: Expect,
    #[serde(default)]
    pub budget: Budget,
    /// Points to load into collections before the case runs.
    #[serde(default)]
    pub vectors: BTreeMap<String, Vec<PointSpec>>,
    /// The file it came from.
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub result: Option<Value>,
    pub result_contains: Option<Value>,
    pub error: Option<String>,
    pub error_contains: Option<String>,
    pub children: Option<Vec<String>>,
}

/// Limits one case must stay within; each is reported either way.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub wall_ms: Option<u64>,
    pub fuel: Option<u64>,
    pub memory_mb: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointSpec {
    pub id: String,
    pub vector: Vec<f32>,
    #[serde(default)]
    pub metadata: Value,
}

impl Case {
    /// Where this case's recorded HTTP exchanges live.
    pub fn recording_path(&self) -> PathBuf {
        let stem = self
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.file.with_file_name(format!("{stem}.http.json"))
    }
}

/// Every case in `dir` (`*.json` but not `*.http.json`), by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the cases directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.ends_with(".json") && !name.ends_with(".http.json")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no cases (*.json) in {}", dir.display());
    }
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mut case: Case = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid case", file.display()))?;
            if case.name.is_empty() {
                case.name = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
            }
            case.file = file;
            Ok(case)
        })
        .collect()
}

/// Whether `actual` contains `expected`: objects by the keys `expected`
/// names, arrays element by element (same length), the rest equal.
pub fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        (Value::Array(a), Value::Array(e)) => {
            a.len() == e.len() && a.iter().zip(e).all(|(x, y)| contains(x, y))
        }
        _ => actual == expected,
    }
}

/// Paths where two JSON documents differ (`$.a.b[2]`), at most `limit`.
pub fn differences(old: &Value, new: &Value, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    diff("$", old, new, &mut out, limit);
    out
}

fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit || old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                diff(&format!("{path}.{k}"), x, y, out, limit);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, out, limit);
            }
        }
        _ => out.push(format!("{path}: {} -> {}", short(old), short(new))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subsets_match_by_the_keys_given() {
        let actual = json!({ "a": 1, "b": { "c": [1, { "d": 2, "e": 3 }] } });
        assert!(contains(&actual, &json!({ "b": { "c": [1, { "d": 2 }] } })));
        assert!(!contains(&actual, &json!({ "b": { "c": [1] } })));
        assert!(!contains(&actual, &json!({ "a": 2 })));
    }

    #[test]
    fn differences_name_their_paths() {
        let d = differences(
            &json!({ "a": 1, "b": [1, 2], "c": "x" }),
            &json!({ "a": 1, "b": [1, 3], "d": true }),
            10,
        );
        assert_eq!(
            d,
            ["$.b[1]: 2 -> 3", "$.c: \"x\" -> null", "$.d: null -> true"]
        );
    }
}
