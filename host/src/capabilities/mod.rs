//! Host capabilities: what a plugin can ask of the host, one module each.
//!
//! Each capability owns its per-attempt state, its implementation of the
//! WIT interface, and its tests. The sandbox (`runtime::sandbox`) puts one of
//! each in an attempt's store and links them; what each may do comes from
//! the plugin's manifest, never from the plugin.
//!
//! - [`host_api`]: `wasmhive:plugin/host` — log, progress, config-get, and
//!   [`submit`]: child tasks (submit, children).
//! - [`vectors`]: `wasmhive:plugin/vectors` — vector collections.
//! - [`http`]: `wasi:http/outgoing-handler` — outbound HTTP behind an allowlist.
//! - [`admin`]: `wasmhive:plugin/admin` — prune, compact, health.
//! - [`models`]: `wasmhive:plugin/models` — sentence embeddings by the host.
//!
//! What they need from the scheduler they get through [`tasks::TaskHost`].

pub mod admin;
pub mod host_api;
pub mod http;
pub mod models;
pub mod submit;
pub mod tasks;
pub mod vectors;

use crate::breaker::BreakerSet;
use http::HttpShared;
use http::allow::Allowlist;
use std::sync::Arc;
use vectors::VectorStore;

/// What the capabilities share across attempts, built once by the daemon;
/// what one attempt may use of it comes from its plugin's manifest.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// The vector collections (`None`: this host keeps none).
    pub vectors: Option<Arc<VectorStore>>,
    /// The named breakers capabilities report outcomes to.
    pub breakers: Option<Arc<BreakerSet>>,
    /// Outbound HTTP settings, breaker bindings and counters.
    pub http: Arc<HttpShared>,
    /// The embedding models (`None`: this host serves none).
    pub models: Option<Arc<models::ModelSet>>,
}

/// What a plugin's manifest grants it, parsed once at load.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub vectors: bool,
    /// Which collections its names mean, and its quota.
    pub vector_scope: vectors::Scope,
    pub admin: bool,
    /// Kinds it may submit as children.
    pub submit: Arc<[String]>,
    /// How far its child tasks may go.
    pub children: tasks::ChildLimits,
    /// Its child submissions per second, shared by all its attempts.
    pub child_rate: Arc<submit::ChildRate>,
    /// Where it may send HTTP requests.
    pub http: Arc<Allowlist>,
    /// The embedding models it may use (`*`: any).
    pub models: Arc<[String]>,
}

impl Grants {
    /// Names of the granted capabilities breakers can guard.
    pub fn names(&self) -> Vec<&'static str> {
        [
            ("vectors", self.vectors),
            ("submit", !self.submit.is_empty()),
            ("admin", self.admin),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
}

impl Services {
    /// The named breakers a plugin depends on: those guarding a capability
    /// it is granted (`granted`, e.g. `["vectors"]`) or a destination its
    /// allowlist reaches, except the ones it `tolerates` (it handles their
    /// refusals itself, so its tasks are not parked while they are open).
    pub fn breakers_for(
        &self,
        granted: &[&str],
        allow: &Allowlist,
        tolerates: &[String],
    ) -> Vec<String> {
        let Some(set) = &self.breakers else {
            return Vec::new();
        };
        set.named_configs()
            .filter(|(name, _)| !tolerates.iter().any(|t| t == name))
            .filter(|(name, config)| {
                config
                    .capabilities
                    .iter()
                    .any(|c| granted.contains(&c.as_str()))
                    || self
                        .http
                        .guarded
                        .iter()
                        .any(|(guarded, list)| guarded == name && allow.overlaps(list))
            })
            .map(|(name, _)| name.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerConfig;
    use crate::clock::{Clock, ManualClock};

    #[test]
    fn plugins_depend_on_the_breakers_of_their_grants_unless_they_tolerate_them()
    -> Result<(), String> {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
        let mut named = BreakerConfig::defaults();
        if let Some(openai) = named.get_mut("openai") {
            openai.hosts = vec!["api.openai.com".into()];
        }
        let breakers = Some(Arc::new(BreakerSet::new(
            &named,
            BreakerConfig::default(),
            clock,
        )));
        let services = Services {
            vectors: None,
            http: Arc::new(HttpShared::new(Default::default(), breakers.clone())?),
            breakers,
            models: None,
        };
        let openai = Allowlist::parse(&["api.openai.com".into()])?;
        assert_eq!(services.breakers_for(&[], &openai, &[]), ["openai"]);
        assert!(
            services
                .breakers_for(&[], &openai, &["openai".into()])
                .is_empty()
        );
        assert_eq!(
            services.breakers_for(&["vectors"], &Allowlist::default(), &[]),
            ["vectors"]
        );
        let other = Allowlist::parse(&["example.com".into()])?;
        assert!(services.breakers_for(&[], &other, &[]).is_empty());
        Ok(())
    }
}

/// Who is calling: names a capability puts in its log lines and refusals.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The plugin's name, e.g. `scrape`.
    pub plugin: Arc<str>,
    /// The plugin's version, e.g. `1.2.0`.
    pub version: Arc<str>,
    /// The manifest a grant would go in, e.g. `scrape.toml`.
    pub manifest_file: Arc<str>,
    /// The task being handled.
    pub task_id: Arc<str>,
}

impl Caller {
    /// A caller for capability tests: `plugin` v1.0.0, manifest `<plugin>.toml`.
    #[cfg(test)]
    pub fn for_test(plugin: &str, task_id: &str) -> Caller {
        Caller {
            plugin: plugin.into(),
            version: "1.0.0".into(),
            manifest_file: format!("{plugin}.toml").into(),
            task_id: task_id.into(),
        }
    }

    /// The sentence a plugin gets when it uses a capability it was not granted.
    pub fn not_granted(&self, what: &str, grant: &str) -> String {
        format!(
            "plugin `{}` v{} was not granted {what}; add {grant} to {}",
            self.plugin, self.version, self.manifest_file
        )
    }
}
