//! UDP REGISTER load: REGISTER → 401 → REGISTER with Digest → 200, open loop at a fixed rate
//! (registrations started per second, as SIPp's `-r`), spread over several sockets and threads
//! so the generator is not the bottleneck. Retransmits like an RFC 3261 client (T1, doubling
//! to T2 = 4 s) and gives a transaction up after `--timeout`. Every user registers the same
//! Contact (`sip:u<N>@127.0.0.1:15060`) from whichever socket and run, so a user has one
//! binding however many runs there are; answers go to the request's source (Via `rport`).
//! Like a phone, it answers a `401 … stale=true` to its authenticated REGISTER with the new
//! nonce (at most twice per registration; counted in `stale_retries`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::procs;
use crate::sipmsg::{self, Algorithm, Register, Users};
use crate::stats::Samples;

#[derive(clap::Args, Clone, Debug)]
pub(crate) struct UdpArgs {
    /// The server's UDP address.
    #[arg(long, default_value = "127.0.0.1:5060")]
    pub(crate) target: SocketAddr,
    /// SIP domain and Digest realm; the Request-URI and the Digest uri are sip:DOMAIN.
    #[arg(long, default_value = "bench.test")]
    pub(crate) domain: String,
    /// First user number: users are u<first>.. with password pw<first>..
    #[arg(long, default_value_t = 100_000)]
    pub(crate) first_user: u32,
    /// How many distinct users.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) users: u32,
    #[arg(long, value_enum, default_value = "MD5")]
    pub(crate) algorithm: Algorithm,
    /// Registrations started per second.
    #[arg(long, default_value_t = 2000.0)]
    pub(crate) rate: f64,
    /// How long to start registrations for (ignored with --count).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Total registrations to start.
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Sockets, each on its own thread.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    #[arg(long, default_value_t = 3600)]
    pub(crate) expires: u32,
    /// Give a transaction up after this many seconds (counted as failed).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) timeout: f64,
    /// First retransmission interval (RFC 3261 T1), milliseconds.
    #[arg(long, default_value_t = 500)]
    pub(crate) t1_ms: u64,
}

impl UdpArgs {
    pub(crate) fn total(&self) -> u64 {
        self.count
            .unwrap_or_else(|| (self.rate * self.seconds).round() as u64)
    }
}

/// What one run measured.
#[derive(Debug, Default)]
pub(crate) struct UdpReport {
    pub(crate) offered_rate: f64,
    pub(crate) started: u64,
    pub(crate) completed: u64,
    /// Timeouts plus unexpected final responses.
    pub(crate) failed: u64,
    pub(crate) timeouts: u64,
    /// Unexpected final responses by status.
    pub(crate) unexpected: BTreeMap<u16, u64>,
    pub(crate) retransmissions: u64,
    /// Responses matching no open transaction (answers to retransmissions, late answers).
    pub(crate) stray: u64,
    /// First send to last completion.
    pub(crate) elapsed: Duration,
    /// REGISTER → 401.
    pub(crate) challenge: Samples,
    /// Authenticated REGISTER → 200.
    pub(crate) register: Samples,
    /// First REGISTER → 200 (both round trips and the generator's Digest work).
    pub(crate) total: Samples,
    /// The generator's own CPU seconds.
    pub(crate) client_cpu: f64,
    /// Authenticated REGISTERs answered `401 stale=true` and sent again with the new nonce.
    pub(crate) stale_retries: u64,
}

/// Counters a run updates as it goes, for a caller that samples them over time.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
}

