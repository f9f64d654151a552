//! The work of `benches/parse.rs` in a plain loop, for counting instructions under
//! callgrind (repeatable on a busy machine, unlike wall time). Each case runs in its own
//! never-inlined function so `--toggle-collect` counts exactly that loop:
//!
//! ```text
//! cargo build --profile bench --example parse_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='*run_case*' \
//!     target/release/examples/parse_instructions rsip 1000
//! ```
//!
//! Cases: `sipward` (the softphone REGISTER), `sipward-subset` and `rsip` (the same REGISTER
//! without `+sip.instance`, which rsip cannot read). The "Collected" figure divided by the
//! iteration count is the instructions per parse-and-read.

use std::hint::black_box;

use bytes::Bytes;
use sipward::sip::{Limits, Message};

#[path = "../tests/shared/registrar_reads.rs"]
mod registrar_reads;
use registrar_reads::read_registrar_view;

#[path = "../tests/shared/rsip_reads.rs"]
mod rsip_reads;
use rsip_reads::{read_rsip, without_instance};

const REGISTER: &[u8] = include_bytes!("../tests/data/softphone-register.sip");

#[inline(never)]
fn run_case(case: &str, full: &Bytes, subset: &Bytes, iters: u64) -> usize {
    let limits = Limits::default();
    let mut acc = 0;
    for _ in 0..iters {
        acc += match case {
            "sipward" => {
                let msg = Message::parse(black_box(full.clone()), &limits).expect("parse");
                read_registrar_view(&msg, true)
            }
            "sipward-subset" => {
                let msg = Message::parse(black_box(subset.clone()), &limits).expect("parse");
                read_registrar_view(&msg, true)
            }
            "rsip" => {
                let msg = rsip::SipMessage::try_from(black_box(&subset[..])).expect("parse");
                read_rsip(&msg)
            }
            other => panic!("unknown case {other}: sipward, sipward-subset or rsip"),
        };
    }
    acc
}

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "sipward".to_owned());
    let iters: u64 = args
        .next()
        .map_or(1000, |n| n.parse().expect("iteration count"));
    let full = Bytes::from_static(REGISTER);
    let subset = without_instance(REGISTER);
    let acc = run_case(&case, &full, &subset, iters);
    println!("{case}: {iters} iterations (checksum {acc})");
}
