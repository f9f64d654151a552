//! The side-by-side harness: starts the floor responder, Kamailio and sipward in turn on
//! loopback with equivalent setups, drives the same workloads at each, and prints for each
//! server completed registrations/s, failures, retransmissions, server CPU per completed
//! registration (utime + stime of every process of the server, from /proc), p50/p99 response
//! times and memory, then the ratios sipward/Kamailio.
//!
//! Phases (`--phases`, comma-separated, in this order):
//! - `memory`: memory per binding in the steady state: register `USERS` users, wait until
//!   every transaction has ended, then register `USERS` more and divide the growth (RSS and
//!   PSS; Kamailio's shared memory too) by `USERS`. Transient per-request memory of the second
//!   batch reuses what the first batch freed, so what remains is the bindings.
//! - `sipp`: the SIPp scenario benches/sipp/reg-digest.xml (MD5) at each `--rates` for
//!   `--seconds`, plus memory per binding after the first run (10000 users).
//! - `max`: this generator, MD5: the highest clean rate (0 failed, at most 1 % of requests
//!   retransmitted, completions at 97 % of the offered rate) in `--step-seconds` steps from
//!   `--search-from`, times `--search-factor` per step; a step that is not clean is retried once.
//! - `half`: every server at half of sipward's highest clean rate (from `max`, or `--half-rate`).
//! - `overload`: every server at twice its own highest clean rate: goodput and memory.
//! - `sha256`: this generator with SHA-256 Digest at each `--rates`.
//! - `tls`: mTLS handshake + REGISTER + close storms, then `--idle` idle TLS connections:
//!   memory per connection, then each registers and re-registers over its connection.
//! - `storm` (issue 13): a registration storm on a fresh server: the `USERS` accounts
//!   re-registering at each `--reg-storm-rates` (and at `--reg-storm-peak-share` of sipward's
//!   highest clean rate when `max` ran) for `--reg-storm-seconds`, with the success ratio and
//!   memory sampled every `--reg-storm-sample-secs`. Meanwhile a second client registers one
//!   more user per second and replays the `Authorization` headers it captured (fresh branch,
//!   so each is a new transaction): every replay answered 200 is counted as accepted.
//!
//! sipward runs with its default limits; `--sipward-sip` and `--sipward-auth` add lines for a
//! tuned row.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::procs;
use crate::sipmsg::{self, Algorithm};
use crate::stats::Samples;
use crate::tls;
use crate::udp::{self, UdpArgs, UdpReport};

const DOMAIN: &str = "bench.test";
const FIRST_USER: u32 = 100_000;
const USERS: u32 = 10_000;
/// Accounts each server knows: the `USERS` every load phase uses, and as many more that only
/// the `memory` phase registers.
const ACCOUNTS: u32 = 2 * USERS;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Memory,
    Sipp,
    Max,
    Half,
    Overload,
    Sha256,
    Tls,
    Storm,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Floor,
    Kamailio,
    Sipward,
    /// Kamailio with usrloc `db_mode = 1` (write-through) on db_sqlite (issue 16).
    KamailioSqlite,
    /// sipward with `registrar.persistence = "sqlite"` (issue 16).
    SipwardDurable,
    /// Kamailio with usrloc `db_mode = 1` on db_redis (Debian's kamailio-redis-modules), on a
    /// `redis-server` this run starts (issue 17).
    KamailioRedis,
    /// sipward with `registrar.persistence = "redis"` on a `redis-server` this run starts on a
    /// free loopback port (issue 17); the server's CPU is sipward's alone (Redis's is
    /// reported by benches/redis.sh).
    SipwardRedis,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Floor => "floor",
            Kind::Kamailio => "kamailio",
            Kind::Sipward => "sipward",
            Kind::KamailioSqlite => "kamailio-sqlite",
            Kind::SipwardDurable => "sipward-durable",
            Kind::SipwardRedis => "sipward-redis",
            Kind::KamailioRedis => "kamailio-redis",
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub(crate) struct CompareArgs {
    /// The sipward binary (build it with `cargo build --release`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/sipward"))]
    pub(crate) sipward: PathBuf,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/kamailio/registrar.cfg"))]
    pub(crate) kamailio_cfg: PathBuf,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sipp/reg-digest.xml"))]
    pub(crate) scenario: PathBuf,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "memory,sipp,max,half,overload,sha256,tls,storm"
    )]
    pub(crate) phases: Vec<Phase>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "floor,kamailio,sipward"
    )]
    pub(crate) servers: Vec<Kind>,
    /// Fixed offered loads, registrations per second.
    #[arg(long, value_delimiter = ',', default_value = "2000,4000")]
    pub(crate) rates: Vec<f64>,
    /// Length of each fixed-load run.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Length of each step of the rate search.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) step_seconds: f64,
    #[arg(long, default_value_t = 2000.0)]
    pub(crate) search_from: f64,
    /// Where the rate search starts for Kamailio with usrloc on a database (kamailio-sqlite,
    /// kamailio-redis), whose clean rates lie far below the others'.
    #[arg(long, default_value_t = 500.0)]
    pub(crate) db_search_from: f64,
    #[arg(long, default_value_t = 1.25)]
    pub(crate) search_factor: f64,
    #[arg(long, default_value_t = 100_000.0)]
    pub(crate) search_max: f64,
    /// Rate for `half` when `max` did not run for sipward.
    #[arg(long)]
    pub(crate) half_rate: Option<f64>,
    /// Highest clean rates for `overload` when `max` did not run: floor,kamailio,sipward.
    #[arg(long, value_delimiter = ',')]
    pub(crate) peak_rates: Vec<f64>,
    /// Generator sockets/threads for UDP.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// Idle TLS connections.
    #[arg(long, default_value_t = 5000)]
    pub(crate) idle: usize,
    #[arg(long, default_value_t = 10.0)]
    pub(crate) storm_seconds: f64,
    /// Connections in flight during a storm.
    #[arg(long, default_value_t = 16)]
    pub(crate) storm_concurrency: usize,
    /// Client certificates (devices) the storm cycles through.
    #[arg(long, default_value_t = 200)]
    pub(crate) storm_devices: usize,
    /// Generator runtime threads for TLS.
    #[arg(long, default_value_t = 2)]
    pub(crate) tls_threads: usize,
    /// Extra TOML lines for sipward's [sip] table (none: sipward's defaults), e.g.
    /// `max_transactions = 1000000` for a tuned row.
    #[arg(long, default_value = "")]
    pub(crate) sipward_sip: String,
    /// Extra TOML lines for sipward's [auth] table (none: sipward's defaults).
    #[arg(long, default_value = "")]
    pub(crate) sipward_auth: String,
    /// TOML lines for sipward's [registrar] table: by default bindings in memory (as
    /// Kamailio's usrloc db_mode=0); `persistence = "sqlite"` for the durable row (issue 16).
    #[arg(long, default_value = "persistence = \"none\"")]
    pub(crate) sipward_registrar: String,
    /// Offered rates of the registration storm, registrations per second.
    #[arg(long, value_delimiter = ',', default_value = "2500")]
    pub(crate) reg_storm_rates: Vec<f64>,
    /// Also storm at this share of sipward's highest clean rate, when `max` ran for sipward
    /// (0 for none).
    #[arg(long, default_value_t = 0.8)]
    pub(crate) reg_storm_peak_share: f64,
    /// Length of each registration storm.
    #[arg(long, default_value_t = 300.0)]
    pub(crate) reg_storm_seconds: f64,
    /// Sampling interval of the success ratio and memory during a storm.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) reg_storm_sample_secs: f64,
    /// Captured Authorization headers replayed per second during a storm.
    #[arg(long, default_value_t = 20)]
    pub(crate) reg_storm_replays: usize,
    /// UDP workers for sipward (sip.udp_workers) and Kamailio (children).
    #[arg(long, default_value_t = 2)]
    pub(crate) workers: usize,
    /// Kamailio's TLS worker processes (tcp_children). 1 by default: Debian 12's Kamailio
    /// 5.6.3 with OpenSSL 3 double-frees and crashes with several (kamailio issue #3791).
    #[arg(long, default_value_t = 1)]
    pub(crate) kamailio_tcp_children: usize,
    /// Keep the work folder (configs, server logs, SIPp files) after the run.
    #[arg(long)]
    pub(crate) keep: bool,
}

