//! The `sipward` binary: parse arguments, set up logging, load config, run the app, map
//! errors to exit codes. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use sipward::config::{Config, LogFormat};
use sipward::transport::tls::TlsState;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc's malloc: a REGISTER's binding record is built on a receive
/// thread and freed on the location store's writer thread, and glibc pays for every such
/// cross-thread free (arena locks, consolidation); benches/RESULTS.md, "Durable
/// registrations".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `--version` prints after the name: the crate version and the git commit (build.rs).
const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SIPWARD_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "sipward",
    version = VERSION_LINE,
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
        /// The TOML config file (the package installs /etc/sipward/sipward.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file (and load the TLS files it names): exit 0, or print each bad
    /// key and why, and exit 2.
    CheckConfig {
        /// The TOML config file to check.
        file: PathBuf,
    },
    /// Certificate tools.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Write the man pages (`man/`) and shell completions (`completions/`) into --out; used
    /// when building the package.
    #[command(hide = true)]
    GenerateAssets {
        #[arg(long)]
        out: PathBuf,
    },
    /// Operate a running sipward over its admin API: bindings, devices, users, TLS, status.
    /// URL from --url or SIPWARD_ADMIN_URL; token from --token-file, SIPWARD_ADMIN_TOKEN or
    /// SIPWARD_ADMIN_TOKEN_FILE.
    Ctl(sipward::ctl::CtlArgs),
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
    /// Keys are written 0600; the parent of --out must exist.
    Dev {
        /// The folder to write into; created when missing, but its parent must exist.
        #[arg(long)]
        out: PathBuf,
        /// Replace a set already in --out.
        #[arg(long)]
        force: bool,
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
                for exposed in sipward::fsutil::exposed(&config.secret_files) {
                    eprintln!(
                        "warning: {} is readable by group or others (mode {:04o}); chmod 600 it",
                        exposed.path.display(),
                        exposed.mode
                    );
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
            command: CertsCommand::Dev { out, force },
        } => match sipward::devcerts::write_dev_set(&out, force) {
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
        Command::GenerateAssets { out } => match generate_assets(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sipward generate-assets: {}", one_line(&e));
                ExitCode::FAILURE
            }
        },
        Command::Store { command } => store(command),
        Command::Ctl(args) => match sipward::ctl::run(args) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sipward ctl: {e}");
                ExitCode::from(e.exit_code())
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
            tracing::info!(
                version = %sipward::VERSION,
                commit = %sipward::GIT_COMMIT,
                "sipward starting"
            );
            // The development profile's files are published TEST-ONLY material: no warning.
            let secret_files = if dev {
                &[][..]
            } else {
                &config.secret_files[..]
            };
            for file in sipward::fsutil::exposed(secret_files) {
                tracing::warn!(
                    path = %file.path.display(),
                    mode = format_args!("{:04o}", file.mode),
                    "secret file is readable by group or others; chmod 600 it (owned by the sipward user)"
                );
            }
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
    if config.registrar.persistence == sipward::config::Persistence::Redis {
        eprintln!(
            "registrar.persistence = \"redis\": the bindings are in Redis (redis.urls); check and back it up with Redis's own tools (redis-cli, BGSAVE)"
        );
        return ExitCode::from(2);
    }
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
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Man pages (one per command) and bash, zsh and fish completions, from the CLI definition.
fn generate_assets(out: &std::path::Path) -> anyhow::Result<()> {
    use clap_complete::Shell;
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    clap_mangen::generate_to(Cli::command(), &man).context("writing man pages")?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "sipward", &completions)
            .with_context(|| format!("writing {shell} completions"))?;
    }
    Ok(())
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
        // The handlers are installed before anything is served: a SIGTERM or SIGHUP that
        // arrives as soon as a phone could register must not meet the default action (exit).
        let term = Signals::install();
        let hup = signal(SignalKind::hangup());
        let running = sipward::app::start(&config, shutdown.clone()).await?;
        let signals = shutdown.clone();
        tokio::spawn(async move {
            term.wait().await;
            tracing::info!("shutting down: draining");
            signals.cancel();
        });
        match (running.tls_state.clone(), hup) {
            (Some(tls), Ok(hup)) => {
                tokio::spawn(reload_on_hangup(tls, hup, shutdown.clone()));
            }
            (Some(_), Err(_)) => {
                tracing::warn!("cannot listen for SIGHUP; TLS reload by signal is off");
            }
            (None, _) => {}
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
async fn reload_on_hangup(tls: TlsState, mut hup: Signal, shutdown: CancellationToken) {
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

/// SIGTERM (or Ctrl-C), with its handler installed when this is made.
struct Signals {
    term: Option<Signal>,
}

impl Signals {
    fn install() -> Signals {
        Signals {
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn wait(self) {
        match self.term {
            Some(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
