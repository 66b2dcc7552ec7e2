//! `wasmhive new NAME [--lang rust|python]`: a plugin that builds and passes
//! `wasmhive test` as it is — a word-count handler, its manifest, and two
//! test cases (a result and a fatal error) — to be edited into the real one.
//!
//! Rust plugins depend on the SDK crate by path (`--sdk`, by default
//! `plugins/sdk` of the wasmhive sources this binary was built from).
//! Python plugins get the WIT contract copied in (`wit/`) and a `build.sh`
//! that runs componentize-py.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
}

/// The contract, for plugins built outside this repository.
const WIT: &[(&str, &str)] = &[
    ("plugin.wit", include_str!("../../../wit/plugin.wit")),
    (
        "deps/cli/cli.wit",
        include_str!("../../../wit/deps/cli/cli.wit"),
    ),
    (
        "deps/clocks/clocks.wit",
        include_str!("../../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "deps/filesystem/filesystem.wit",
        include_str!("../../../wit/deps/filesystem/filesystem.wit"),
    ),
    (
        "deps/http/http.wit",
        include_str!("../../../wit/deps/http/http.wit"),
    ),
    (
        "deps/io/io.wit",
        include_str!("../../../wit/deps/io/io.wit"),
    ),
    (
        "deps/random/random.wit",
        include_str!("../../../wit/deps/random/random.wit"),
    ),
    (
        "deps/sockets/sockets.wit",
        include_str!("../../../wit/deps/sockets/sockets.wit"),
    ),
];

const MANIFEST: &str = include_str!("manifest.toml.tmpl");
const CASE_COUNTS: &str = include_str!("case_counts.json.tmpl");
const CASE_EMPTY: &str = include_str!("case_empty.json.tmpl");

const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("rust/Cargo.toml.tmpl")),
    (".cargo/config.toml", include_str!("rust/config.toml.tmpl")),
    ("src/lib.rs", include_str!("rust/lib.rs.tmpl")),
    ("README.md", include_str!("rust/README.md.tmpl")),
];

const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("python/app.py.tmpl")),
    ("build.sh", include_str!("python/build.sh.tmpl")),
    ("README.md", include_str!("python/README.md.tmpl")),
];

/// The SDK crate of the sources this binary was built from.
pub fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk")
}

/// Whether `name` can be a plugin (and Rust crate, and task kind) name.
fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "`{name}`: a plugin name is lower-case letters, digits and `-`, starting with a letter"
        );
    }
    Ok(())
}

/// Creates the plugin `name` in `parent/name`; returns its directory.
pub fn create(name: &str, lang: Lang, parent: &Path, sdk: Option<&Path>) -> Result<PathBuf> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let mut files: Vec<(String, String)> = vec![
        (format!("{name}.toml"), MANIFEST.to_string()),
        (
            "tests/cases/counts_words.json".into(),
            CASE_COUNTS.to_string(),
        ),
        (
            "tests/cases/refuses_empty.json".into(),
            CASE_EMPTY.to_string(),
        ),
    ];
    let sdk_path = match lang {
        Lang::Rust => {
            let sdk = sdk.map(Path::to_path_buf).unwrap_or_else(default_sdk);
            let sdk = sdk.canonicalize().with_context(|| {
                format!(
                    "the wasmhive SDK is not at {}: pass --sdk PATH (the `plugins/sdk` directory of the wasmhive sources)",
                    sdk.display()
                )
            })?;
            files.extend(RUST.iter().map(|(f, t)| (f.to_string(), t.to_string())));
            sdk.display().to_string()
        }
        Lang::Python => {
            files.extend(PYTHON.iter().map(|(f, t)| (f.to_string(), t.to_string())));
            files.extend(WIT.iter().map(|(f, t)| (format!("wit/{f}"), t.to_string())));
            String::new()
        }
    };
    let crate_name = name.replace('-', "_");
    for (file, template) in files {
        let path = dir.join(&file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = template
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk_path);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(dir)
}

/// The commands that build and test a new plugin, for the user.
pub fn next_steps(name: &str, lang: Lang, dir: &Path) -> String {
    let d = dir.display();
    match lang {
        Lang::Rust => format!(
            "cd {d}\ncargo build --release\nwasmhive test target/wasm32-wasip2/release/{}.wasm --cases tests/cases --manifest {name}.toml",
            name.replace('-', "_")
        ),
        Lang::Python => format!(
            "cd {d}\npip install componentize-py   # once\nsh build.sh\nwasmhive test {name}.wasm --cases tests/cases --manifest {name}.toml"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_files_with_the_placeholders_filled() -> Result<()> {
        let parent = tempfile::tempdir()?;
        let dir = create("word-count", Lang::Rust, parent.path(), None)?;
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml"))?;
        assert!(cargo.contains("name = \"word-count\""), "{cargo}");
        assert!(!cargo.contains("{{"), "{cargo}");
        assert!(dir.join("word-count.toml").exists());
        assert!(dir.join("tests/cases/counts_words.json").exists());
        let py = create("word-count", Lang::Python, &parent.path().join("py"), None)?;
        assert!(py.join("wit/plugin.wit").exists() && py.join("wit/deps/http/http.wit").exists());
        assert!(create("word-count", Lang::Rust, parent.path(), None).is_err());
        assert!(create("Bad_Name", Lang::Rust, parent.path(), None).is_err());
        Ok(())
    }
}