/// One measured row.
struct Row {
    phase: String,
    server: Kind,
    offered: f64,
    completed: u64,
    rate: f64,
    failed: u64,
    retrans: u64,
    cpu_us: f64,
    /// Share of `cpu_us` spent in the kernel (stime).
    sys_share: f64,
    lat_a: String,
    lat_b: String,
    load: String,
}

pub(crate) fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let work_dir = tempfile::Builder::new()
        .prefix("sipward-bench-")
        .tempdir()?;
    let work = work_dir.path();
    println!("# side-by-side run {}", now_text());
    println!("machine: {}", machine());
    println!("load average at start: {}", loadavg());
    println!("work dir: {}", work.display());
    println!("sipward: {}", args.sipward.display());
    println!("kamailio: {}", tool_version("kamailio", &["-v"]));
    println!("sipp: {}", tool_version("sipp", &["-v"]));
    println!();
    anyhow::ensure!(
        args.sipward.exists(),
        "{} missing: cargo build --release",
        args.sipward.display()
    );
    let certs = work.join("certs");
    let made = Command::new(&args.sipward)
        .args(["certs", "dev", "--out"])
        .arg(&certs)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(made.success(), "sipward certs dev failed");
    write_users_csv(work)?;

    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut best: Vec<(Kind, f64)> = Vec::new();
    let servers = args.servers.clone();
    for phase in &args.phases {
        match phase {
            Phase::Memory => {
                for &kind in servers.iter().filter(|k| **k != Kind::Floor) {
                    phase_memory(args, work, &certs, kind, &mut notes)?;
                }
            }
            Phase::Sipp => {
                for &kind in &servers {
                    phase_sipp(args, work, &certs, kind, &mut rows, &mut notes)?;
                }
            }
            Phase::Max => {
                for &kind in &servers {
                    let b = phase_max(args, work, &certs, kind, &mut rows)?;
                    best.push((kind, b));
                }
            }
            Phase::Half => {
                let rate = best
                    .iter()
                    .find(|(k, _)| *k == Kind::Sipward)
                    .map(|(_, r)| r / 2.0)
                    .or(args.half_rate)
                    .unwrap_or(4000.0);
                for &kind in &servers {
                    let mut r = fixed(
                        args,
                        work,
                        &certs,
                        kind,
                        Algorithm::Md5,
                        &[rate],
                        "half",
                        &mut notes,
                    )?;
                    rows.append(&mut r);
                }
            }
            Phase::Overload => {
                for (i, &kind) in servers.iter().enumerate() {
                    let peak = best
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map(|(_, r)| *r)
                        .or(args.peak_rates.get(i).copied());
                    let Some(peak) = peak else {
                        println!("overload {}: no peak rate known; skipped", kind.name());
                        continue;
                    };
                    phase_overload(args, work, &certs, kind, peak, &mut rows, &mut notes)?;
                }
            }
            Phase::Sha256 => {
                for &kind in servers.iter().filter(|k| **k != Kind::Floor) {
                    let mut r = fixed(
                        args,
                        work,
                        &certs,
                        kind,
                        Algorithm::Sha256,
                        &args.rates,
                        "sha256",
                        &mut notes,
                    )?;
                    rows.append(&mut r);
                }
            }
            Phase::Tls => {
                for &kind in servers.iter().filter(|k| **k != Kind::Floor) {
                    phase_tls(args, work, &certs, kind, &mut notes)?;
                }
            }
            Phase::Storm => {
                let mut rates: Vec<(f64, String)> = args
                    .reg_storm_rates
                    .iter()
                    .map(|r| (*r, format!("{r:.0}/s")))
                    .collect();
                if let Some((_, peak)) = best.iter().find(|(k, _)| *k == Kind::Sipward) {
                    if args.reg_storm_peak_share > 0.0 && *peak > 0.0 {
                        let share = args.reg_storm_peak_share;
                        rates.push((
                            (peak * share).round(),
                            format!("{:.0} % of sipward's {peak:.0}/s", share * 100.0),
                        ));
                    }
                }
                for (rate, label) in &rates {
                    for &kind in servers.iter().filter(|k| **k != Kind::Floor) {
                        phase_storm(
                            args, work, &certs, kind, *rate, label, &mut rows, &mut notes,
                        )?;
                    }
                }
            }
        }
    }

    println!();
    println!("## summary ({})", now_text());
    println!();
    println!("| phase | server | offered/s | completed | completed/s | failed | retrans | server CPU us/reg | of which kernel | p50/p99 ms (1) | p50/p99 ms (2) | load avg |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {} | {:.0} | {} | {} | {:.1} | {:.0} % | {} | {} | {} |",
            r.phase,
            r.server.name(),
            r.offered,
            r.completed,
            r.rate,
            r.failed,
            r.retrans,
            r.cpu_us,
            r.sys_share * 100.0,
            r.lat_a,
            r.lat_b,
            r.load
        );
    }
    println!();
    println!("(1) sipp: REGISTER→401 (SIPp's clock, 4 ms steps); own generator: REGISTER→401");
    println!("(2) sipp: REGISTER→200; own generator: whole registration (both round trips)");
    println!();
    println!("## ratios sipward/kamailio (same phase and offered load)");
    for r in rows.iter().filter(|r| r.server == Kind::Sipward) {
        if let Some(k) = rows
            .iter()
            .find(|k| k.server == Kind::Kamailio && k.phase == r.phase && k.offered == r.offered)
        {
            println!(
                "- {} at {:.0}/s: CPU per registration {:.2}x, completed/s {:.2}x",
                r.phase,
                r.offered,
                r.cpu_us / k.cpu_us.max(1e-9),
                r.rate / k.rate.max(1e-9)
            );
        }
    }
    if let (Some(s), Some(k)) = (
        best.iter().find(|(k, _)| *k == Kind::Sipward),
        best.iter().find(|(k, _)| *k == Kind::Kamailio),
    ) {
        println!(
            "- highest clean rate: sipward {:.0}/s, kamailio {:.0}/s: {:.2}x",
            s.1,
            k.1,
            s.1 / k.1
        );
    }
    durable_ratios(&rows, &best);
    for n in &notes {
        println!("- {n}");
    }
    println!();
    println!("load average at end: {}", loadavg());
    if args.keep {
        println!("work dir kept: {}", work_dir.keep().display());
    }
    Ok(())
}

