//! Observers (G15): IOAS mirrors and device observers, the consumers whose DMA does not go
//! through a `DmaGuard` (a vhost back end's device IOTLB, a VFIO/vDPA device's host IOMMU).
//!
//! Ordering claims are shown with channels, not timing: a call that must not have returned
//! yet is blocked on something the test holds.

use std::ops::RangeInclusive;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use viommu::{
    errno, Access, Ack, AckToken, DeviceInfo, DeviceObserver, Error, GroupId, HwptFlags,
    Invalidation, IoasMirror, Iommu, MirrorError, ObjId, Prot, Stage1, TableMemory,
};

const MIB: u64 = 1 << 20;
const ALL: RangeInclusive<u64> = 0..=u64::MAX;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Map(u64, u64, u64, Prot),
    Unmap(u64, u64),
}

/// A mirror that records what it is told, and refuses maps at `refuse` with EFAULT.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    refuse: Option<u64>,
}

impl Recorder {
    fn refusing(iova: u64) -> Arc<Recorder> {
        Arc::new(Recorder {
            refuse: Some(iova),
            ..Recorder::default()
        })
    }

    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl IoasMirror for Recorder {
    fn map(&self, iova: u64, target: u64, len: u64, prot: Prot) -> Result<(), MirrorError> {
        if self.refuse == Some(iova) {
            return Err(MirrorError { errno: 14 });
        }
        let mut e = self.events.lock().unwrap();
        e.push(Event::Map(iova, target, len, prot));
        Ok(())
    }

    fn unmap(&self, iova: u64, len: u64) {
        self.events.lock().unwrap().push(Event::Unmap(iova, len));
    }
}

type Seen = (Option<u32>, RangeInclusive<u64>);

/// A device observer that records what it is told and acknowledges at once.
#[derive(Default)]
struct Watcher {
    seen: Mutex<Vec<Seen>>,
}

impl Watcher {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl DeviceObserver for Watcher {
    fn invalidate(&self, pasid: Option<u32>, iovas: RangeInclusive<u64>) -> Ack {
        self.seen.lock().unwrap().push((pasid, iovas));
        Ack::Done
    }
}

/// A device observer that acknowledges later: it hands its token to the test.
struct Later {
    tokens: Mutex<Sender<AckToken>>,
}

impl Later {
    fn new() -> (Arc<Later>, Receiver<AckToken>) {
        let (tx, rx) = mpsc::channel();
        (
            Arc::new(Later {
                tokens: Mutex::new(tx),
            }),
            rx,
        )
    }
}

impl DeviceObserver for Later {
    fn invalidate(&self, _: Option<u32>, _: RangeInclusive<u64>) -> Ack {
        let (ack, token) = Ack::pending();
        self.tokens.lock().unwrap().send(token).unwrap();
        ack
    }
}

fn bind(iommu: &Iommu, group: u32) -> (ObjId, viommu::Device) {
    iommu
        .device_bind(GroupId(group), DeviceInfo::default())
        .unwrap()
}

/// Runs `f` on another thread; the receiver answers when it returned.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Receiver<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

const LONG: Duration = Duration::from_secs(60);

#[test]
fn a_mirror_sees_the_ioas_operations_in_order_after_a_replay_of_its_areas() {
    let iommu = Iommu::new();
    let ioas = iommu.ioas_alloc().unwrap();
    // Mapped out of IOVA order: the replay is in IOVA order.
    iommu
        .ioas_map(ioas, Some(0x20_0000), 0x8000_0000, 0x1000, Prot::READ)
        .unwrap();
    iommu
        .ioas_map(ioas, Some(0x1000), 0x9000_0000, 0x2000, Prot::RW)
        .unwrap();
    let m = Arc::new(Recorder::default());
    let id = iommu.ioas_add_mirror(ioas, m.clone()).unwrap();
    assert_eq!(
        m.take(),
        [
            Event::Map(0x1000, 0x9000_0000, 0x2000, Prot::RW),
            Event::Map(0x20_0000, 0x8000_0000, 0x1000, Prot::READ),
        ]
    );
    let auto = iommu
        .ioas_map(ioas, None, 0x4000_0000, 2 * MIB, Prot::WRITE)
        .unwrap();
    iommu
        .ioas_map(ioas, Some(0x10_0000), 0xa000_0000, 0x1000, Prot::RW)
        .unwrap();
    assert_eq!(iommu.ioas_unmap(ioas, 0x1000, 0x2000).unwrap(), 0x2000);
    // Unmap-all: one unmap per remaining area, in IOVA order.
    iommu.ioas_unmap(ioas, 0, u64::MAX).unwrap();
    let mut rest = vec![(0x10_0000, 0x1000), (0x20_0000, 0x1000), (auto, 2 * MIB)];
    rest.sort();
    let mut want = vec![
        Event::Map(auto, 0x4000_0000, 2 * MIB, Prot::WRITE),
        Event::Map(0x10_0000, 0xa000_0000, 0x1000, Prot::RW),
        Event::Unmap(0x1000, 0x2000),
    ];
    want.extend(rest.into_iter().map(|(i, l)| Event::Unmap(i, l)));
    assert_eq!(m.take(), want);
    // Removed: told nothing more; its ID is gone.
    iommu.remove_observer(id).unwrap();
    iommu.ioas_map(ioas, Some(0), 0, 0x1000, Prot::RW).unwrap();
    assert!(m.take().is_empty());
    let e = iommu.remove_observer(id).unwrap_err();
    assert_eq!(e.errno(), errno::ENOENT);
    // Destroying the IOAS tells the mirrors its areas left.
    let m2 = Arc::new(Recorder::default());
    let id2 = iommu.ioas_add_mirror(ioas, m2.clone()).unwrap();
    m2.take();
    iommu.destroy(ioas).unwrap();
    assert_eq!(m2.take(), [Event::Unmap(0, 0x1000)]);
    assert_eq!(
        iommu.remove_observer(id2).unwrap_err().errno(),
        errno::ENOENT
    );
}

#[test]
fn a_refused_map_changes_nothing() {
    let iommu = Iommu::new();
    let (dev_id, dev) = bind(&iommu, 1);
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some(0x1000), 0x5000, 0x1000, Prot::RW)
        .unwrap();
    iommu.device_attach(dev_id, ioas).unwrap();
    let (a, refusing, c) = (
        Arc::new(Recorder::default()),
        Recorder::refusing(0x10_0000),
        Arc::new(Recorder::default()),
    );
    let refusing_id = {
        iommu.ioas_add_mirror(ioas, a.clone()).unwrap();
        let id = iommu.ioas_add_mirror(ioas, refusing.clone()).unwrap();
        iommu.ioas_add_mirror(ioas, c.clone()).unwrap();
        id
    };
    for m in [&a, &refusing, &c] {
        m.take();
    }
    let usage = iommu.ioas_usage(ioas).unwrap();
    let e = iommu
        .ioas_map(ioas, Some(0x10_0000), 0x7000_0000, 0x1000, Prot::RW)
        .unwrap_err();
    assert_eq!(e.errno(), 14, "the mirror's errno");
    assert_eq!(
        e,
        Error::MirrorRefused {
            observer: refusing_id,
            errno: 14
        }
    );
    // The area is not there, nor in the domain; the usage is unchanged.
    assert_eq!(iommu.ioas_usage(ioas).unwrap(), usage);
    assert!(dev.translate(0x10_0000, 0x1000, Access::Read).is_err());
    assert_eq!(
        iommu
            .ioas_unmap(ioas, 0x10_0000, 0x1000)
            .unwrap_err()
            .errno(),
        errno::ENOENT
    );
    assert!(dev.translate(0x1000, 0x1000, Access::Read).is_ok());
    // The mirror before the refusing one took it back; the one after never saw it.
    assert_eq!(
        a.take(),
        [
            Event::Map(0x10_0000, 0x7000_0000, 0x1000, Prot::RW),
            Event::Unmap(0x10_0000, 0x1000)
        ]
    );
    assert!(refusing.take().is_empty());
    assert!(c.take().is_empty());
    // A mirror that refuses a replayed area is not added; the ones before it are taken back.
    let picky = Recorder::refusing(0x20_0000);
    iommu
        .ioas_map(ioas, Some(0x20_0000), 0x6000, 0x1000, Prot::RW)
        .unwrap();
    let e = iommu.ioas_add_mirror(ioas, picky.clone()).unwrap_err();
    assert_eq!(e.errno(), 14);
    assert_eq!(
        picky.take(),
        [
            Event::Map(0x1000, 0x5000, 0x1000, Prot::RW),
            Event::Unmap(0x1000, 0x1000)
        ]
    );
    iommu.ioas_unmap(ioas, 0x20_0000, 0x1000).unwrap();
    assert!(picky.take().is_empty(), "not added");
}

/// A mirror whose unmap blocks until the test lets it go.
struct Gate {
    entered: Mutex<Sender<()>>,
    release: Mutex<Receiver<()>>,
}

impl IoasMirror for Gate {
    fn map(&self, _: u64, _: u64, _: u64, _: Prot) -> Result<(), MirrorError> {
        Ok(())
    }

