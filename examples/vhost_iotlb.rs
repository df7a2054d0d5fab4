//! A vhost-style device IOTLB behind viommu: a back end thread with its own IOTLB, a front
//! end answering its misses from `Device::translate_chunk`, and a `DeviceObserver` that sends
//! `VHOST_IOTLB_INVALIDATE` over the socket and acknowledges with `Ack::pending()` once the
//! back end replied. The scenario lives in `tests/support/vhost_iotlb.rs`, shared with
//! `tests/vhost_iotlb.rs`.
//!
//! `cargo run --release --example vhost_iotlb` prints what the run did (copies, stale copies:
//! always 0, unmaps, replaces, misses) and what an observer costs an unmap.

#[path = "../tests/support/vhost_iotlb.rs"]
mod vhost;

use std::time::Duration;

fn main() {
    let cfg = vhost::Config {
        min_copies: 1_000_000,
        min_unmaps: 10_000,
        min_replaces: 10_000,
        max_time: Duration::from_secs(60),
        ..vhost::Config::default()
    };
    let r = vhost::run(&cfg);
    println!(
        "{} copies ({} stale), {} misses ({} faults), {} unmaps of the device's IOAS \
         (+{} of the other), {} replaces in {:.2?}",
        r.copies, r.stale, r.misses, r.faults, r.unmaps, r.detached_unmaps, r.replaces, r.elapsed
    );
    println!(
        "with the back end acknowledging over the socket: ioas_unmap {:.1?}, device_replace \
         {:.1?} (means)",
        r.unmap_time / r.unmaps.max(1) as u32,
        r.replace_time / r.replaces.max(1) as u32
    );
    let iters = 20_000;
    // Warm up, then measure each way.
    vhost::unmap_latency(false, iters);
    let none = vhost::unmap_latency(false, iters);
    let one = vhost::unmap_latency(true, iters);
    println!(
        "ioas_unmap of one page, attached device: {none:.2?} with no observer, {one:.2?} with \
         one that acknowledges at once (means of {iters})"
    );
    assert_eq!(r.stale, 0, "a copy went through a stale IOTLB entry");
}