/// Issue 16's figures: durable sipward against in-memory sipward (CPU per registration at
/// the same offered rate) and against Kamailio write-through (highest clean rate).
fn durable_ratios(rows: &[Row], best: &[(Kind, f64)]) {
    for r in rows.iter().filter(|r| r.server == Kind::SipwardDurable) {
        if let Some(m) = rows
            .iter()
            .find(|m| m.server == Kind::Sipward && m.phase == r.phase && m.offered == r.offered)
        {
            println!(
                "- {} at {:.0}/s: sipward-durable/sipward CPU per registration {:.2}x",
                r.phase,
                r.offered,
                r.cpu_us / m.cpu_us.max(1e-9)
            );
        }
    }
    let rate = |kind| best.iter().find(|(k, _)| *k == kind).map(|(_, r)| *r);
    if let (Some(d), Some(k)) = (rate(Kind::SipwardDurable), rate(Kind::KamailioSqlite)) {
        println!(
            "- highest clean rate: sipward-durable {d:.0}/s, kamailio-sqlite (usrloc db_mode=1) {k:.0}/s: {}",
            times(d, k)
        );
    }
    if let (Some(d), Some(m)) = (rate(Kind::SipwardDurable), rate(Kind::Sipward)) {
        println!("- highest clean rate: sipward-durable {d:.0}/s, sipward in memory {m:.0}/s");
    }
    for r in rows.iter().filter(|r| r.server == Kind::SipwardRedis) {
        if let Some(m) = rows
            .iter()
            .find(|m| m.server == Kind::Sipward && m.phase == r.phase && m.offered == r.offered)
        {
            println!(
                "- {} at {:.0}/s: sipward-redis/sipward CPU per registration {:.2}x",
                r.phase,
                r.offered,
                r.cpu_us / m.cpu_us.max(1e-9)
            );
        }
    }
    if let Some(r) = rate(Kind::SipwardRedis) {
        println!("- highest clean rate: sipward-redis {r:.0}/s");
    }
    if let (Some(s), Some(k)) = (rate(Kind::SipwardRedis), rate(Kind::KamailioRedis)) {
        println!(
            "- highest clean rate: sipward-redis {s:.0}/s, kamailio-redis (usrloc db_mode=1 on db_redis) {k:.0}/s: {}",
            times(s, k)
        );
    }
}

