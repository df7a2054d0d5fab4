//! A vhost-style device IOTLB kept coherent by a `DeviceObserver` with pending
//! acknowledgments (G15), end to end over a socket pair (`tests/support/vhost_iotlb.rs`).
//!
//! The stress test wants 0 stale copies over at least 1 M copies, 10 k unmaps and 10 k
//! replaces (`cargo test --release --test vhost_iotlb`; a debug build runs a tenth of that).
//! The same scenario with the acknowledgment skipped must show stale copies: that is what
//! makes the first test's silence mean something.

#[path = "support/vhost_iotlb.rs"]
mod vhost;

use std::time::Duration;
use vhost::{run, Config};

/// A debug build is about ten times slower: it does a tenth of the work.
fn scale(n: u64) -> u64 {
    if cfg!(debug_assertions) {
        n / 10
    } else {
        n
    }
}

#[test]
fn the_back_end_never_copies_through_a_stale_entry() {
    let cfg = Config {
        min_copies: scale(1_000_000),
        min_unmaps: scale(10_000),
        min_replaces: scale(10_000),
        max_time: Duration::from_secs(120),
        ..Config::default()
    };
    let r = run(&cfg);
    eprintln!("{r:#?}");
    assert_eq!(r.stale, 0, "copies through a stale IOTLB entry: {r:?}");
    assert!(r.copies >= cfg.min_copies, "{r:?}");
    assert!(r.unmaps >= cfg.min_unmaps, "{r:?}");
    assert!(r.replaces >= cfg.min_replaces, "{r:?}");
    assert!(r.misses > 0, "the back end never missed: {r:?}");
}

#[test]
fn skipping_the_ack_is_caught() {
    // The observer acknowledges as soon as the INVALIDATE is sent: the guest may reuse a page
    // while the back end still holds an entry for it.
    let cfg = Config {
        skip_ack: true,
        stop_on_stale: true,
        min_copies: u64::MAX,
        max_time: Duration::from_secs(10),
        ..Config::default()
    };
    let r = run(&cfg);
    eprintln!("{r:#?}");
    assert!(r.stale > 0, "the broken protocol went unnoticed: {r:?}");
}
