//! Which file serves which task kind: the operator's decision, never the
//! order files arrive in.
//!
//! A plugin *declares* kinds in `describe`; its manifest may *grant* some of
//! them explicitly (`kinds = [...]`). [`KindClaims`] remembers, per kind, the
//! file (slot) that holds it and persists that in `<data>/plugin-kinds.json`,
//! so a holder keeps its kinds across restarts and while its file is absent
//! (a remove + copy of `echo.wasm` gets `echo` back; a file waiting beside it
//! does not). [`KindClaims::assign`] decides for every loaded slot at once:
//!
//! 1. a kind whose holder still wants it stays with the holder, unless the
//!    holder only declares it and exactly one other manifest grants it
//!    (the operator moved it);
//! 2. a kind held by a file that is absent goes only to a manifest grant;
//!    files that merely declare it are refused;
//! 3. an unheld kind goes to the one file that wants it (a single explicit
//!    grant beats declarations); when several only declare it, the file
//!    named after the kind (`echo.wasm` for `echo`) gets it; otherwise
//!    nobody does until the operator grants it to one;
//! 4. a holder whose loaded version no longer wants a kind releases it.
//!
//! During the start-up scan only rule 1 applies ([`Mode::Scanning`]): the
//! other decisions wait until every file has been looked at, so the outcome
//! never depends on which file compiled first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// What one loaded slot wants to serve.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub slot: String,
    pub kinds: Vec<String>,
    /// The kinds come from its manifest's `kinds = [...]`.
    pub explicit: bool,
}

/// A kind a slot wanted and does not serve, with the sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: String,
    pub reason: String,
}

/// What a slot serves after an assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub served: Vec<String>,
    pub refused: Vec<Refusal>,
    /// Kinds not decided yet (the start-up scan is still running).
    pub pending: Vec<String>,
}

/// Whether undecided kinds may be decided now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Scanning,
    Settled,
}

/// Kind -> holding slot, persisted.
#[derive(Debug, Default)]
pub struct KindClaims {
    path: Option<PathBuf>,
    holders: BTreeMap<String, String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OnDisk {
    /// kind -> file stem
    kinds: BTreeMap<String, String>,
}

impl KindClaims {
    /// Claims kept in memory only (the test harness).
    pub fn in_memory() -> KindClaims {
        KindClaims::default()
    }

    /// Reads the claims at `path` (none yet when it does not exist).
    pub fn open(path: PathBuf) -> Result<KindClaims, String> {
        let holders = match std::fs::read(&path) {
            Ok(bytes) => {
                let on_disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| {
                    format!(
                        "{} is not a kind-claims file ({e}); fix or remove it (plugins then claim their declared kinds anew)",
                        path.display()
                    )
                })?;
                on_disk.kinds
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("could not read {}: {e}", path.display())),
        };
        Ok(KindClaims {
            path: Some(path),
            holders,
        })
    }

    /// The slot holding `kind`, loaded or not.
    pub fn holder(&self, kind: &str) -> Option<&str> {
        self.holders.get(kind).map(String::as_str)
    }

