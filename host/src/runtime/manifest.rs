//! The operator-written manifest beside a plugin: `<dir>/<name>.toml`.
//!
//! It is the only place a plugin gets rights: a plugin cannot grant itself
//! anything. No manifest means the defaults: the host's default limits, no
//! outbound HTTP, no vectors, no child tasks.
//!
//! ```toml
//! category = "scraping"          # the pool it runs in (the plugin's own
//!                                # category is only a default)
//! kinds = ["scrape"]             # kinds it may serve (default: the ones it
//!                                # declares that no other file holds)
//! [limits]
//! memory_mb = 64                 # linear memory cap
//! timeout_s = 300                # ceiling on one attempt's wall time
//! fuel = 0                       # instruction budget per attempt, 0 = off
//! max_children = 100             # child tasks one task may submit
//! vector_points = 1000000        # points in its own collections
//! vector_mb = 256                # memory of its own collections, MiB
//! max_parked = 10000             # tasks waiting on open breakers; then 503
//! max_concurrency = 0            # attempts at once in its pool, 0 = auto
//! max_depth = 4                  # depth of a tree of child tasks
//! max_descendants = 1000         # tasks in one tree of child tasks
//! children_per_s = 200           # child tasks per second, all its tasks
//! [capabilities]
//! http = ["example.com", "*.docs.rs", "127.0.0.1:*"]
//! vectors = true                # its own collections; or shared ones by
//!                                # name: vectors = ["brand-*"]
//! submit = ["embed"]
//! admin = false                  # maintenance: prune, compact, health
//! tolerates = ["openai"]         # breakers it falls back from itself
//! [config]
//! any_key = "string values the plugin reads with config-get"
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A parsed manifest. Unknown keys are errors: a typo in a grant must not
/// silently leave a plugin without (or with) a right.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Worker category (pool); overrides what the plugin's `describe` says.
    pub category: Option<String>,
    /// The kinds the operator grants it. Unset: the kinds it declares,
    /// each only while no other file holds it.
    pub kinds: Option<Vec<String>>,
    #[serde(default)]
    pub limits: ManifestLimits,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Values the plugin reads with `host.config-get`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// Per-plugin limits; unset ones take the daemon's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    pub memory_mb: Option<u64>,
    pub timeout_s: Option<u64>,
    pub fuel: Option<u64>,
    pub max_children: Option<u32>,
    pub max_concurrency: Option<u32>,
    pub max_depth: Option<u32>,
    pub max_descendants: Option<u32>,
    pub children_per_s: Option<u32>,
    pub vector_points: Option<u64>,
    pub vector_mb: Option<u64>,
    pub max_parked: Option<u32>,
}

/// What the operator grants the plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Hosts the plugin may reach over `wasi:http` (patterns).
    #[serde(default)]
    pub http: Vec<String>,
    /// Access to the host's vector collections: `true` for collections of
    /// its own (namespaced by its file), or the shared collection names it
    /// may use besides (`["brand-*"]`, `["*"]` for all).
    #[serde(default)]
    pub vectors: VectorGrant,
    /// Task kinds the plugin may submit as children.
    #[serde(default)]
    pub submit: Vec<String>,
    /// The `wasmhive:plugin/admin` interface (maintenance plugins).
    #[serde(default)]
    pub admin: bool,
    /// The host's embedding models it may use, by name (`["*"]`: any).
    #[serde(default)]
    pub models: Vec<String>,
    /// Named breakers the plugin copes with itself (e.g. `openai`, when it
    /// falls back to a local method): its tasks are not parked while they
    /// are open; its calls through them get an error instead.
    #[serde(default)]
    pub tolerates: Vec<String>,
}

/// `vectors = true | false | ["name", "prefix-*", ...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VectorGrant {
    On(bool),
    Shared(Vec<String>),
}

impl Default for VectorGrant {
    fn default() -> Self {
        VectorGrant::On(false)
    }
}

impl VectorGrant {
    /// Whether any vector access is granted.
    pub fn granted(&self) -> bool {
        match self {
            VectorGrant::On(on) => *on,
            VectorGrant::Shared(_) => true,
        }
    }

    /// The shared collection patterns (empty: its own namespace only).
    pub fn shared(&self) -> &[String] {
        match self {
            VectorGrant::Shared(names) => names,
            _ => &[],
        }
    }
}

impl Manifest {
    /// Parses a manifest's text; the error is a sentence naming the problem.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let m = Manifest::parse(
            r#"
            category = "scraping"
            [limits]
            memory_mb = 128
            fuel = 0
            [capabilities]
            http = ["example.com", "127.0.0.1:*"]
            vectors = true
            submit = ["embed"]
            [config]
            user_agent = "wasmhive"
            "#,
        );
        let m = m.unwrap_or_default();
        assert_eq!(m.category.as_deref(), Some("scraping"));
        assert_eq!(m.limits.memory_mb, Some(128));
        assert!(m.capabilities.vectors.granted());
        let shared =
            Manifest::parse("[capabilities]\nvectors = [\"brand-*\"]\n").unwrap_or_default();
        assert_eq!(shared.capabilities.vectors.shared(), ["brand-*"]);
        assert!(!Manifest::default().capabilities.vectors.granted());
        assert_eq!(
            m.config.get("user_agent").map(String::as_str),
            Some("wasmhive")
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_not_a_silent_default() {
        let err = Manifest::parse("[capabilities]\nvector = true\n").err();
        assert!(err.is_some_and(|e| e.contains("vector")));
    }
}
