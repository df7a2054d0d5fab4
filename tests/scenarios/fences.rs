//! `EDEADLK` for a waiting call made while the thread holds a guard, and the calls that wait for
//! guards held by other threads (G5, G6, `synchronize`).

use super::{Fx, A_IOVA, A_LEN, A_TARGET};
use crate::common::{assert_maps_to, err, fault, one, within, PAGE};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};
use viommu::errno::EDEADLK;
use viommu::{Access, Chunk, Device, DmaGuard, Error, FaultKind};

/// A guard of `h` held by another thread: the thread pins, runs `before` through the guard,
/// reports that it holds the guard (this returns then), does 200 ms of "DMA", runs `after`,
/// raises `dropped` and drops the guard. Its result is `after`'s.
struct Holder<T> {
    dropped: Arc<AtomicBool>,
    thread: thread::JoinHandle<T>,
}

fn hold_guard<B: 'static, T: Send + 'static>(
    h: &Device,
    before: impl FnOnce(&DmaGuard<'_>) -> B + Send + 'static,
    after: impl FnOnce(&DmaGuard<'_>, B) -> T + Send + 'static,
) -> Holder<T> {
    let dropped = Arc::new(AtomicBool::new(false));
    let (pinned_tx, pinned_rx) = mpsc::channel();
    let thread = {
        let h = h.clone();
        let dropped = dropped.clone();
        thread::spawn(move || {
            let g = h.pin();
            let b = before(&g);
            pinned_tx.send(()).unwrap();
            // The "DMA" takes a while.
            thread::sleep(Duration::from_millis(200));
            let t = after(&g, b);
            dropped.store(true, Ordering::SeqCst);
            drop(g);
            t
        })
    };
    pinned_rx.recv().unwrap();
    Holder { dropped, thread }
}

#[test]
fn edeadlk_waiting_calls_while_the_thread_holds_a_guard_change_nothing() {
    let fx = Fx::new();
    let io = &fx.iommu;
    // A guard of an attached device, and one of a device on the blocked domain.
    for holder in [&fx.dev_h, &fx.lone_h] {
        let guard = holder.pin();
        let e = err(io.ioas_unmap(fx.ioas, A_IOVA, A_LEN), EDEADLK);
        assert!(matches!(e, Error::Deadlock { .. }), "{e:?}");
        err(io.ioas_unmap(fx.ioas, 0, u64::MAX), EDEADLK);
        let e = err(io.device_detach(fx.peer), EDEADLK);
        assert!(matches!(e, Error::Deadlock { .. }), "{e:?}");
        let e = err(io.synchronize(), EDEADLK);
        assert!(matches!(e, Error::Deadlock { .. }), "{e:?}");
        // The guard still translates as before.
        if std::ptr::eq(holder, &fx.dev_h) {
            let got: Vec<Chunk> = guard
                .translate(A_IOVA, A_LEN, Access::Read)
                .unwrap()
                .collect();
            assert_eq!(got, one(A_IOVA, A_TARGET, A_LEN));
        }
        drop(guard);
        fx.assert_intact();
    }
    // Two guards, dropped one at a time: still EDEADLK while one is left.
    let g1 = fx.dev_h.pin();
    let g2 = fx.peer_h.pin();
    drop(g1);
    err(io.synchronize(), EDEADLK);
    drop(g2);
    // Without a guard they all go through.
    io.synchronize().unwrap();
    fx.teardown();
}

/// G5: `ioas_unmap` returns only after every guard that might have seen the range is dropped.
#[test]
fn unmap_waits_for_a_guard_held_by_another_thread() {
    let fx = Fx::new();
    let holder = hold_guard(
        &fx.dev_h,
        |g| -> Vec<Chunk> { g.translate(A_IOVA, PAGE, Access::Write).unwrap().collect() },
        |_, got| got,
    );
    let start = Instant::now();
    let io = fx.iommu.clone();
    let ioas = fx.ioas;
    let r = within(Duration::from_secs(10), "ioas_unmap", move || {
        io.ioas_unmap(ioas, A_IOVA, A_LEN)
    });
    assert_eq!(r, Ok(A_LEN));
    assert!(
        holder.dropped.load(Ordering::SeqCst),
        "ioas_unmap returned after {:?} while a guard that translated into the range was alive",
        start.elapsed()
    );
    assert_eq!(holder.thread.join().unwrap(), one(A_IOVA, A_TARGET, PAGE));
    assert_eq!(
        fault(&fx.dev_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Unmapped
    );
}

/// G6: `device_detach` returns only after the device's guards made before the call are gone.
#[test]
fn detach_waits_for_a_guard_of_that_device_held_by_another_thread() {
    let fx = Fx::new();
    let holder = hold_guard(
        &fx.dev_h,
        |_| (),
        |g, ()| g.translate(A_IOVA, PAGE, Access::Read).is_ok(),
    );
    let io = fx.iommu.clone();
    let dev = fx.dev;
    let r = within(Duration::from_secs(10), "device_detach", move || {
        io.device_detach(dev)
    });
    assert_eq!(r, Ok(()));
    assert!(
        holder.dropped.load(Ordering::SeqCst),
        "device_detach returned while a guard of the device was alive"
    );
    // The old guard kept its snapshot to the end.
    assert!(holder.thread.join().unwrap());
    assert_eq!(
        fault(&fx.dev_h, A_IOVA, PAGE, Access::Read),
        FaultKind::Blocked
    );
    assert_maps_to(&fx.peer_h, A_IOVA, PAGE, Access::Read, A_TARGET);
}

/// `synchronize` waits for every guard alive at the call.
#[test]
fn synchronize_waits_for_guards_held_by_other_threads() {
    let fx = Fx::new();
    let holder = hold_guard(&fx.lone_h, |_| (), |_, ()| ());
    let io = fx.iommu.clone();
    let r = within(Duration::from_secs(10), "synchronize", move || {
        io.synchronize()
    });
    assert_eq!(r, Ok(()));
    assert!(
        holder.dropped.load(Ordering::SeqCst),
        "synchronize returned while a guard was alive"
    );
    holder.thread.join().unwrap();
    fx.assert_intact();
}