    /// Decides what every loaded slot serves; updates and persists the
    /// holders when they change.
    pub fn assign(&mut self, wanted: &[Wanted], mode: Mode) -> BTreeMap<String, Assignment> {
        let mut out: BTreeMap<String, Assignment> = wanted
            .iter()
            .map(|w| (w.slot.clone(), Assignment::default()))
            .collect();
        let loaded: BTreeSet<&str> = wanted.iter().map(|w| w.slot.as_str()).collect();
        let kinds: BTreeSet<&str> = wanted
            .iter()
            .flat_map(|w| w.kinds.iter().map(String::as_str))
            .collect();
        let before = self.holders.clone();

        // Rule 4: a loaded holder that no longer wants a kind lets it go.
        self.holders.retain(|kind, holder| {
            !loaded.contains(holder.as_str())
                || wanted
                    .iter()
                    .any(|w| &w.slot == holder && w.kinds.contains(kind))
        });

        for kind in kinds {
            let candidates: Vec<&Wanted> = wanted
                .iter()
                .filter(|w| w.kinds.iter().any(|k| k == kind))
                .collect();
            let explicit: Vec<&str> = candidates
                .iter()
                .filter(|w| w.explicit)
                .map(|w| w.slot.as_str())
                .collect();
            let holder = self.holders.get(kind).cloned();
            let holder_wants = holder
                .as_deref()
                .and_then(|h| candidates.iter().find(|w| w.slot == h));
            let winner: Result<String, String> = match (holder.as_deref(), holder_wants) {
                (Some(h), Some(w)) if w.explicit || explicit.len() != 1 => Ok(h.to_string()),
                _ if mode == Mode::Scanning => {
                    for w in &candidates {
                        if let Some(a) = out.get_mut(&w.slot) {
                            a.pending.push(kind.to_string());
                        }
                    }
                    continue;
                }
                (Some(_), Some(_)) => Ok(explicit[0].to_string()),
                (Some(h), None) => match explicit.as_slice() {
                    [one] => Ok((*one).to_string()),
                    [] => Err(format!(
                        "kind `{kind}` belongs to {h}.wasm, which keeps it while absent; grant it to this file instead with kinds = [\"{kind}\"] in its manifest"
                    )),
                    many => Err(contested(kind, many, "grant")),
                },
                (None, _) => match explicit.as_slice() {
                    [one] => Ok((*one).to_string()),
                    [] if candidates.len() == 1 => Ok(candidates[0].slot.clone()),
                    // Several files declare it: the one named after the kind
                    // (`echo.wasm` for `echo`) is the operator's evident choice.
                    [] if candidates.iter().any(|w| w.slot == kind) => Ok(kind.to_string()),
                    [] => {
                        let all: Vec<&str> = candidates.iter().map(|w| w.slot.as_str()).collect();
                        Err(contested(kind, &all, "declare"))
                    }
                    many => Err(contested(kind, many, "grant")),
                },
            };
            match winner {
                Ok(slot) => {
                    self.holders.insert(kind.to_string(), slot.clone());
                    for w in &candidates {
                        let Some(a) = out.get_mut(&w.slot) else {
                            continue;
                        };
                        if w.slot == slot {
                            a.served.push(kind.to_string());
                        } else {
                            a.refused.push(Refusal {
                                kind: kind.to_string(),
                                reason: format!(
                                    "kind `{kind}` is served by {slot}.wasm; to move it, grant it with kinds = [\"{kind}\"] in {}.toml",
                                    w.slot
                                ),
                            });
                        }
                    }
                }
                Err(reason) => {
                    for w in &candidates {
                        if let Some(a) = out.get_mut(&w.slot) {
                            a.refused.push(Refusal {
                                kind: kind.to_string(),
                                reason: reason.clone(),
                            });
                        }
                    }
                }
            }
        }
        if self.holders != before {
            self.save();
        }
        out
    }

    /// Writes the holders (temp file, fsync, rename). A failure is logged:
    /// the decisions stand in memory and are written with the next change.
    fn save(&self) {
        let Some(path) = &self.path else {
            return;
        };
        let write = || -> std::io::Result<()> {
            let json = serde_json::to_vec_pretty(&OnDisk {
                kinds: self.holders.clone(),
            })
            .map_err(std::io::Error::other)?;
            let tmp = path.with_extension("json.tmp");
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&json)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::error!(
                path = %path.display(),
                "could not persist which file holds which kind: {e}"
            );
        }
    }
}

