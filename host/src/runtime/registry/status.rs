//! What `GET /api/v1/plugins` shows of each slot.

use super::*;

/// A slot as `GET /api/v1/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// The `.wasm` file name in the plugins directory.
    pub file: String,
    /// `loaded` (serving), `loading`, `pending` (loaded; its kinds are
    /// decided when the start-up scan ends) or `failed` (serving nothing;
    /// see `last_error`).
    pub status: &'static str,
    /// The plugin's identity: the file's stem.
    pub name: Option<String>,
    /// The name its `describe` gave, when that is not `name`: shown, never
    /// used to key anything.
    pub declared_name: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
    /// The kinds it serves.
    pub kinds: Vec<String>,
    /// Kinds it asked for and was refused, with why.
    pub refused_kinds: Vec<RefusedKind>,
    pub category: Option<String>,
    pub description: Option<String>,
    pub loaded_at: Option<String>,
    pub from_compile_cache: Option<bool>,
    /// The limits it runs under (defaults with its manifest applied).
    pub limits: Option<LimitsStatus>,
    /// What its manifest grants.
    pub capabilities: Option<Capabilities>,
    /// The version it replaced, if any.
    pub previous_version: Option<String>,
    pub last_reload_at: Option<String>,
    pub last_error: Option<ErrorStatus>,
    /// Whether the current version is still on probation after a swap.
    pub on_probation: bool,
    /// The last automatic rollback: the version that was taken out.
    pub rolled_back: Option<RollbackStatus>,
}

/// A kind a plugin wanted and does not serve.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedKind {
    pub kind: String,
    pub reason: String,
}

/// An automatic rollback as `/api/v1/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackStatus {
    pub version: String,
    pub sha256: String,
    pub at: String,
    pub reason: &'static str,
}

/// A version's limits in the units operators write in manifests.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsStatus {
    pub memory_mb: u64,
    pub timeout_s: u64,
    /// 0 when off.
    pub fuel: u64,
    pub max_children: u32,
    /// Attempts at once in its pool (0: automatic).
    pub max_concurrency: u32,
    pub max_depth: u32,
    pub max_descendants: u32,
    pub children_per_s: u32,
    /// Points and memory its own vector collections may hold.
    pub vector_points: u64,
    pub vector_mb: u64,
    /// Largest child payload and result it may send, MiB.
    pub max_payload_mb: u64,
    pub max_result_mb: u64,
    /// Tasks that may wait parked on open breakers before submissions
    /// are refused.
    pub max_parked: u32,
}

/// A reload that failed, with when.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorStatus {
    pub message: String,
    pub at: String,
}

impl Registry {
    pub(super) fn slot_status(&self, file_stem: &str, slot: &Slot) -> PluginStatus {
        let current = slot.current.as_deref();
        let serving = current.is_some() && !slot.kinds.served.is_empty();
        let status = if serving {
            "loaded"
        } else if slot.loading {
            "loading"
        } else if current.is_some() && !slot.kinds.pending.is_empty() {
            "pending"
        } else {
            "failed"
        };
        let kinds_error = (current.is_some() && !serving && slot.kinds.pending.is_empty())
            .then(|| slot.kinds.refused.first())
            .flatten()
            .map(|r| ErrorStatus {
                message: format!("{file_stem}.wasm serves no kinds: {}", r.reason),
                at: slot.last_reload.map(rfc3339).unwrap_or_default(),
            });
        PluginStatus {
            on_probation: self.on_probation(slot),
            rolled_back: slot.rolled_back.as_ref().map(|r| RollbackStatus {
                version: r.version.clone(),
                sha256: r.sha256.clone(),
                at: rfc3339(r.at),
                reason: "its circuit breaker opened during probation",
            }),
            file: format!("{file_stem}.wasm"),
            status,
            name: current.map(|v| v.info.name.clone()),
            declared_name: current.and_then(|v| v.info.declared_name.clone()),
            version: current.map(|v| v.info.version.clone()),
            sha256: current.map(|v| v.sha256.clone()),
            kinds: slot.kinds.served.clone(),
            refused_kinds: slot
                .kinds
                .refused
                .iter()
                .map(|r: &Refusal| RefusedKind {
                    kind: r.kind.clone(),
                    reason: r.reason.clone(),
                })
                .collect(),
            category: current.map(|v| v.info.category.clone()),
            description: current.map(|v| v.info.description.clone()),
            loaded_at: current.map(|v| rfc3339(v.loaded_at)),
            from_compile_cache: current.map(|v| v.from_cache),
            limits: current.map(|v| LimitsStatus {
                memory_mb: (v.limits.memory_bytes >> 20) as u64,
                timeout_s: v.limits.timeout.as_secs(),
                fuel: v.limits.fuel.unwrap_or(0),
                max_children: v.limits.max_children,
                max_concurrency: v.limits.max_concurrency,
                max_depth: v.limits.max_depth,
                max_descendants: v.limits.max_descendants,
                children_per_s: v.limits.children_per_s,
                vector_points: v.limits.vector_points,
                vector_mb: v.limits.vector_bytes >> 20,
                max_payload_mb: (v.limits.max_payload_bytes >> 20) as u64,
                max_result_mb: (v.limits.max_result_bytes >> 20) as u64,
                max_parked: v.limits.max_parked,
            }),
            capabilities: current.map(|v| v.manifest.capabilities.clone()),
            previous_version: slot.previous.as_ref().map(|v| v.info.version.clone()),
            last_reload_at: slot.last_reload.map(rfc3339),
            last_error: slot
                .last_error
                .as_ref()
                .map(|f| ErrorStatus {
                    message: f.error.to_string(),
                    at: rfc3339(f.at),
                })
                .or(kinds_error),
        }
    }
}