impl UdpReport {
    pub(crate) fn completed_rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, p: UdpReport) {
        self.started += p.started;
        self.completed += p.completed;
        self.failed += p.failed;
        self.timeouts += p.timeouts;
        for (k, v) in p.unexpected {
            *self.unexpected.entry(k).or_default() += v;
        }
        self.retransmissions += p.retransmissions;
        self.stray += p.stray;
        self.stale_retries += p.stale_retries;
        self.elapsed = self.elapsed.max(p.elapsed);
        self.challenge.merge(p.challenge);
        self.register.merge(p.register);
        self.total.merge(p.total);
    }

    /// Clean: nothing failed, at most 1 % of requests retransmitted, and the completions kept
    /// up with the offered rate (97 %).
    pub(crate) fn is_clean(&self) -> bool {
        self.failed == 0
            && self.completed == self.started
            && (self.retransmissions as f64) <= 0.01 * (2 * self.started) as f64
            && self.completed_rate() >= 0.97 * self.offered_rate
    }

    pub(crate) fn print(&mut self, label: &str) {
        println!("{label}:");
        println!(
            "  offered {:.0}/s, started {}, completed {} ({:.0}/s over {:.2} s), failed {} (timeouts {}, unexpected {:?}), retransmissions {}, stray responses {}, stale retries {}",
            self.offered_rate,
            self.started,
            self.completed,
            self.completed_rate(),
            self.elapsed.as_secs_f64(),
            self.failed,
            self.timeouts,
            self.unexpected,
            self.retransmissions,
            self.stray,
            self.stale_retries
        );
        println!(
            "  p50/p99 ms: challenge {}, register {}, whole registration {}",
            self.challenge.p50_p99(),
            self.register.p50_p99(),
            self.total.p50_p99()
        );
        println!(
            "  generator cpu: {:.1} us per registration",
            self.client_cpu / self.started.max(1) as f64 * 1e6
        );
    }
}

/// The port of every Contact this generator registers (nothing listens there).
const CONTACT_PORT: u16 = 15_060;

/// Shared, read-only inputs of every worker.
struct Plan {
    args: UdpArgs,
    users: Users,
    /// HA1 per user, precomputed so the generator spends its CPU on the wire.
    ha1: Vec<String>,
    uri: String,
    run_tag: u32,
    progress: Option<Arc<Progress>>,
}

/// Runs the load and waits for the last transaction to finish or time out.
pub(crate) fn run(args: &UdpArgs) -> UdpReport {
    run_with_progress(args, None)
}

/// [`run`], counting completions and failures into `progress` as they happen.
pub(crate) fn run_with_progress(args: &UdpArgs, progress: Option<Arc<Progress>>) -> UdpReport {
    let users = Users {
        first: args.first_user,
        count: args.users,
    };
    let ha1 = (0..args.users)
        .map(|i| {
            sipmsg::ha1(
                args.algorithm,
                &users.name(i),
                &args.domain,
                &users.password(i),
            )
        })
        .collect();
    let plan = Arc::new(Plan {
        uri: format!("sip:{}", args.domain),
        args: args.clone(),
        users,
        ha1,
        run_tag: rand::random(),
        progress,
    });
    let threads = args.threads.max(1);
    let total = args.total();
    let cpu0 = procs::self_cpu_secs();
    let start = Instant::now() + Duration::from_millis(20);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let plan = plan.clone();
            let share = total / threads as u64 + u64::from((t as u64) < total % threads as u64);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(worker(plan, t, threads, start, share))
            })
        })
        .collect();
    let mut report = UdpReport {
        offered_rate: args.rate,
        ..UdpReport::default()
    };
    for h in handles {
        report.merge(h.join().expect("worker thread"));
    }
    report.client_cpu = procs::self_cpu_secs() - cpu0;
    report
}

/// One registration in flight.
struct Reg {
    user: u32,
    /// 1: waiting for the challenge; 2: waiting for the 200.
    stage: u32,
    started: Instant,
    /// First send of the current request.
    sent: Instant,
    interval: Duration,
    /// Bumped on every send, so stale timer entries are ignored.
    generation: u32,
    bytes: Vec<u8>,
    /// Stale challenges answered so far.
    stale: u32,
}