    fn unmap(&self, _: u64, _: u64) {
        self.entered.lock().unwrap().send(()).unwrap();
        self.release.lock().unwrap().recv().unwrap();
    }
}

#[test]
fn unmap_returns_after_the_mirror_unmapped() {
    let iommu = Iommu::new();
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some(0x1000), 0x5000, 0x1000, Prot::RW)
        .unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    iommu.ioas_add_mirror(ioas, gate).unwrap();
    let i2 = iommu.clone();
    let done = spawn(move || i2.ioas_unmap(ioas, 0x1000, 0x1000));
    entered.recv().unwrap();
    // The mirror is inside its unmap, blocked: the call cannot have returned.
    assert!(done.try_recv().is_err());
    release.send(()).unwrap();
    assert_eq!(done.recv().unwrap().unwrap(), 0x1000);
}

#[test]
fn device_observers_are_told_with_the_right_ranges() {
    let iommu = Iommu::new();
    let info = DeviceInfo {
        pasid_bits: 4,
        ..DeviceInfo::default()
    };
    let (d1, _dev1) = iommu.device_bind(GroupId(1), info.clone()).unwrap();
    let (d2, _dev2) = iommu.device_bind(GroupId(1), info).unwrap();
    let (other, _) = bind(&iommu, 2);
    let (w1, w2, wo) = (
        Arc::new(Watcher::default()),
        Arc::new(Watcher::default()),
        Arc::new(Watcher::default()),
    );
    iommu.device_add_observer(d1, w1.clone()).unwrap();
    iommu.device_add_observer(d2, w2.clone()).unwrap();
    iommu.device_add_observer(other, wo.clone()).unwrap();
    let a = iommu.ioas_alloc().unwrap();
    let b = iommu.ioas_alloc().unwrap();
    for ioas in [a, b] {
        iommu
            .ioas_map(ioas, Some(0x1000), 0x5000, 0x3000, Prot::RW)
            .unwrap();
        iommu
            .ioas_map(ioas, Some(0x10_0000), 0x9000, 0x1000, Prot::RW)
            .unwrap();
    }
    iommu.device_attach(d1, a).unwrap();
    iommu.device_attach(d2, a).unwrap();
    assert!(w1.take().is_empty(), "an attach invalidates nothing");
    // Unmap on the devices' IOAS: the range; the unrelated device hears nothing.
    iommu.ioas_unmap(a, 0x1000, 0x3000).unwrap();
    assert_eq!(w1.take(), [(None, 0x1000..=0x3fff)]);
    assert_eq!(w2.take(), [(None, 0x1000..=0x3fff)]);
    // An unmap on another IOAS, or one that removes nothing, tells nobody.
    iommu.ioas_unmap(b, 0x1000, 0x3000).unwrap();
    iommu.ioas_unmap(a, 0, u64::MAX).unwrap();
    iommu.ioas_unmap(a, 0, u64::MAX).unwrap();
    assert_eq!(w1.take(), [(None, ALL)], "unmap-all: every IOVA, once");
    w2.take();
    // Replace moves the group: both devices, every IOVA.
    iommu.device_replace(d1, b).unwrap();
    assert_eq!(w1.take(), [(None, ALL)]);
    assert_eq!(w2.take(), [(None, ALL)]);
    // A no-op replace changes nothing.
    let hwpt_b = iommu.device_replace(d1, b).unwrap();
    iommu.device_replace(d1, hwpt_b).unwrap();
    assert!(w1.take().is_empty());
    // Detach: that device only.
    iommu.device_detach(d2).unwrap();
    assert!(w1.take().is_empty());
    assert_eq!(w2.take(), [(None, ALL)]);
    // PASIDs.
    iommu.device_attach_pasid(d1, 3, a).unwrap();
    iommu
        .ioas_map(a, Some(0x2000), 0x5000, 0x1000, Prot::RW)
        .unwrap();
    iommu.ioas_unmap(a, 0x2000, 0x1000).unwrap();
    assert_eq!(w1.take(), [(Some(3), 0x2000..=0x2fff)]);
    iommu.device_replace_pasid(d1, 3, b).unwrap();
    assert_eq!(w1.take(), [(Some(3), ALL)]);
    // The RID and PASID 3 both sit on `b` now: an unmap there tells both.
    let mut seen = {
        iommu.ioas_unmap(b, 0x10_0000, 0x1000).unwrap();
        w1.take()
    };
    seen.sort_by_key(|s| s.0);
    assert_eq!(
        seen,
        [
            (None, 0x10_0000..=0x10_0fff),
            (Some(3), 0x10_0000..=0x10_0fff)
        ]
    );
    iommu.device_detach_pasid(d1, 3).unwrap();
    assert_eq!(w1.take(), [(Some(3), ALL)]);
    assert!(wo.take().is_empty(), "an unrelated device hears nothing");
}