/// `a / b` as a ratio, or a note when `b` had no clean step.
fn times(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "no ratio (no clean step below)".to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Phases

fn phase_memory(
    args: &CompareArgs,
    work: &Path,
    certs: &Path,
    kind: Kind,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let server = Server::start(args, work, certs, kind, Algorithm::Md5, false)?;
    warm(args, &server);
    server.settle();
    let mem1 = server.memory();
    let mut second = udp_args(
        args,
        &server,
        Algorithm::Md5,
        2000.0,
        None,
        Some(u64::from(USERS)),
    );
    second.first_user = FIRST_USER + USERS;
    let mut r = udp::run(&second);
    r.print(&format!("memory {}: second {USERS} users", kind.name()));
    server.settle();
    let mem2 = server.memory();
    let bindings = r.completed as f64;
    notes.push(memory_note(
        kind,
        &format!(
            "steady state: {} more bindings on top of {USERS}, after their transactions ended",
            r.completed
        ),
        &mem1,
        &mem2,
        bindings,
    ));
    Ok(())
}

fn phase_sipp(
    args: &CompareArgs,
    work: &Path,
    certs: &Path,
    kind: Kind,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let server = Server::start(args, work, certs, kind, Algorithm::Md5, false)?;
    let mem0 = server.memory();
    for (i, &rate) in args.rates.iter().enumerate() {
        server.settle();
        let count = (rate * args.seconds).round() as u64;
        let load = loadavg();
        let cpu0 = server.cpu();
        let mut s = run_sipp(args, work, server.udp, rate, count)?;
        server.settle();
        let cpu = server.cpu() - cpu0;
        println!(
            "sipp {} {rate:.0}/s: {} successful, {} failed, {} retransmissions in {:.2} s ({:.0}/s); server cpu {} us/reg; p50/p99 ms 401 {} 200 {}",
            kind.name(), s.successful, s.failed, s.retrans, s.wall, s.successful as f64 / s.wall,
            per(cpu, s.successful), s.rtd1.p50_p99(), s.rtd2.p50_p99()
        );
        rows.push(Row {
            phase: "sipp MD5".into(),
            server: kind,
            offered: rate,
            completed: s.successful,
            rate: s.successful as f64 / s.wall,
            failed: s.failed,
            retrans: s.retrans,
            cpu_us: per_us(cpu, s.successful),
            sys_share: cpu.sys / cpu.total().max(1e-9),
            lat_a: s.rtd1.p50_p99(),
            lat_b: s.rtd2.p50_p99(),
            load,
        });
        if i == 0 && count >= u64::from(USERS) {
            server.settle();
            let mem1 = server.memory();
            notes.push(memory_note(
                kind,
                "after the first SIPp run (10000 bindings)",
                &mem0,
                &mem1,
                f64::from(USERS),
            ));
        }
    }
    Ok(())
}

/// The highest clean rate with this generator (MD5).
fn phase_max(
    args: &CompareArgs,
    work: &Path,
    certs: &Path,
    kind: Kind,
    rows: &mut Vec<Row>,
) -> anyhow::Result<f64> {
    let server = Server::start(args, work, certs, kind, Algorithm::Md5, false)?;
    warm(args, &server);
    let mut rate = match kind {
        Kind::KamailioSqlite | Kind::KamailioRedis => args.db_search_from,
        _ => args.search_from,
    };
    let mut best = 0.0;
    // A step that is not clean is run once more before the search stops: on a shared machine
    // one burst of someone else's work can cost a step its cleanliness.
    let mut retried = false;
    while rate <= args.search_max {
        server.settle();
        let redis0 = server.redis_usage();
        let (mut r, cpu, load) =
            measured_udp(args, &server, Algorithm::Md5, rate, args.step_seconds);
        if let (Some((c0, t0)), Some((c1, t1))) = (redis0, server.redis_usage()) {
            let n = (r.completed as f64).max(1.0);
            println!(
                "  redis: {:.3} round trips per registration (sipward's), {:.1} us Redis CPU per registration",
                (t1 - t0) / n,
                (c1 - c0) * 1e6 / n
            );
        }
        let clean = r.is_clean();
        r.print(&format!(
            "max {} step {rate:.0}/s ({})",
            kind.name(),
            if clean { "clean" } else { "NOT clean" }
        ));
        println!(
            "  server cpu {} us per registration; load {load}",
            per(cpu, r.completed)
        );
        rows.push(udp_row(
            &format!("max step{}", if clean { "" } else { " (not clean)" }),
            kind,
            &mut r,
            cpu,
            load,
        ));
        if !clean {
            if retried {
                break;
            }
            retried = true;
            continue;
        }
        retried = false;
        best = rate;
        rate = (rate * args.search_factor).round();
    }
    println!("max {}: highest clean rate {best:.0}/s", kind.name());
    Ok(best)
}

fn phase_overload(
    args: &CompareArgs,
    work: &Path,
    certs: &Path,
    kind: Kind,
    peak: f64,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let server = Server::start(args, work, certs, kind, Algorithm::Md5, false)?;
    warm(args, &server);
    server.settle();
    let mem0 = server.memory();
    let rate = 2.0 * peak;
    let (mut r, cpu, load) = measured_udp(args, &server, Algorithm::Md5, rate, args.seconds);
    let mem1 = server.memory();
    r.print(&format!(
        "overload {} at {rate:.0}/s (2x its highest clean rate {peak:.0}/s)",
        kind.name()
    ));
    let goodput = r.completed as f64 / args.seconds;
    println!(
        "  goodput {goodput:.0}/s = {:.0} % of peak; memory {} -> {}",
        goodput / peak * 100.0,
        mem0.text(),
        mem1.text()
    );
    notes.push(format!(
        "overload {} at {rate:.0}/s: goodput {goodput:.0}/s = {:.0} % of its peak {peak:.0}/s; memory {} -> {}",
        kind.name(),
        goodput / peak * 100.0,
        mem0.text(),
        mem1.text()
    ));
    rows.push(udp_row("overload 2x", kind, &mut r, cpu, load));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn fixed(
    args: &CompareArgs,
    work: &Path,
    certs: &Path,
    kind: Kind,
    algorithm: Algorithm,
    rates: &[f64],
    label: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let server = Server::start(args, work, certs, kind, algorithm, false)?;
    let mem0 = server.memory();
    warm(args, &server);
    server.settle();
    let mem1 = server.memory();
    notes.push(memory_note(
        kind,
        &format!("{label}: after the warm-up (10000 bindings)"),
        &mem0,
        &mem1,
        f64::from(USERS),
    ));
    let mut rows = Vec::new();
    for &rate in rates {
        server.settle();
        let (mut r, cpu, load) = measured_udp(args, &server, algorithm, rate, args.seconds);
        r.print(&format!(
            "{label} {} {} at {rate:.0}/s",
            kind.name(),
            algorithm.name()
        ));
        println!(
            "  server cpu {} us per registration; load {load}",
            per(cpu, r.completed)
        );
        rows.push(udp_row(
            &format!("{label} {}", algorithm.name()),
            kind,
            &mut r,
            cpu,
            load,
        ));
    }
    Ok(rows)
}

/// What the replaying client saw during a storm.
#[derive(Default, Debug)]
struct Replays {
    /// Registrations of its own that succeeded, each giving one captured header.
    captured: u64,
    sent: u64,
    /// Replays answered 200: must stay 0.
    accepted: u64,
    /// Replays answered otherwise (401).
    refused: u64,
    /// Replays without an answer within 4 s.
    unanswered: u64,
}

#[allow(clippy::too_many_arguments)]
fn phase_storm(
    args: &CompareArgs,
    work: &Path,
    certs: &Path,
    kind: Kind,
    rate: f64,
    label: &str,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = Server::start(args, work, certs, kind, Algorithm::Md5, false)?;
    let mem0 = server.memory();
    let load = loadavg();
    let cpu0 = server.cpu();
    let progress = Arc::new(udp::Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let replayer = {
        let (stop, target, per_second) = (stop.clone(), server.udp, args.reg_storm_replays);
        std::thread::spawn(move || replay_during(target, per_second, &stop))
    };
    let load_run = {
        let udp_args = udp_args(
            args,
            &server,
            Algorithm::Md5,
            rate,
            Some(args.reg_storm_seconds),
            None,
        );
        let progress = progress.clone();
        std::thread::spawn(move || udp::run_with_progress(&udp_args, Some(progress)))
    };
    println!(
        "storm {} at {rate:.0}/s ({label}) for {:.0} s: {}",
        kind.name(),
        args.reg_storm_seconds,
        mem0.text()
    );
    let started = Instant::now();
    let (mut last_ok, mut last_failed) = (0u64, 0u64);
    let (mut rss_min, mut rss_max) = (u64::MAX, 0u64);
    let mut worst_window = 100.0f64;
    while !load_run.is_finished() {
        std::thread::sleep(Duration::from_secs_f64(args.reg_storm_sample_secs));
        let ok = progress.completed.load(Ordering::Relaxed);
        let failed = progress.failed.load(Ordering::Relaxed);
        let (d_ok, d_failed) = (ok - last_ok, failed - last_failed);
        (last_ok, last_failed) = (ok, failed);
        let window = if d_ok + d_failed == 0 {
            100.0
        } else {
            d_ok as f64 / (d_ok + d_failed) as f64 * 100.0
        };
        let mem = server.memory();
        if started.elapsed().as_secs_f64() > args.reg_storm_sample_secs * 1.5 {
            rss_min = rss_min.min(mem.rss_kib);
        }
        rss_max = rss_max.max(mem.rss_kib);
        if d_ok + d_failed > 0 {
            worst_window = worst_window.min(window);
        }
        let mut line = format!(
            "  t={:>4.0}s completed {ok} (+{d_ok}) failed {failed} (+{d_failed}) window success {window:.2} %; {}",
            started.elapsed().as_secs_f64(),
            mem.text()
        );
        if let Some(http) = server.http {
            for m in [
                "sipward_transactions",
                "sipward_transactions_evicted",
                "sipward_sip_dropped_total{reason=\"overloaded\"}",
                "sipward_auth_failures_total{reason=\"stale_nonce\"}",
                "sipward_auth_failures_total{reason=\"replay\"}",
            ] {
                let _ = write!(line, "; {m} {}", metric(http, m).unwrap_or(0.0));
            }
        }
        println!("{line}");
    }
    let mut r = load_run.join().expect("load thread");
    stop.store(true, Ordering::Relaxed);
    let replays = replayer.join().expect("replay thread");
    let mem1 = server.memory();
    let cpu = server.cpu() - cpu0;
    r.print(&format!("storm {} at {rate:.0}/s ({label})", kind.name()));
    let success = r.completed as f64 / r.started.max(1) as f64 * 100.0;
    println!(
        "  success {success:.3} % ({} of {}), worst {:.0} s window {worst_window:.2} %, stale retries {}; replays {replays:?}; memory {} -> {}, RSS over the run {} .. {} KiB",
        r.completed,
        r.started,
        args.reg_storm_sample_secs,
        r.stale_retries,
        mem0.text(),
        mem1.text(),
        rss_min,
        rss_max
    );
    notes.push(format!(
        "storm {} at {rate:.0}/s ({label}), {:.0} s: {success:.3} % succeeded ({} of {}; worst {:.0} s window {worst_window:.2} %), {} stale retries; replays: {} sent, {} accepted, {} refused, {} unanswered; RSS {} KiB at start, {} .. {} KiB during the run (after the first sample), peak {} KiB",
        kind.name(),
        args.reg_storm_seconds,
        r.completed,
        r.started,
        args.reg_storm_sample_secs,
        r.stale_retries,
        replays.sent,
        replays.accepted,
        replays.refused,
        replays.unanswered,
        mem0.rss_kib,
        rss_min,
        rss_max,
        mem1.peak_kib
    ));
    rows.push(udp_row(&format!("storm {label}"), kind, &mut r, cpu, load));
    Ok(())
}

/// The replaying client of a storm: once a second it registers one user of its own (from the
/// accounts the load does not use), keeps the authenticated REGISTER, and sends
/// `per_second` of the REGISTERs kept so far again with a fresh branch: the newest, and
/// older ones at random. A server that accepts one has accepted a replay.
fn replay_during(
    target: SocketAddr,
    per_second: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> Replays {
    struct Captured {
        user: String,
        call_id: String,
        auth: String,
    }
    let mut out = Replays::default();
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return out;
    };
    let _ = sock.connect(target);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(250)));
    let Ok(local) = sock.local_addr() else {
        return out;
    };
    let uri = format!("sip:{DOMAIN}");
    let mut kept: Vec<Captured> = Vec::new();
    let mut n = 0u32;
    let build = |user: &str, call_id: &str, branch: &str, cseq: u32, auth: Option<&str>| {
        let mut bytes = Vec::with_capacity(800);
        sipmsg::Register {
            domain: DOMAIN,
            transport: "UDP",
            local,
            user,
            call_id,
            tag: "replayer",
            branch,
            cseq,
            expires: 3600,
            contact_port: local.port(),
            authorization: auth,
        }
        .write(&mut bytes);
        bytes
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let tick = Instant::now();
        let i = n % USERS;
        let user = format!("u{}", FIRST_USER + USERS + i);
        let password = format!("pw{}", FIRST_USER + USERS + i);
        let call_id = format!("replay-{n}-{:08x}@loadgen", rand::random::<u32>());
        let first = build(&user, &call_id, &format!("r{n}a"), 1, None);
        let challenge = exchange(&sock, &first, &call_id, 1)
            .and_then(|m| sipmsg::challenge(&m, Algorithm::Md5));
        if let Some(c) = challenge {
            let ha1 = sipmsg::ha1(Algorithm::Md5, &user, DOMAIN, &password);
            let auth =
                sipmsg::authorization(Algorithm::Md5, &ha1, &user, &uri, &c, 1, &format!("rc{n}"));
            let second = build(&user, &call_id, &format!("r{n}b"), 2, Some(&auth));
            if exchange(&sock, &second, &call_id, 2).and_then(|m| sipmsg::status(&m)) == Some(200) {
                out.captured += 1;
                kept.push(Captured {
                    user,
                    call_id,
                    auth,
                });
            }
        }
        for k in 0..per_second.min(kept.len()) {
            let pick = if k == 0 {
                kept.len() - 1
            } else {
                rand::random_range(0..kept.len())
            };
            let c = &kept[pick];
            let replay = build(&c.user, &c.call_id, &format!("r{n}x{k}"), 2, Some(&c.auth));
            out.sent += 1;
            match exchange(&sock, &replay, &c.call_id, 2).and_then(|m| sipmsg::status(&m)) {
                Some(200) => out.accepted += 1,
                Some(_) => out.refused += 1,
                None => out.unanswered += 1,
            }
        }
        n += 1;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    out
}

/// Sends `request` and returns the final response with its Call-ID and CSeq, retransmitting
/// every 500 ms for 4 s.
fn exchange(sock: &UdpSocket, request: &[u8], call_id: &str, cseq: u32) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_535];
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let _ = sock.send(request);
        let resend = Instant::now() + Duration::from_millis(500);
        while Instant::now() < resend {
            let Ok(len) = sock.recv(&mut buf) else {
                continue;
            };
            let msg = &buf[..len];
            let final_response = sipmsg::status(msg).is_some_and(|s| s >= 200);
            if final_response
                && sipmsg::call_id(msg) == Some(call_id)
                && sipmsg::cseq(msg) == Some(cseq)
            {
                return Some(msg.to_vec());
            }
        }
    }
    None
}