async fn worker(
    plan: Arc<Plan>,
    t: usize,
    threads: usize,
    start: Instant,
    share: u64,
) -> UdpReport {
    let args = &plan.args;
    let sock = bind(args.target).expect("bind generator socket");
    let local = sock.local_addr().expect("local addr");
    let rate = args.rate / threads as f64;
    let t1 = Duration::from_millis(args.t1_ms);
    let t2 = Duration::from_secs(4);
    let timeout = Duration::from_secs_f64(args.timeout);
    // Users of this thread: t, t+threads, ... so a user always uses this socket.
    let my_users: Vec<u32> = (0..args.users)
        .filter(|u| *u as usize % threads == t)
        .collect();
    let mut pending: HashMap<u64, Reg> = HashMap::new();
    let mut timers: BinaryHeap<Reverse<(Instant, u64, u32)>> = BinaryHeap::new();
    let mut report = UdpReport::default();
    let mut next = 0u64;
    let mut last_done = start;
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(1024);
    tokio::time::sleep_until(start.into()).await;
    loop {
        let now = Instant::now();
        // Start what is due.
        let due =
            ((now.saturating_duration_since(start).as_secs_f64() * rate) as u64 + 1).min(share);
        while next < due {
            let user = my_users[(next % my_users.len() as u64) as usize];
            out.clear();
            first_register(&plan, t, next, user, local, &mut out);
            let _ = sock.send(&out).await;
            pending.insert(
                next,
                Reg {
                    user,
                    stage: 1,
                    started: now,
                    sent: now,
                    interval: t1,
                    generation: 0,
                    bytes: out.clone(),
                    stale: 0,
                },
            );
            timers.push(Reverse((now + t1, next, 0)));
            next += 1;
        }
        // Retransmit or give up.
        while let Some(Reverse((at, id, generation))) = timers.peek().copied() {
            if at > now {
                break;
            }
            timers.pop();
            let Some(reg) = pending.get_mut(&id) else {
                continue;
            };
            if reg.generation != generation {
                continue;
            }
            if now.duration_since(reg.sent) >= timeout {
                pending.remove(&id);
                report.failed += 1;
                report.timeouts += 1;
                plan.count_failed();
                last_done = now;
                continue;
            }
            let _ = sock.send(&reg.bytes).await;
            report.retransmissions += 1;
            reg.generation += 1;
            reg.interval = (reg.interval * 2).min(t2);
            let wait = reg
                .interval
                .min(timeout.saturating_sub(now.duration_since(reg.sent)));
            timers.push(Reverse((now + wait, id, reg.generation)));
        }
        if next >= share && pending.is_empty() {
            break;
        }
        let next_start = if next < share {
            start + Duration::from_secs_f64(next as f64 / rate)
        } else {
            now + Duration::from_secs(3600)
        };
        let wake = timers
            .peek()
            .map_or(next_start, |Reverse((at, _, _))| (*at).min(next_start));
        let mut got = if wake > now {
            tokio::select! {
                r = sock.recv(&mut buf) => r.ok(),
                _ = tokio::time::sleep_until(wake.into()) => None,
            }
        } else {
            None
        };
        loop {
            if let Some(n) = got {
                let now = Instant::now();
                if let Some(done) = on_response(
                    &plan,
                    t,
                    &buf[..n],
                    now,
                    local,
                    &mut pending,
                    &mut timers,
                    &mut report,
                    &sock,
                )
                .await
                {
                    if done {
                        last_done = now;
                    }
                }
            }
            got = match sock.try_recv(&mut buf) {
                Ok(n) => Some(n),
                Err(_) => break,
            };
        }
    }
    report.started = share;
    report.elapsed = last_done.saturating_duration_since(start);
    report
}