struct NoTables;

impl TableMemory for NoTables {
    fn read_u64(&self, _: u64) -> Option<u64> {
        None
    }
}

#[test]
fn nested_domains_hear_their_invalidations_and_stage_2_unmaps() {
    let iommu = Iommu::new();
    let (dev, _d) = bind(&iommu, 1);
    let w = Arc::new(Watcher::default());
    iommu.device_add_observer(dev, w.clone()).unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some(0x1000), 0x5000, 0x1000, Prot::RW)
        .unwrap();
    let parent = iommu.hwpt_alloc(dev, ioas, HwptFlags::NEST_PARENT).unwrap();
    // STE: valid, Config = stage-1 bypass.
    let s1 = Stage1::SmmuV3 {
        ste: [1 | (0b100 << 1), 0],
    };
    let nested = iommu
        .hwpt_alloc_nested(dev, parent, s1, std::sync::Arc::new(NoTables))
        .unwrap();
    iommu.device_attach(dev, nested).unwrap();
    let range = Invalidation::Range {
        pasid: None,
        iova: 0x4000,
        len: 0x2000,
    };
    iommu.hwpt_invalidate(nested, range).unwrap();
    assert_eq!(w.take(), [(None, 0x4000..=0x5fff)]);
    iommu.hwpt_invalidate(nested, Invalidation::All).unwrap();
    assert_eq!(w.take(), [(None, ALL)]);
    // A stage-2 unmap: stage-1 IOVAs that reached the range are unknown, so every IOVA.
    iommu.ioas_unmap(ioas, 0x1000, 0x1000).unwrap();
    assert_eq!(w.take(), [(None, ALL)]);
    // Invalidating a nested HWPT no device uses tells nobody.
    let idle = iommu
        .hwpt_alloc_nested(dev, parent, s1, std::sync::Arc::new(NoTables))
        .unwrap();
    iommu.hwpt_invalidate(idle, Invalidation::All).unwrap();
    assert!(w.take().is_empty());
}

