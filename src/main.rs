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
                for warning in config.warnings() {
                    eprintln!("{}: warning: {warning}", file.display());
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
                    // One line on stderr (not also a log event, which goes there too).
                    eprintln!("sipward: {}", one_line(&e));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The error and its causes on one line, each cause said once: a cause whose text the
/// message already holds (an error that prints its source) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(async move {
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
    });
    if result.is_err() {
        // A start-up failure: `app::start` binds every socket before it starts anything, so
        // nothing should be running; never wait on what might be.
        runtime.shutdown_background();
    }
    result
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
