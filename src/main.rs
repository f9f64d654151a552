//! The `sipward` binary: parse arguments, set up logging, load config, run the app, map
//! errors to exit codes. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sipward::config::{Config, LogFormat};
use sipward::transport::tls::TlsState;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sipward",
    version,
    about = "SIP registrar and proxy with an SSO token API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default). Without --config, the built-in development profile.
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file (and load the TLS files it names): exit 0, or print each bad
    /// key and why, and exit 2.
    CheckConfig { file: PathBuf },
    /// Certificate tools.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// The location store (registrar.persistence = "sqlite") named by a config file.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Check the store: integrity, schema version, rows and live bindings. Exit 0 when
    /// sound, 1 otherwise. Safe while sipward runs.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Copy the store to a new file with SQLite's online backup API (a consistent snapshot,
    /// safe while sipward runs). Restore: stop sipward, replace store_path by the copy
    /// (removing its -wal and -shm files), start sipward.
    Backup {
        #[arg(long, short)]
        config: PathBuf,
        /// The new file to write (must not exist).
        target: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Write a fresh TEST-ONLY certificate set (CA, server, clients, bad cases) to --out.
    Dev {
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                let tls = config.tls.as_ref().map(TlsState::check).transpose();
                if let Err(e) = tls {
                    eprintln!("{}: invalid configuration:\n{e}", file.display());
                    return ExitCode::from(2);
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{}: invalid configuration:\n{errors}", file.display());
                ExitCode::from(2)
            }
        },
        Command::Certs {
            command: CertsCommand::Dev { out },
        } => match sipward::devcerts::write_dev_set(&out) {
            Ok(files) => {
                for f in files {
                    println!("{}", out.join(f).display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sipward certs dev: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Store { command } => store(command),
        Command::Serve { config } => {
            let (config, dev) = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => (c, false),
                    Err(errors) => {
                        eprintln!("{}: invalid configuration:\n{errors}", path.display());
                        return ExitCode::from(2);
                    }
                },
                None => (Config::dev(), true),
            };
            init_logging(&config);
            if dev {
                tracing::warn!(
                    "running the built-in DEVELOPMENT profile (config/dev.toml): published passwords, loopback only"
                );
            }
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("sipward: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `sipward store check|backup`: one line of result, exit 0 or 1 (2 for a bad config).
fn store(command: StoreCommand) -> ExitCode {
    use sipward::location_store::{SqliteLocationStore, WallClock};
    let config_path = match &command {
        StoreCommand::Check { config } | StoreCommand::Backup { config, .. } => config,
    };
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!(
                "{}: invalid configuration:\n{errors}",
                config_path.display()
            );
            return ExitCode::from(2);
        }
    };
    let path = &config.registrar.store_path;
    match command {
        StoreCommand::Check { .. } => {
            match SqliteLocationStore::check(path, WallClock::now().now_ms()) {
                Ok(c) if c.integrity == "ok" => {
                    println!(
                        "{}: ok, schema version {}, {} bindings ({} live), {} bytes",
                        path.display(),
                        c.schema_version,
                        c.rows,
                        c.live,
                        c.bytes
                    );
                    ExitCode::SUCCESS
                }
                Ok(c) => {
                    eprintln!(
                        "{}: integrity check failed: {}",
                        path.display(),
                        c.integrity
                    );
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        StoreCommand::Backup { target, .. } => match SqliteLocationStore::backup(path, &target) {
            Ok(()) => {
                println!("{} -> {}: ok", path.display(), target.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: backup failed: {e}", path.display());
                ExitCode::FAILURE
            }
        },
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let running = sipward::app::start(&config, shutdown.clone()).await?;
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: draining");
            signals.cancel();
        });
        if let Some(tls) = running.tls_state.clone() {
            tokio::spawn(reload_on_hangup(tls, shutdown.clone()));
        }
        running.wait().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// SIGHUP reloads the TLS files named in the config (other settings need a restart).
async fn reload_on_hangup(tls: TlsState, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; TLS reload by signal is off");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                tracing::info!("SIGHUP: reloading tls material");
                // Errors are logged and counted by reload(); the old material stays.
                let _ = tls.reload();
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
