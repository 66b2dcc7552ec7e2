//! The `wasmhive` binary: parses the command line, sets up logging and
//! signals, and hands over to the library.

use anyhow::Context;
use clap::Parser;
use std::io::Write as _;
use wasmhive::Daemon;
use wasmhive::cli::{Cli, Command};
use wasmhive::client::Request;

/// A failure is one line on stderr (with its causes), never a backtrace,
/// whatever `RUST_BACKTRACE` says: these are the user's errors to act on.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmhive: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = match wasmhive::telemetry::init(cli.log_format) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("wasmhive: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wasmhive-worker")
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Test(args) => test(args).await,
            Command::New(args) => new(args),
            Command::Submit(c) => {
                let request = c.args.request().map_err(anyhow::Error::msg)?;
                client(c.connection(), request, c.json).await
            }
            Command::Status(c) => {
                let request = Request::Status {
                    id: c.args.id.clone(),
                };
                client(c.connection(), request, c.json).await
            }
            Command::Tasks(c) => {
                let request = Request::Tasks {
                    status: c.args.status.clone(),
                    kind: c.args.kind.clone(),
                    limit: c.args.limit,
                };
                client(c.connection(), request, c.json).await
            }
            Command::Plugins(c) => client(c.connection(), Request::Plugins, c.json).await,
            Command::Breakers(c) => client(c.connection(), Request::Breakers, c.json).await,
            Command::Cancel(c) => {
                let request = Request::Cancel {
                    id: c.args.id.clone(),
                };
                client(c.connection(), request, c.json).await
            }
        }
    })
}

/// The client commands; a failed task (or request) is exit status 1.
async fn client(
    connection: wasmhive::client::Connection,
    request: Request,
    json: bool,
) -> anyhow::Result<()> {
    let code = wasmhive::client::run(connection, request, json).await?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// `wasmhive new`: creates the plugin and says how to build and test it.
#[allow(clippy::print_stdout)]
fn new(args: wasmhive::cli::NewArgs) -> anyhow::Result<()> {
    let dir = wasmhive::scaffold::create(&args.name, args.lang, &args.dir, args.sdk.as_deref())?;
    println!(
        "created {}
",
        dir.display()
    );
    println!(
        "{}",
        wasmhive::scaffold::next_steps(&args.name, args.lang, &dir)
    );
    Ok(())
}

/// `wasmhive test`: prints the report; a failed case is exit status 1.
#[allow(clippy::print_stdout)]
async fn test(args: wasmhive::cli::TestArgs) -> anyhow::Result<()> {
    let report = wasmhive::testkit::run(&args.options()).await?;
    print!(
        "{}",
        wasmhive::testkit::report::render(&report, args.format)
    );
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn serve(args: wasmhive::cli::ServeArgs) -> anyhow::Result<()> {
    let mut config = args.config()?;
    if !config.plugins.is_dir() {
        let dir = config.plugins.display();
        if args.strict {
            anyhow::bail!(
                "the plugins directory {dir} does not exist (--strict); create it, or point --plugins at the right one"
            );
        }
        tracing::warn!(
            "the plugins directory {dir} does not exist: it is created empty; drop <name>.wasm files in it, or point --plugins at the right one"
        );
    }
    let listen = config.listen;
    // Bind first: a port in use is reported before anything is compiled,
    // and the API answers while plugins load.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("could not listen on {listen}"))?;
    let addr = listener.local_addr()?;
    config.listen = addr;
    let daemon = Daemon::start(config).await?;
    // One line on stdout, for people and for scripts (and tests) that
    // started the daemon on port 0; a second once the plugins directory
    // has been loaded.
    println!("wasmhive listening on http://{addr}");
    tracing::info!(%addr, plugins = %daemon.config().plugins.display(), "serving");
    let registry = daemon.scheduler().registry().clone();
    tokio::spawn(async move {
        registry.scanned().await;
        // Whoever started the daemon may have stopped reading stdout.
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "wasmhive ready: {} plugins loaded",
            registry.loaded_count()
        );
        let _ = out.flush();
    });
    daemon.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