#[test]
fn a_fencing_call_waits_for_every_pending_ack() {
    let iommu = Iommu::new();
    let (dev, _d) = bind(&iommu, 1);
    let (first, tokens1) = Later::new();
    let (second, tokens2) = Later::new();
    iommu
        .device_add_observer_with_deadline(dev, first, LONG)
        .unwrap();
    iommu
        .device_add_observer_with_deadline(dev, second, LONG)
        .unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some(0x1000), 0x5000, 0x1000, Prot::RW)
        .unwrap();
    iommu.device_attach(dev, ioas).unwrap();
    let i2 = iommu.clone();
    let done = spawn(move || i2.ioas_unmap(ioas, 0x1000, 0x1000));
    // Both were told before either answered: the call waits for them together.
    let (t1, t2) = (tokens1.recv().unwrap(), tokens2.recv().unwrap());
    t2.complete();
    assert!(done.try_recv().is_err(), "one ack is still to come");
    // Completed from another thread.
    thread::spawn(move || t1.complete()).join().unwrap();
    assert_eq!(done.recv().unwrap().unwrap(), 0x1000);
    // The same for a detach.
    let i2 = iommu.clone();
    let done = spawn(move || i2.device_detach(dev));
    let (t1, t2) = (tokens1.recv().unwrap(), tokens2.recv().unwrap());
    t1.complete();
    assert!(done.try_recv().is_err());
    t2.complete();
    done.recv().unwrap().unwrap();
}

