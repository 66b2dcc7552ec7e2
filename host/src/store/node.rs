//! A daemon as `GET /api/v1/nodes` shows it, and what the daemons sharing a
//! store disagree on (a plugin at different versions, or missing on some).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One daemon: who it is, where it listens, what it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// Its name (`<data>/node-id` when the store is shared).
    pub id: String,
    /// Where its API listens.
    pub address: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339: when it last said it is alive.
    pub last_heartbeat: String,
    /// Workers per pool (pools are per daemon).
    pub pools: BTreeMap<String, usize>,
    /// The version each loaded plugin (by file name) serves.
    pub plugins: BTreeMap<String, String>,
    /// The tasks its busy workers run, per pool (another daemon's as of
    /// its last heartbeat).
    #[serde(default)]
    pub running: BTreeMap<String, Vec<uuid::Uuid>>,
}

/// Builds this daemon's [`NodeInfo`] as it is now.
#[derive(Clone)]
pub struct NodeInfoSource(Arc<dyn Fn() -> NodeInfo + Send + Sync>);

impl NodeInfoSource {
    pub fn new(build: impl Fn() -> NodeInfo + Send + Sync + 'static) -> NodeInfoSource {
        NodeInfoSource(Arc::new(build))
    }

    /// This daemon as it is now.
    pub fn now(&self) -> NodeInfo {
        (self.0)()
    }
}

impl std::fmt::Debug for NodeInfoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeInfoSource")
    }
}

/// A plugin the daemons do not agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PluginMismatch {
    pub plugin: String,
    /// Its version on each daemon that has it, by daemon id.
    pub versions: BTreeMap<String, String>,
    /// The daemons that do not have it.
    pub missing_on: Vec<String>,
}

/// The plugins whose versions differ between `nodes`, or that some lack.
pub fn mismatches(nodes: &[NodeInfo]) -> Vec<PluginMismatch> {
    let mut by_plugin: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for node in nodes {
        for (plugin, version) in &node.plugins {
            by_plugin
                .entry(plugin)
                .or_default()
                .insert(node.id.clone(), version.clone());
        }
    }
    by_plugin
        .into_iter()
        .filter_map(|(plugin, versions)| {
            let distinct: BTreeSet<&String> = versions.values().collect();
            let missing_on: Vec<String> = nodes
                .iter()
                .filter(|n| !versions.contains_key(&n.id))
                .map(|n| n.id.clone())
                .collect();
            (distinct.len() > 1 || !missing_on.is_empty()).then(|| PluginMismatch {
                plugin: plugin.to_string(),
                versions,
                missing_on,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, plugins: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            address: String::new(),
            started_at: String::new(),
            last_heartbeat: String::new(),
            pools: BTreeMap::new(),
            running: BTreeMap::new(),
            plugins: plugins
                .iter()
                .map(|(p, v)| (p.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn differing_and_missing_plugins_are_reported_agreeing_ones_not() {
        let nodes = [
            node(
                "a",
                &[("echo", "1.0.0"), ("scrape", "1.2.0"), ("rag", "1.0.0")],
            ),
            node(
                "b",
                &[("echo", "1.0.0"), ("scrape", "1.3.0"), ("rag", "1.0.0")],
            ),
            node("c", &[("echo", "1.0.0"), ("scrape", "1.2.0")]),
        ];
        let found = mismatches(&nodes);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].plugin, "rag");
        assert_eq!(found[0].missing_on, ["c"]);
        assert_eq!(found[1].plugin, "scrape");
        assert_eq!(
            found[1].versions.get("b").map(String::as_str),
            Some("1.3.0")
        );
        assert!(found[1].missing_on.is_empty());
        assert!(
            mismatches(&nodes[..1]).is_empty(),
            "one daemon agrees with itself"
        );
    }
}