fn bind(target: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(
        Domain::for_address(target),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    let local: SocketAddr = if target.is_ipv4() {
        "127.0.0.1:0".parse().expect("addr")
    } else {
        "[::1]:0".parse().expect("addr")
    };
    s.bind(&local.into())?;
    s.connect(&target.into())?;
    UdpSocket::from_std(s.into())
}

impl Plan {
    fn count_failed(&self) {
        if let Some(p) = &self.progress {
            p.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_completed(&self) {
        if let Some(p) = &self.progress {
            p.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn call_id(plan: &Plan, t: usize, id: u64) -> String {
    format!("{id}-{t}-{:08x}@loadgen", plan.run_tag)
}

fn first_register(plan: &Plan, t: usize, id: u64, user: u32, local: SocketAddr, out: &mut Vec<u8>) {
    let name = plan.users.name(user);
    let cid = call_id(plan, t, id);
    let tag = format!("{id:x}");
    let branch = format!("{:08x}{t}x{id:x}a", plan.run_tag);
    Register {
        domain: &plan.args.domain,
        transport: "UDP",
        local,
        user: &name,
        call_id: &cid,
        tag: &tag,
        branch: &branch,
        cseq: 1,
        expires: plan.args.expires,
        contact_port: CONTACT_PORT,
        authorization: None,
    }
    .write(out);
}

/// Handles one datagram; `Some(true)` when a registration ended.
#[allow(clippy::too_many_arguments)]
async fn on_response(
    plan: &Plan,
    t: usize,
    msg: &[u8],
    now: Instant,
    local: SocketAddr,
    pending: &mut HashMap<u64, Reg>,
    timers: &mut BinaryHeap<Reverse<(Instant, u64, u32)>>,
    report: &mut UdpReport,
    sock: &UdpSocket,
) -> Option<bool> {
    let Some(status) = sipmsg::status(msg) else {
        report.stray += 1;
        return None;
    };
    let id: Option<u64> = sipmsg::call_id(msg)
        .and_then(|c| c.split('-').next())
        .and_then(|s| s.parse().ok());
    let cseq = sipmsg::cseq(msg);
    let Some((id, reg)) = id.and_then(|id| pending.get_mut(&id).map(|r| (id, r))) else {
        report.stray += 1;
        return None;
    };
    let expected_cseq = if reg.stage == 1 { 1 } else { 2 + reg.stale };
    if cseq != Some(expected_cseq) {
        report.stray += 1;
        return None;
    }
    if status < 200 {
        return Some(false);
    }
    let stale_challenge = || sipmsg::challenge(msg, plan.args.algorithm).filter(|c| c.stale);
    let stale = (reg.stage == 2 && status == 401 && reg.stale < 2)
        .then(stale_challenge)
        .flatten();
    match (reg.stage, status) {
        (1, 401) | (2, 401) if reg.stage == 1 || stale.is_some() => {
            if reg.stage == 1 {
                report.challenge.push(now.duration_since(reg.sent));
            } else {
                report.stale_retries += 1;
                reg.stale += 1;
            }
            let Some(c) = sipmsg::challenge(msg, plan.args.algorithm) else {
                *report.unexpected.entry(status).or_default() += 1;
                report.failed += 1;
                plan.count_failed();
                pending.remove(&id);
                return Some(true);
            };
            let name = plan.users.name(reg.user);
            let cnonce = format!("{:x}{t}{id:x}s{}", plan.run_tag, reg.stale);
            let auth = sipmsg::authorization(
                plan.args.algorithm,
                &plan.ha1[reg.user as usize],
                &name,
                &plan.uri,
                &c,
                1,
                &cnonce,
            );
            let cid = call_id(plan, t, id);
            let tag = format!("{id:x}");
            let branch = format!("{:08x}{t}x{id:x}b{}", plan.run_tag, reg.stale);
            reg.bytes.clear();
            Register {
                domain: &plan.args.domain,
                transport: "UDP",
                local,
                user: &name,
                call_id: &cid,
                tag: &tag,
                branch: &branch,
                cseq: 2 + reg.stale,
                expires: plan.args.expires,
                contact_port: CONTACT_PORT,
                authorization: Some(&auth),
            }
            .write(&mut reg.bytes);
            let _ = sock.send(&reg.bytes).await;
            reg.stage = 2;
            reg.sent = Instant::now();
            reg.interval = Duration::from_millis(plan.args.t1_ms);
            reg.generation += 1;
            timers.push(Reverse((reg.sent + reg.interval, id, reg.generation)));
            Some(false)
        }
        (2, 200) => {
            report.register.push(now.duration_since(reg.sent));
            report.total.push(now.duration_since(reg.started));
            report.completed += 1;
            plan.count_completed();
            pending.remove(&id);
            Some(true)
        }
        _ => {
            *report.unexpected.entry(status).or_default() += 1;
            report.failed += 1;
            plan.count_failed();
            pending.remove(&id);
            Some(true)
        }
    }
}