fn contested(kind: &str, slots: &[&str], verb: &str) -> String {
    let files: Vec<String> = slots.iter().map(|s| format!("{s}.wasm")).collect();
    format!(
        "kind `{kind}` is contested: {} all {verb} it; grant it to one of them with kinds = [\"{kind}\"] in its manifest (and not in the others)",
        files.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(slot: &str, kinds: &[&str], explicit: bool) -> Wanted {
        Wanted {
            slot: slot.into(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            explicit,
        }
    }

    fn served(a: &BTreeMap<String, Assignment>, slot: &str) -> Vec<String> {
        a.get(slot).map(|a| a.served.clone()).unwrap_or_default()
    }

    #[test]
    fn a_holder_keeps_its_kinds_while_absent_and_a_waiting_file_gets_none() {
        let mut c = KindClaims::in_memory();
        let a = c.assign(&[want("echo", &["echo"], false)], Mode::Settled);
        assert_eq!(served(&a, "echo"), ["echo"]);
        // echo.wasm removed, a thief declares echo: refused.
        let a = c.assign(&[want("thief", &["echo", "thief"], false)], Mode::Settled);
        assert_eq!(served(&a, "thief"), ["thief"]);
        let refusal = &a["thief"].refused[0];
        assert!(refusal.reason.contains("echo.wasm"), "{refusal:?}");
        // echo.wasm back: it serves echo again.
        let a = c.assign(
            &[
                want("thief", &["echo", "thief"], false),
                want("echo", &["echo"], false),
            ],
            Mode::Settled,
        );
        assert_eq!(served(&a, "echo"), ["echo"]);
        assert_eq!(c.holder("echo"), Some("echo"));
    }

    #[test]
    fn the_scan_decides_unheld_kinds_by_rule_not_by_order() {
        for order in [[0, 1], [1, 0]] {
            let all = [
                want("aaa", &["echo", "scrape"], false),
                want("echo", &["echo"], false),
            ];
            let mut c = KindClaims::in_memory();
            let mut seen = Vec::new();
            for i in order {
                seen.push(all[i].clone());
                let a = c.assign(&seen, Mode::Scanning);
                assert!(a.values().all(|a| a.served.is_empty()));
            }
            let a = c.assign(&seen, Mode::Settled);
            assert_eq!(served(&a, "echo"), ["echo"], "named after the kind");
            assert_eq!(served(&a, "aaa"), ["scrape"], "declared by it alone");
            assert!(a["aaa"].refused[0].reason.contains("echo.wasm"));
        }
    }

    #[test]
    fn a_kind_two_files_declare_and_neither_is_named_after_is_nobodys() {
        let mut c = KindClaims::in_memory();
        let a = c.assign(
            &[want("a", &["x"], false), want("b", &["x"], false)],
            Mode::Settled,
        );
        assert!(served(&a, "a").is_empty() && served(&a, "b").is_empty());
        assert!(a["a"].refused[0].reason.contains("contested"));
        assert_eq!(c.holder("x"), None);
    }

    #[test]
    fn a_manifest_grant_moves_a_kind_and_two_grants_conflict() {
        let mut c = KindClaims::in_memory();
        c.assign(&[want("echo", &["echo"], false)], Mode::Settled);
        let a = c.assign(
            &[
                want("echo", &["echo"], false),
                want("echo2", &["echo"], true),
            ],
            Mode::Settled,
        );
        assert_eq!(served(&a, "echo2"), ["echo"]);
        assert!(served(&a, "echo").is_empty());
        let a = c.assign(
            &[
                want("echo2", &["echo"], true),
                want("echo3", &["echo"], true),
            ],
            Mode::Settled,
        );
        assert_eq!(served(&a, "echo2"), ["echo"], "the holder's grant stands");
        assert!(a["echo3"].refused[0].reason.contains("echo2.wasm"));
    }

    #[test]
    fn a_holder_that_stops_declaring_a_kind_releases_it() {
        let mut c = KindClaims::in_memory();
        c.assign(&[want("a", &["x", "y"], false)], Mode::Settled);
        let a = c.assign(
            &[want("a", &["x"], false), want("b", &["y"], false)],
            Mode::Settled,
        );
        assert_eq!(served(&a, "b"), ["y"]);
    }

    #[test]
    fn claims_survive_a_reopen() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("plugin-kinds.json");
        let mut c = KindClaims::open(path.clone())?;
        c.assign(&[want("echo", &["echo"], false)], Mode::Settled);
        let c = KindClaims::open(path)?;
        assert_eq!(c.holder("echo"), Some("echo"));
        Ok(())
    }
}
