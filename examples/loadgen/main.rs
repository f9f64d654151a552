//! loadgen: sipward's load generator and side-by-side benchmark harness (issue 7; results in
//! benches/RESULTS.md, the whole run by `bash benches/side-by-side.sh`). Not a test: CI only
//! builds and lints it.
//!
//! - `loadgen udp`: REGISTER → 401 → REGISTER → 200 over UDP at a fixed rate, MD5 or SHA-256.
//! - `loadgen tls-storm`: mTLS connect + handshake + REGISTER + close, as fast as it goes.
//! - `loadgen floor`: the minimal UDP responder (canned answers), the cost of socket I/O alone.
//! - `loadgen compare`: floor, Kamailio and sipward side by side; prints figures and ratios,
//!   including the `storm` phase (a long registration storm with replays, issue 13).
//!
//! Build with `cargo build --release --example loadgen --bin sipward`.

mod compare;
mod floor;
mod procs;
mod sipmsg;
mod stats;
mod tls;
mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "sipward's load generator and side-by-side benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once at start: the size difference between subcommands costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// UDP REGISTER load with Digest at a fixed rate.
    Udp(udp::UdpArgs),
    /// mTLS handshake + REGISTER + close storm.
    TlsStorm(StormArgs),
    /// The minimal UDP responder (the floor row).
    Floor(floor::FloorArgs),
    /// Floor, Kamailio and sipward side by side.
    Compare(compare::CompareArgs),
    /// Print the sipward config the harness uses (10000 accounts), for runs by hand.
    SipwardConfig {
        #[arg(long, default_value = "127.0.0.1:5060")]
        udp: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        #[arg(long, value_enum, default_value = "MD5")]
        algorithm: sipmsg::Algorithm,
        /// Replay table size (auth.replay_table_size); sipward's default when not given.
        #[arg(long)]
        replay_table_size: Option<u64>,
    },
}

#[derive(clap::Args)]
struct StormArgs {
    /// The server's TLS address.
    #[arg(long, default_value = "127.0.0.1:5061")]
    target: SocketAddr,
    /// A `sipward certs dev` folder: its CA issues one client certificate per device.
    #[arg(long)]
    certs: PathBuf,
    #[arg(long, default_value = "bench.test")]
    domain: String,
    #[arg(long, default_value_t = 100_000)]
    first_user: u32,
    #[arg(long, default_value_t = 200)]
    devices: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Udp(args) => {
            let mut r = udp::run(&args);
            r.print(&format!(
                "udp {} {} at {:.0}/s",
                args.target,
                args.algorithm.name(),
                args.rate
            ));
        }
        Cmd::TlsStorm(a) => {
            let ids = Arc::new(tls::Identities::issue(
                &a.certs,
                &a.domain,
                a.first_user,
                a.devices,
            )?);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(a.threads.max(1))
                .enable_all()
                .build()?;
            let mut r = rt.block_on(tls::storm(a.target, ids, a.concurrency, a.seconds));
            r.print(&format!("tls storm {}", a.target));
        }
        Cmd::Floor(args) => floor::run(&args)?,
        Cmd::Compare(args) => compare::run(&args)?,
        Cmd::SipwardConfig {
            udp,
            http,
            algorithm,
            replay_table_size,
        } => print!(
            "{}",
            compare::sipward_config_text(udp, http, algorithm, replay_table_size)
        ),
    }
    Ok(())
}