fn phase_tls(
    args: &CompareArgs,
    work: &Path,
    certs: &Path,
    kind: Kind,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let devices = args.storm_devices.max(args.idle);
    let ids = Arc::new(tls::Identities::issue(certs, DOMAIN, FIRST_USER, devices)?);
    let storm_ids = Arc::new(tls::Identities::issue(
        certs,
        DOMAIN,
        FIRST_USER,
        args.storm_devices,
    )?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.tls_threads.max(1))
        .enable_all()
        .build()?;

    // 1. Storm.
    {
        let server = Server::start(args, work, certs, kind, Algorithm::Md5, true)?;
        let addr = server.tls.expect("tls listener");
        // Warm-up: every storm device registers once.
        rt.block_on(tls::storm(
            addr,
            storm_ids.clone(),
            args.storm_concurrency,
            2.0,
        ));
        server.settle();
        let load = loadavg();
        let cpu0 = server.cpu();
        let mut s = rt.block_on(tls::storm(
            addr,
            storm_ids.clone(),
            args.storm_concurrency,
            args.storm_seconds,
        ));
        let cpu = server.cpu() - cpu0;
        s.print(&format!(
            "tls storm {} (mTLS TLS 1.3 P-256 handshake + REGISTER + close, {} in flight)",
            kind.name(),
            args.storm_concurrency
        ));
        println!(
            "  server cpu {} us per connection; load {load}",
            per(cpu, s.completed)
        );
        notes.push(format!(
            "tls storm {}: {:.0} connections/s ({} done, {} failed), server CPU {} us per connection, generator CPU {:.0} us per connection, p50/p99 ms {}, load {load}",
            kind.name(), s.rate(), s.completed, s.failed, per(cpu, s.completed),
            s.client_cpu / s.completed.max(1) as f64 * 1e6, s.latency.p50_p99()
        ));
    }

    // 2. Idle connections on a fresh server.
    let server = Server::start(args, work, certs, kind, Algorithm::Md5, true)?;
    let addr = server.tls.expect("tls listener");
    server.settle();
    let mem0 = server.memory();
    let conns = rt.block_on(tls::open_idle(addr, ids.clone(), args.idle, 32));
    let opened = conns.len();
    std::thread::sleep(Duration::from_secs(3));
    let mem1 = server.memory();
    println!(
        "tls idle {}: {opened} of {} connections open",
        kind.name(),
        args.idle
    );
    notes.push(memory_note_unit(
        kind,
        &format!("{opened} idle TLS connections (handshake only)"),
        &mem0,
        &mem1,
        opened as f64,
        "connection",
    ));
    let cpu0 = server.cpu();
    let (conns, ok, failed, mut lat) =
        rt.block_on(tls::register_round(conns, ids.clone(), 64, 3600));
    let cpu = server.cpu() - cpu0;
    std::thread::sleep(Duration::from_secs(2));
    let mem2 = server.memory();
    notes.push(format!(
        "tls idle {}: first REGISTER on each connection: {ok} ok, {failed} failed, server CPU {} us each, p50/p99 ms {}",
        kind.name(), per(cpu, ok), lat.p50_p99()
    ));
    notes.push(memory_note_unit(
        kind,
        &format!("{opened} registered TLS connections (connection + binding)"),
        &mem0,
        &mem2,
        opened as f64,
        "connection",
    ));
    let mut conns = conns;
    for round in 1..=3 {
        let cpu0 = server.cpu();
        let t0 = Instant::now();
        let (back, ok, failed, mut lat) =
            rt.block_on(tls::register_round(conns, ids.clone(), 64, 3600));
        let took = t0.elapsed().as_secs_f64();
        let cpu = server.cpu() - cpu0;
        conns = back;
        notes.push(format!(
            "tls re-register {} round {round}: {ok} ok, {failed} failed in {took:.2} s ({:.0}/s), server CPU {} us per re-registration, p50/p99 ms {}",
            kind.name(), ok as f64 / took, per(cpu, ok), lat.p50_p99()
        ));
    }
    drop(conns);
    std::thread::sleep(Duration::from_secs(3));
    let mem3 = server.memory();
    notes.push(format!(
        "tls idle {}: after closing all: {}",
        kind.name(),
        mem3.text()
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Runs

/// Registers every user once at a moderate rate, so later runs refresh existing bindings.
fn warm(args: &CompareArgs, server: &Server) {
    let mut r = udp::run(&udp_args(
        args,
        server,
        server.algorithm,
        2000.0,
        None,
        Some(u64::from(USERS)),
    ));
    if r.completed < u64::from(USERS) {
        r.print(&format!("warm-up {} (incomplete)", server.kind.name()));
    }
}

fn udp_args(
    args: &CompareArgs,
    server: &Server,
    algorithm: Algorithm,
    rate: f64,
    seconds: Option<f64>,
    count: Option<u64>,
) -> UdpArgs {
    UdpArgs {
        target: server.udp,
        domain: DOMAIN.into(),
        first_user: FIRST_USER,
        users: USERS,
        algorithm,
        rate,
        seconds: seconds.unwrap_or(1.0),
        count,
        threads: args.threads,
        expires: 3600,
        timeout: 5.0,
        t1_ms: 500,
    }
}

fn measured_udp(
    args: &CompareArgs,
    server: &Server,
    algorithm: Algorithm,
    rate: f64,
    seconds: f64,
) -> (UdpReport, procs::Cpu, String) {
    let load = loadavg();
    let cpu0 = server.cpu();
    let r = udp::run(&udp_args(
        args,
        server,
        algorithm,
        rate,
        Some(seconds),
        None,
    ));
    // The window closes once the server has let go of this run's state (sipward's UDP
    // transactions end 32 s later), so deferred work is charged to the run that caused it.
    server.settle();
    (r, server.cpu() - cpu0, load)
}

fn udp_row(phase: &str, kind: Kind, r: &mut UdpReport, cpu: procs::Cpu, load: String) -> Row {
    Row {
        phase: phase.into(),
        server: kind,
        offered: r.offered_rate,
        completed: r.completed,
        rate: r.completed_rate(),
        failed: r.failed,
        retrans: r.retransmissions,
        cpu_us: per_us(cpu, r.completed),
        sys_share: cpu.sys / cpu.total().max(1e-9),
        lat_a: r.challenge.p50_p99(),
        lat_b: r.total.p50_p99(),
        load,
    }
}

struct SippResult {
    successful: u64,
    failed: u64,
    retrans: u64,
    wall: f64,
    rtd1: Samples,
    rtd2: Samples,
}

fn write_users_csv(work: &Path) -> std::io::Result<()> {
    let mut csv = String::from("SEQUENTIAL\n");
    for n in FIRST_USER..FIRST_USER + USERS {
        let _ = writeln!(csv, "u{n};[authentication username=u{n} password=pw{n}]");
    }
    std::fs::write(work.join("users.csv"), csv)
}

fn run_sipp(
    args: &CompareArgs,
    work: &Path,
    target: SocketAddr,
    rate: f64,
    count: u64,
) -> anyhow::Result<SippResult> {
    let dir = work.join(format!("sipp-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    // One local port for every SIPp run, so each user keeps one Contact (one binding).
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    let port = *PORT.get_or_init(free_udp_port);
    let started = Instant::now();
    let out = Command::new("sipp")
        .current_dir(&dir)
        .arg("-sf")
        .arg(&args.scenario)
        .arg("-inf")
        .arg(work.join("users.csv"))
        .args([
            "-m",
            &count.to_string(),
            "-r",
            &format!("{rate:.0}"),
            "-rp",
            "1000",
        ])
        .args(["-l", &format!("{:.0}", rate * 10.0)])
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-auth_uri", DOMAIN])
        .args([
            "-nostdin",
            "-timeout",
            &format!("{:.0}s", args.seconds * 3.0 + 30.0),
        ])
        .args(["-recv_timeout", "10s"])
        .args(["-trace_stat", "-fd", "1", "-stf", "stats.csv"])
        .args(["-trace_rtt", "-rtt_freq", "1000"])
        .arg(target.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let wall = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(dir.join("stats.csv")).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or("").to_string();
    let last = lines.next_back().unwrap_or("").to_string();
    let stat = |col: &str| -> u64 {
        header
            .split(';')
            .position(|c| c == col)
            .and_then(|i| last.split(';').nth(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    if !out.status.success() {
        println!(
            "  sipp exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let (mut rtd1, mut rtd2) = (Samples::default(), Samples::default());
    for e in std::fs::read_dir(&dir)?.flatten() {
        if e.file_name().to_string_lossy().ends_with("_rtt.csv") {
            for line in std::fs::read_to_string(e.path())?.lines().skip(1) {
                let f: Vec<&str> = line.split(';').collect();
                let (Some(ms), Some(no)) = (f.get(1).and_then(|v| v.parse::<f64>().ok()), f.get(2))
                else {
                    continue;
                };
                let d = Duration::from_secs_f64(ms / 1000.0);
                if no.trim() == "1" {
                    rtd1.push(d)
                } else {
                    rtd2.push(d)
                }
            }
        }
    }
    Ok(SippResult {
        successful: stat("SuccessfulCall(C)"),
        failed: stat("FailedCall(C)"),
        retrans: stat("Retransmissions(C)"),
        wall,
        rtd1,
        rtd2,
    })
}

// ---------------------------------------------------------------------------------------------
// Servers

struct Server {
    kind: Kind,
    algorithm: Algorithm,
    child: Child,
    udp: SocketAddr,
    tls: Option<SocketAddr>,
    http: Option<SocketAddr>,
    ctl: Option<PathBuf>,
    /// The `redis-server` of a Redis kind and its port, stopped with the server.
    redis: Option<(Child, u16)>,
}

/// Memory of a server at one moment.
struct Memory {
    rss_kib: u64,
    /// Peak RSS of the main process so far (VmHWM).
    peak_kib: u64,
    pss_kib: u64,
    /// Kamailio's shared memory (used, real_used), bytes.
    shm: Option<(u64, u64)>,
}

impl Memory {
    fn text(&self) -> String {
        let mut s = format!(
            "RSS {} KiB (peak {} KiB), PSS {} KiB",
            self.rss_kib, self.peak_kib, self.pss_kib
        );
        if let Some((u, r)) = self.shm {
            let _ = write!(s, ", shm used {u} B (real_used {r} B)");
        }
        s
    }
}

fn memory_note(kind: Kind, what: &str, a: &Memory, b: &Memory, n: f64) -> String {
    memory_note_unit(kind, what, a, b, n, "binding")
}

fn memory_note_unit(kind: Kind, what: &str, a: &Memory, b: &Memory, n: f64, unit: &str) -> String {
    let per = |x: u64, y: u64| (y as f64 - x as f64) / n;
    let mut s = format!(
        "memory {} {what}: RSS {:.0} B/{unit} (main process {} -> {} KiB), PSS of all processes {:.0} B/{unit}",
        kind.name(),
        per(a.rss_kib, b.rss_kib) * 1024.0,
        a.rss_kib,
        b.rss_kib,
        per(a.pss_kib, b.pss_kib) * 1024.0,
    );
    if let (Some((u0, r0)), Some((u1, r1))) = (a.shm, b.shm) {
        let _ = write!(
            s,
            ", shm used {:.0} B/{unit}, real_used {:.0} B/{unit}",
            per(u0, u1),
            per(r0, r1)
        );
    }
    s
}

impl Server {
    fn start(
        args: &CompareArgs,
        work: &Path,
        certs: &Path,
        kind: Kind,
        algorithm: Algorithm,
        with_tls: bool,
    ) -> anyhow::Result<Server> {
        let udp = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let log = std::fs::File::create(work.join(format!(
            "{}-{}.log",
            kind.name(),
            rand::random::<u16>()
        )))?;
        let mut server = match kind {
            Kind::Floor => {
                let child = Command::new(std::env::current_exe()?)
                    .args([
                        "floor",
                        "--listen",
                        &udp.to_string(),
                        "--threads",
                        &args.workers.to_string(),
                    ])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()?;
                Server {
                    kind,
                    algorithm,
                    child,
                    udp,
                    tls: None,
                    http: None,
                    ctl: None,
                    redis: None,
                }
            }
            Kind::Kamailio | Kind::KamailioSqlite | Kind::KamailioRedis => {
                let ctl = work.join(format!("kamailio-{}.ctl", rand::random::<u32>()));
                let tls = with_tls.then(|| SocketAddr::from(([127, 0, 0, 1], free_tcp_port())));
                let mut cmd = Command::new("kamailio");
                cmd.arg("-f")
                    .arg(&args.kamailio_cfg)
                    .args(["-DD", "-E", "-m", "1024", "-M", "16"])
                    .arg("-A")
                    .arg(format!("SIP_PORT={}", udp.port()))
                    .arg("-A")
                    .arg(format!("CTL_SOCK=\"unix:{}\"", ctl.display()))
                    .arg("-A")
                    .arg(format!("CHILDREN={}", args.workers));
                if algorithm == Algorithm::Sha256 {
                    cmd.args(["-A", "SHA256"]);
                }
                if kind == Kind::KamailioSqlite {
                    let db = kamailio_sqlite_db(work)?;
                    cmd.args(["-A", "WITH_SQLITE", "-A"])
                        .arg(format!("DB_URL=\"sqlite://{}\"", db.display()));
                }
                let mut redis = None;
                if kind == Kind::KamailioRedis {
                    let (child, port) = start_redis(work)?;
                    // usrloc checks the location table's version (9 in Kamailio 5.6).
                    let status = Command::new("redis-cli")
                        .args(["-p", &port.to_string(), "HSET", "version:entry::location"])
                        .args(["table_name", "location", "table_version", "9"])
                        .stdout(Stdio::null())
                        .status()?;
                    anyhow::ensure!(status.success(), "redis-cli HSET version failed");
                    cmd.args(["-A", "WITH_REDIS", "-A"])
                        .arg(format!("DB_URL=\"redis://127.0.0.1:{port}/0\""));
                    redis = Some((child, port));
                }
                if let Some(t) = tls {
                    cmd.args(["-A", "WITH_TLS", "-A"])
                        .arg(format!("TLS_PORT={}", t.port()))
                        .arg("-A")
                        .arg(format!("TCP_CHILDREN={}", args.kamailio_tcp_children))
                        .arg("-A")
                        .arg(format!(
                            "TLS_CERT=\"{}\"",
                            certs.join("server.pem").display()
                        ))
                        .arg("-A")
                        .arg(format!(
                            "TLS_KEY=\"{}\"",
                            certs.join("server.key").display()
                        ))
                        .arg("-A")
                        .arg(format!("TLS_CA=\"{}\"", certs.join("ca.pem").display()));
                }
                let child = cmd.stdout(Stdio::null()).stderr(log).spawn()?;
                Server {
                    kind,
                    algorithm,
                    child,
                    udp,
                    tls,
                    http: None,
                    ctl: Some(ctl),
                    redis,
                }
            }
            Kind::Sipward | Kind::SipwardDurable | Kind::SipwardRedis => {
                let tls = with_tls.then(|| SocketAddr::from(([127, 0, 0, 1], free_tcp_port())));
                let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
                let redis = match kind {
                    Kind::SipwardRedis => Some(start_redis(work)?),
                    _ => None,
                };
                let registrar = match (&redis, kind) {
                    (Some((_, port)), _) => format!(
                        "persistence = \"redis\"\n[redis]\nurls = [\"redis://127.0.0.1:{port}\"]\nnode = \"bench\""
                    ),
                    (None, kind) => match kind {
                    Kind::SipwardDurable => format!(
                        "persistence = \"sqlite\"\nstore_path = \"{}\"",
                        work.join(format!("location-{}.db", rand::random::<u32>()))
                            .display()
                    ),
                    _ => args.sipward_registrar.clone(),
                    },
                };
                let config = sipward_config(args, certs, udp, tls, http, algorithm, &registrar);
                let path = work.join(format!("sipward-{}.toml", rand::random::<u32>()));
                std::fs::write(&path, config)?;
                let child = Command::new(&args.sipward)
                    .args(["serve", "--config"])
                    .arg(&path)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()?;
                Server {
                    kind,
                    algorithm,
                    child,
                    udp,
                    tls,
                    http: Some(http),
                    ctl: None,
                    redis,
                }
            }
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let probe = UdpSocket::bind("127.0.0.1:0")?;
        probe.set_read_timeout(Some(Duration::from_millis(200)))?;
        let local = probe.local_addr()?;
        let options = format!(
            "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKprobe{}\r\n\
             From: <sip:probe@{DOMAIN}>;tag=p\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: probe-{}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            rand::random::<u32>(),
            rand::random::<u32>()
        );
        let mut buf = [0u8; 4096];
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not start",
                self.kind.name()
            );
            if let Ok(Some(status)) = self.child.try_wait() {
                anyhow::bail!("{} exited: {status}", self.kind.name());
            }
            let _ = probe.send_to(options.as_bytes(), self.udp);
            if probe.recv_from(&mut buf).is_ok() {
                break;
            }
        }
        if let Some(tls) = self.tls {
            while TcpStream::connect_timeout(&tls, Duration::from_millis(200)).is_err() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{} TLS did not start",
                    self.kind.name()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Kamailio: the control socket answers once every process is up.
        if let Some(ctl) = &self.ctl {
            while procs::kamailio_shm(ctl).is_none() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "kamailio control socket did not answer"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        procs::tree(self.child.id())
    }

    fn cpu(&self) -> procs::Cpu {
        procs::cpu(&self.pids())
    }

    fn memory(&self) -> Memory {
        let pids = self.pids();
        Memory {
            rss_kib: procs::rss_kib(self.child.id()),
            peak_kib: procs::peak_rss_kib(self.child.id()),
            pss_kib: procs::pss_kib(&pids),
            shm: self.ctl.as_deref().and_then(procs::kamailio_shm),
        }
    }

    /// Waits until the server holds no state from an earlier run that would cap the next one:
    /// for sipward, until its UDP server transactions (kept 64*T1 = 32 s) have ended.
    /// For a Redis kind: Redis's CPU seconds (user + sys, `INFO cpu`) and sipward's round
    /// trips to it (location store + nonce claims and failure counts) so far.
    fn redis_usage(&self) -> Option<(f64, f64)> {
        let (_, port) = self.redis.as_ref()?;
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "INFO", "cpu"])
            .output()
            .ok()?;
        let cpu: f64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
            .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
            .sum();
        let trips = self.http.map_or(0.0, |http| {
            metric(http, "sipward_redis_round_trips_total").unwrap_or(0.0)
                + metric(http, "sipward_redis_auth_round_trips_total").unwrap_or(0.0)
        });
        Some((cpu, trips))
    }

    fn settle(&self) {
        std::thread::sleep(Duration::from_secs(1));
        let Some(http) = self.http else { return };
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            match metric(http, "sipward_transactions") {
                Some(v) if v < 100.0 => return,
                None => return,
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pids = self.pids();
        // SIGTERM to the main process first: Kamailio then stops its workers itself.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((redis, _)) = &mut self.redis {
            let _ = redis.kill();
            let _ = redis.wait();
        }
        // Any worker left behind (by id, only the ones this server started).
        for pid in pids.iter().skip(1) {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

/// A `redis-server` on a free loopback port, no persistence, answering; and its port.
fn start_redis(work: &Path) -> anyhow::Result<(Child, u16)> {
    let port = free_tcp_port();
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("redis-server (apt-get install redis-server): {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("redis-server on port {port} did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, port))
}

fn sipward_config(
    args: &CompareArgs,
    certs: &Path,
    udp: SocketAddr,
    tls: Option<SocketAddr>,
    http: SocketAddr,
    algorithm: Algorithm,
    registrar: &str,
) -> String {
    let mut c = String::new();
    let _ = write!(
        c,
        "# Written by loadgen compare: the equivalent of benches/kamailio/registrar.cfg.\n\
         [log]\nlevel = \"warn\"\n\
         [sip]\nudp = [\"{udp}\"]\ntcp = []\nudp_workers = {workers}\ntcp_idle_timeout_secs = 3600\n{sip_extra}\n\
         [registrar]\nmax_expires = 3600\n{registrar_extra}\n\
         [auth]\n{auth_extra}\n\
         [http]\nlisten = \"{http}\"\n",
        workers = args.workers,
        sip_extra = args.sipward_sip,
        auth_extra = args.sipward_auth,
        registrar_extra = registrar,
    );
    if let Some(tls) = tls {
        let _ = write!(
            c,
            "[tls]\ncert_file = \"{d}/server.pem\"\nkey_file = \"{d}/server.key\"\n\
             client_ca_file = \"{d}/ca.pem\"\nmax_connections = {max}\n\
             [[tls.listeners]]\naddr = \"{tls}\"\nclient_auth = \"required\"\n",
            d = certs.display(),
            max = args.idle + 1000,
        );
    }
    let _ = write!(
        c,
        "[[domains]]\nname = \"{DOMAIN}\"\nalgorithms = [\"{}\"]\nclient_cert = \"sufficient\"\n",
        algorithm.name()
    );
    for n in FIRST_USER..FIRST_USER + ACCOUNTS {
        let user = format!("u{n}");
        let pw = format!("pw{n}");
        let _ = write!(
            c,
            "[[accounts]]\nusername = \"{user}\"\ndomain = \"{DOMAIN}\"\nkind = \"device\"\nha1_md5 = \"{}\"\nha1_sha256 = \"{}\"\n",
            sipmsg::ha1(Algorithm::Md5, &user, DOMAIN, &pw),
            sipmsg::ha1(Algorithm::Sha256, &user, DOMAIN, &pw),
        );
    }
    c
}

/// A fresh Kamailio location database (Debian's db_sqlite schema: the `version` table and
/// usrloc's tables) in `work`, for `Kind::KamailioSqlite`.
fn kamailio_sqlite_db(work: &Path) -> anyhow::Result<PathBuf> {
    let db = work.join(format!("kamailio-{}.sqlite", rand::random::<u32>()));
    let conn = rusqlite::Connection::open(&db)?;
    for file in ["standard-create.sql", "usrloc-create.sql"] {
        let sql = std::fs::read_to_string(Path::new("/usr/share/kamailio/db_sqlite").join(file))
            .map_err(|e| {
                anyhow::anyhow!("{file}: {e} (apt-get install kamailio-sqlite-modules)")
            })?;
        conn.execute_batch(&sql)?;
    }
    Ok(db)
}

/// The UDP-only config, for `loadgen sipward-config`.
pub(crate) fn sipward_config_text(
    udp: SocketAddr,
    http: SocketAddr,
    algorithm: Algorithm,
    replay_table_size: Option<u64>,
) -> String {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        args: CompareArgs,
    }
    let args = CompareArgs {
        sipward_auth: replay_table_size
            .map(|n| format!("replay_table_size = {n}"))
            .unwrap_or_default(),
        ..<Defaults as clap::Parser>::parse_from(["compare"]).args
    };
    sipward_config(
        &args,
        Path::new("."),
        udp,
        None,
        http,
        algorithm,
        &args.sipward_registrar,
    )
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Server CPU microseconds per item.
fn per_us(cpu: procs::Cpu, n: u64) -> f64 {
    cpu.total() / n.max(1) as f64 * 1e6
}

/// "total (user u + sys s)" microseconds per item.
fn per(cpu: procs::Cpu, n: u64) -> String {
    let n = n.max(1) as f64;
    format!(
        "{:.1} (user {:.1} + sys {:.1})",
        cpu.total() / n * 1e6,
        cpu.user / n * 1e6,
        cpu.sys / n * 1e6
    )
}

fn metric(http: SocketAddr, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn free_udp_port() -> u16 {
    loop {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        if port != 0 && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn now_text() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {mem} kB RAM, Linux {}",
        kernel.trim()
    )
}

fn tool_version(tool: &str, args: &[&str]) -> String {
    Command::new(tool)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            t.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| "not installed".into())
}