#[test]
fn a_deferred_unmap_completes_only_with_its_acks() {
    let iommu = Iommu::new();
    let (dev, _d) = bind(&iommu, 1);
    let (obs, tokens) = Later::new();
    iommu
        .device_add_observer_with_deadline(dev, obs, LONG)
        .unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some(0x1000), 0x5000, 0x1000, Prot::RW)
        .unwrap();
    iommu.device_attach(dev, ioas).unwrap();
    let c = iommu.ioas_unmap_deferred(ioas, 0x1000, 0x1000).unwrap();
    let token = tokens.recv().unwrap();
    assert!(!c.is_complete(), "an ack is still to come");
    token.complete();
    assert_eq!(c.wait().unwrap(), 0x1000);
}

#[test]
fn an_observer_that_never_acks_times_out_and_is_then_skipped() {
    let iommu = Iommu::new();
    let (dev, d) = bind(&iommu, 1);
    // Keeps its tokens and never completes them.
    let (silent, kept) = Later::new();
    // Drops its tokens.
    let (dropper, dropped) = Later::new();
    let silent_id = iommu
        .device_add_observer_with_deadline(dev, silent.clone(), Duration::from_millis(50))
        .unwrap();
    let dropper_id = iommu
        .device_add_observer_with_deadline(dev, dropper, LONG)
        .unwrap();
    let w = Arc::new(Watcher::default());
    iommu.device_add_observer(dev, w.clone()).unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some(0x1000), 0x5000, 0x2000, Prot::RW)
        .unwrap();
    iommu
        .ioas_map(ioas, Some(0x10_0000), 0x9000, 0x1000, Prot::RW)
        .unwrap();
    iommu.device_attach(dev, ioas).unwrap();
    // The dropper's token is dropped on the spot: that counts as never acknowledged.
    let i2 = iommu.clone();
    let done = spawn(move || i2.ioas_unmap(ioas, 0x1000, 0x2000));
    drop(dropped.recv().unwrap());
    let _keep = kept.recv().unwrap();
    let e = done.recv().unwrap().unwrap_err();
    assert_eq!(e.errno(), errno::ETIMEDOUT);
    let named = match e {
        Error::ObserverTimedOut { observer, dev: d } => {
            assert_eq!(d, dev);
            observer
        }
        other => panic!("{other:?}"),
    };
    assert!(named == silent_id || named == dropper_id);
    // The unmap happened all the same, and the other observer was told.
    assert!(d.translate(0x1000, 0x1000, Access::Read).is_err());
    assert_eq!(w.take(), [(None, 0x1000..=0x2fff)]);
    assert!(iommu.observer_failed(silent_id).unwrap());
    assert!(iommu.observer_failed(dropper_id).unwrap());
    // Later calls neither tell nor wait for the failed ones (a call that waited would fail).
    iommu.ioas_unmap(ioas, 0x10_0000, 0x1000).unwrap();
    assert_eq!(w.take(), [(None, 0x10_0000..=0x10_0fff)]);
    assert!(kept.try_recv().is_err() && dropped.try_recv().is_err());
    iommu.device_detach(dev).unwrap();
    assert!(kept.try_recv().is_err() && dropped.try_recv().is_err());
    // Removed and added again, it is told once more.
    iommu.remove_observer(silent_id).unwrap();
    assert_eq!(
        iommu.observer_failed(silent_id).unwrap_err().errno(),
        errno::ENOENT
    );
    iommu.device_add_observer(dev, silent).unwrap();
    iommu.device_attach(dev, ioas).unwrap();
    iommu
        .ioas_map(ioas, Some(0x1000), 0x5000, 0x1000, Prot::RW)
        .unwrap();
    let i2 = iommu.clone();
    let done = spawn(move || i2.ioas_unmap(ioas, 0x1000, 0x1000));
    kept.recv().unwrap().complete();
    done.recv().unwrap().unwrap();
}

