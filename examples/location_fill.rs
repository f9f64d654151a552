//! Writes a location store (registrar.persistence = "sqlite") holding N live bindings, one per
//! AoR, straight through `SqliteLocationStore`: the input of the restart measurement in
//! benches/restart-1m.sh (issue 16). Not a test.
//!
//!     cargo run --release --example location_fill -- PATH [N]

use std::time::{Duration, Instant};

use sipward::location_store::{LocationStore, SqliteLocationStore, WallClock};
use sipward::registrar::{Aor, BindingChange, BindingRecord, Transport};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: location_fill PATH [N]")?;
    let n: u64 = args.next().map_or(Ok(1_000_000), |v| v.parse())?;
    let mut store = SqliteLocationStore::open(std::path::Path::new(&path))?;
    let clock = WallClock::now();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for id in 1..=n {
        let user = format!("u{id:07}");
        let aor = Aor::parse(&format!("sip:{user}@bench.test")).ok_or("aor")?;
        let port = 1024 + (id % 60_000) as u16;
        let uri = format!(
            "sip:{user}@10.{}.{}.{}:{port}",
            (id >> 16) & 255,
            (id >> 8) & 255,
            id & 255
        );
        batch.push(BindingChange::Put(Box::new(BindingRecord {
            id,
            aor,
            uri: uri.clone(),
            uri_key: None,
            params: String::new(),
            instance: None,
            reg_id: None,
            q: None,
            call_id: format!("{id:016x}@bench"),
            cseq: 2,
            user_agent: Some("fill/1".into()),
            credential: None,
            path: Vec::new(),
            source: format!(
                "10.{}.{}.{}:{port}",
                (id >> 16) & 255,
                (id >> 8) & 255,
                id & 255
            )
            .parse()?,
            transport: Transport::Udp,
            granted: 3600,
            // Spread over the next hour, as refreshes would leave them.
            deadline: clock.instant() + Duration::from_secs(600 + id % 3000),
        })));
        if batch.len() == 10_000 {
            store.commit(&batch, &clock)?;
            batch.clear();
        }
    }
    store.commit(&batch, &clock)?;
    println!(
        "{path}: {n} bindings written in {:.1?}, {} bytes",
        started.elapsed(),
        store.size_bytes()
    );
    Ok(())
}