/// An observer that calls back into the `Iommu` from `invalidate`.
struct Reentrant {
    iommu: Iommu,
    made: Mutex<Vec<ObjId>>,
}

impl DeviceObserver for Reentrant {
    fn invalidate(&self, _: Option<u32>, _: RangeInclusive<u64>) -> Ack {
        let id = self.iommu.ioas_alloc().unwrap();
        self.made.lock().unwrap().push(id);
        Ack::Done
    }
}

impl IoasMirror for Reentrant {
    fn map(&self, _: u64, _: u64, _: u64, _: Prot) -> Result<(), MirrorError> {
        // Another IOAS's lock, and the table's: neither is held by the map calling us.
        let id = self.iommu.ioas_alloc().unwrap();
        self.iommu
            .ioas_map(id, Some(0), 0, 0x1000, Prot::RW)
            .unwrap();
        Ok(())
    }

    fn unmap(&self, _: u64, _: u64) {
        self.iommu.ioas_alloc().unwrap();
    }
}

#[test]
fn observers_are_never_called_with_the_object_table_locked() {
    let iommu = Iommu::new();
    let (tx, rx) = mpsc::channel();
    let i2 = iommu.clone();
    // Every fencing call, from a thread the test can give up on: a deadlock fails, not hangs.
    thread::spawn(move || {
        let iommu = i2;
        let (dev, _d) = bind(&iommu, 1);
        let obs = Arc::new(Reentrant {
            iommu: iommu.clone(),
            made: Mutex::new(Vec::new()),
        });
        iommu.device_add_observer(dev, obs.clone()).unwrap();
        let a = iommu.ioas_alloc().unwrap();
        let b = iommu.ioas_alloc().unwrap();
        iommu.ioas_add_mirror(a, obs.clone()).unwrap();
        iommu
            .ioas_map(a, Some(0x1000), 0x5000, 0x1000, Prot::RW)
            .unwrap();
        iommu.device_attach(dev, a).unwrap();
        iommu.ioas_unmap(a, 0x1000, 0x1000).unwrap();
        iommu.device_replace(dev, b).unwrap();
        iommu.device_detach(dev).unwrap();
        let parent = iommu.hwpt_alloc(dev, b, HwptFlags::NEST_PARENT).unwrap();
        let s1 = Stage1::SmmuV3 {
            ste: [1 | (0b100 << 1), 0],
        };
        let nested = iommu
            .hwpt_alloc_nested(dev, parent, s1, std::sync::Arc::new(NoTables))
            .unwrap();
        iommu.device_attach(dev, nested).unwrap();
        iommu.hwpt_invalidate(nested, Invalidation::All).unwrap();
        let n = obs.made.lock().unwrap().len();
        tx.send(n).unwrap();
    });
    let n = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("an observer calling back into the Iommu deadlocked");
    assert_eq!(n, 4, "unmap, replace, detach, hwpt_invalidate");
}
