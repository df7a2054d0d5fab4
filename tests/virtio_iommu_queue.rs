//! The virtio-iommu request queue driver (`VirtioIommu::process_queue`) on rust-vmm's
//! virtio-queue: the guest's side is virtio-queue's mock driver (`MockSplitQueue`, feature
//! `test-utils`) over guest-physical memory, posting the Linux driver's requests byte for
//! byte, split where Linux splits them (`viommu_add_req`: one readable, one writable buffer).
#![cfg(feature = "virtio-iommu-queue")]
// Reserved ranges are lists that hold one range here.
#![allow(clippy::single_range_in_vec_init)]

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use viommu::virtio_iommu::wire::{self, MAP_F_READ, MAP_F_WRITE, RESV_MEM_T_MSI, TAIL_SIZE};
use viommu::virtio_iommu::{Config, ResvRegion, Status, VirtioIommu};
use viommu::{Access, Device, DeviceInfo, FaultKind, GroupId, Iommu};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

#[path = "support/linux_virtio_iommu.rs"]
mod linux;
use linux::{linux_attach, linux_map, linux_unmap};

#[path = "support/virtio_iommu_setup.rs"]
mod virtio_setup;
use virtio_setup::{becomes_unmapped, target};

/// Guest RAM: 4 MiB at GPA 0.
const RAM: usize = 0x40_0000;
const QSIZE: u16 = 32;
/// The used ring, on a page of its own (see tests/virtqueue.rs: the mock places its used ring
/// over the available ring's second half).
const USED_GPA: u64 = 0x1000;
/// Request buffers: one page per descriptor from here.
const BUF_GPA: u64 = 0x10_0000;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;
const RW: u32 = MAP_F_READ | MAP_F_WRITE;
const PROBE_SIZE: usize = 64;
const EP: u32 = 8;

/// One buffer of a chain: bytes the device reads, or the length of a buffer it writes.
enum Seg {
    R(Vec<u8>),
    W(u32),
    /// A readable buffer outside guest memory.
    Bad,
}

/// A posted chain: its head, and its writable buffers (GPA, length).
struct Posted {
    head: u16,
    writable: Vec<(u64, u32)>,
}

/// The guest's side: the mock lays out the rings and stores the descriptors.
struct Driver<'a> {
    mock: MockSplitQueue<'a, GuestMemoryMmap>,
    ram: &'a GuestMemoryMmap,
    avail_idx: u16,
    posted: Vec<Posted>,
}

impl<'a> Driver<'a> {
    fn new(ram: &'a GuestMemoryMmap) -> Driver<'a> {
        Driver {
            mock: MockSplitQueue::new(ram, QSIZE),
            ram,
            avail_idx: 0,
            posted: Vec::new(),
        }
    }

    fn device_queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_ready(true);
        q.try_set_desc_table_address(self.mock.desc_table_addr())
            .unwrap();
        q.try_set_avail_ring_address(self.mock.avail_addr())
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(USED_GPA)).unwrap();
        q
    }

    /// Posts one pass of chains (descriptors from 0; the previous pass must be served).
    fn post(&mut self, chains: Vec<Vec<Seg>>) {
        self.posted.clear();
        let mut next = 0u16;
        for chain in chains {
            let head = next;
            let mut writable = Vec::new();
            let n = chain.len();
            for (k, seg) in chain.into_iter().enumerate() {
                let idx = next;
                next += 1;
                let gpa = BUF_GPA + u64::from(idx) * 0x1000;
                let (addr, len, mut flags) = match seg {
                    Seg::R(bytes) => {
                        self.ram.write_slice(&bytes, GuestAddress(gpa)).unwrap();
                        (gpa, bytes.len() as u32, 0)
                    }
                    Seg::W(len) => {
                        self.ram
                            .write_slice(&vec![0xee; len as usize], GuestAddress(gpa))
                            .unwrap();
                        writable.push((gpa, len));
                        (gpa, len, VRING_DESC_F_WRITE)
                    }
                    Seg::Bad => (RAM as u64 + 0x1000_0000, 24, 0),
                };
                if k + 1 < n {
                    flags |= VRING_DESC_F_NEXT;
                }
                let d = SplitDescriptor::new(addr, len, flags, next);
                self.mock
                    .desc_table()
                    .store(idx, RawDescriptor::from(d))
                    .unwrap();
            }
            let entry = self
                .mock
                .avail_addr()
                .unchecked_add(4 + 2 * u64::from(self.avail_idx % QSIZE));
            self.ram.write_obj(head.to_le(), entry).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.posted.push(Posted { head, writable });
        }
        self.ram
            .store(
                self.avail_idx.to_le(),
                self.mock.avail_addr().unchecked_add(2),
                Ordering::Release,
            )
            .unwrap();
    }

    fn used_idx(&self) -> u16 {
        self.ram
            .load(GuestAddress(USED_GPA).unchecked_add(2), Ordering::Acquire)
            .unwrap()
    }

    /// The used-ring entries of the last pass, `(id, len)`, and each chain's writable bytes
    /// (its buffers concatenated).
    fn used(&self) -> (Vec<(u32, u32)>, Vec<Vec<u8>>) {
        assert_eq!(self.used_idx(), self.avail_idx, "every chain was used");
        let n = self.posted.len() as u16;
        let mut entries = Vec::new();
        for k in 0..n {
            let pos = self.avail_idx.wrapping_sub(n).wrapping_add(k) % QSIZE;
            let elem = GuestAddress(USED_GPA).unchecked_add(4 + 8 * u64::from(pos));
            let id: u32 = self.ram.read_obj(elem).unwrap();
            let len: u32 = self.ram.read_obj(elem.unchecked_add(4)).unwrap();
            entries.push((id, len));
        }
        let bytes = self
            .posted
            .iter()
            .map(|p| {
                let mut b = Vec::new();
                for &(gpa, len) in &p.writable {
                    let mut v = vec![0u8; len as usize];
                    self.ram.read_slice(&mut v, GuestAddress(gpa)).unwrap();
                    b.extend_from_slice(&v);
                }
                b
            })
            .collect();
        (entries, bytes)
    }

    fn heads(&self) -> Vec<u32> {
        self.posted.iter().map(|p| u32::from(p.head)).collect()
    }
}

/// A Linux request struct split where `viommu_add_req` splits it: readable, then writable.
fn linux_chain(req: Vec<u8>) -> Vec<Seg> {
    let at = wire::write_offset(&req).unwrap();
    vec![Seg::R(req[..at].to_vec()), Seg::W((req.len() - at) as u32)]
}

/// `struct virtio_iommu_req_probe` with `probe_size` bytes of properties and a tail.
fn linux_probe(endpoint: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4 + 4 + 64 + PROBE_SIZE + 4];
    b[0] = 5;
    b[4..8].copy_from_slice(&endpoint.to_le_bytes());
    b
}

fn setup() -> (VirtioIommu, Device) {
    let iommu = Iommu::new();
    let config = Config {
        probe_size: PROBE_SIZE as u32,
        // Endpoints start blocked: these tests check faults before the first ATTACH.
        boot_bypass: false,
        ..Config::default()
    };
    let mut v = VirtioIommu::new(iommu.clone(), config);
    let (_, dev) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    v.add_endpoint(EP, &dev, vec![ResvRegion::msi(0xfee0_0000..0xfef0_0000)])
        .unwrap();
    (v, dev)
}

fn ram() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap()
}

fn status_at(bytes: &[u8], at: usize) -> Status {
    assert_eq!(
        &bytes[at + 1..at + TAIL_SIZE],
        &[0, 0, 0],
        "tail reserved bytes"
    );
    Status::from_u8(bytes[at]).unwrap()
}

#[test]
fn linux_boot_sequence_through_the_queue() {
    let ram = ram();
    let (mut v, dev) = setup();
    let mut driver = Driver::new(&ram);
    let mut queue = driver.device_queue();

    // viommu_probe_endpoint: PROBE, its writable part the properties and the tail.
    driver.post(vec![linux_chain(linux_probe(EP))]);
    assert_eq!(v.process_queue(&mut queue, &ram).unwrap(), 1);
    let (used, replies) = driver.used();
    assert_eq!(used, vec![(0, (PROBE_SIZE + TAIL_SIZE) as u32)]);
    let props = &replies[0];
    assert_eq!(status_at(props, PROBE_SIZE), Status::Ok);
    // One RESV_MEM property (type 1, length 20): MSI, 0xfee00000 ..= 0xfeefffff.
    assert_eq!(u16::from_le_bytes([props[0], props[1]]), 1);
    assert_eq!(u16::from_le_bytes([props[2], props[3]]), 20);
    assert_eq!(props[4], RESV_MEM_T_MSI);
    assert_eq!(&props[8..16], &0xfee0_0000u64.to_le_bytes());
    assert_eq!(&props[16..24], &0xfeef_ffffu64.to_le_bytes());
    assert!(
        props[24..PROBE_SIZE].iter().all(|&b| b == 0),
        "NONE ends the list"
    );

    // viommu_attach_dev, then viommu_map_pages (replaying the domain's mappings): one pass.
    driver.post(vec![
        linux_chain(linux_attach(1, EP)),
        linux_chain(linux_map(1, 0x1000, 0x20_0000, 0x2000, RW)),
        linux_chain(linux_map(1, 0x10_0000, 0x30_0000, 0x20_0000, MAP_F_READ)),
    ]);
    assert_eq!(v.process_queue(&mut queue, &ram).unwrap(), 3);
    let (used, replies) = driver.used();
    let heads = driver.heads();
    assert_eq!(heads, vec![0, 2, 4]);
    assert_eq!(used, heads.iter().map(|&h| (h, 4)).collect::<Vec<_>>());
    assert!(replies.iter().all(|r| status_at(r, 0) == Status::Ok));
    assert_eq!(v.endpoint_domain(EP), Some(1));
    assert_eq!(target(&dev, 0x1800, Access::Write), Ok(0x20_0800));
    assert_eq!(target(&dev, 0x2fff, Access::Read), Ok(0x20_1fff));
    assert_eq!(target(&dev, 0x3000, Access::Read), Err(FaultKind::Unmapped));
    assert_eq!(target(&dev, 0x28_0000, Access::Read), Ok(0x48_0000));
    assert_eq!(
        target(&dev, 0x28_0000, Access::Write),
        Err(FaultKind::Permission)
    );

    // viommu_unmap_pages, then a MAP that overlaps what is still mapped (INVAL).
    driver.post(vec![
        linux_chain(linux_unmap(1, 0x1000, 0x2000)),
        linux_chain(linux_map(1, 0x10_0000, 0, 0x1000, RW)),
    ]);
    assert_eq!(v.process_queue(&mut queue, &ram).unwrap(), 2);
    let (used, replies) = driver.used();
    assert_eq!(used, vec![(0, 4), (2, 4)]);
    assert_eq!(status_at(&replies[0], 0), Status::Ok);
    assert_eq!(status_at(&replies[1], 0), Status::Inval);
    assert_eq!(target(&dev, 0x1800, Access::Read), Err(FaultKind::Unmapped));
    assert_eq!(target(&dev, 0x10_0000, Access::Read), Ok(0x30_0000));

    // Nothing available: nothing served.
    assert_eq!(v.process_queue(&mut queue, &ram).unwrap(), 0);
}

/// Buffers split over several descriptors are gathered and scattered in chain order.
#[test]
fn requests_and_replies_span_descriptors() {
    let ram = ram();
    let (mut v, dev) = setup();
    let mut driver = Driver::new(&ram);
    let mut queue = driver.device_queue();
    let attach = linux_attach(7, EP);
    let map = linux_map(7, 0x4000, 0x8000, 0x1000, MAP_F_READ);
    let probe = linux_probe(EP);
    driver.post(vec![
        vec![
            Seg::R(attach[..5].to_vec()),
            Seg::R(attach[5..20].to_vec()),
            Seg::W(2),
            Seg::W(2),
        ],
        vec![Seg::R(map[..36].to_vec()), Seg::W(1), Seg::W(1), Seg::W(2)],
        vec![Seg::R(probe[..72].to_vec()), Seg::W(30), Seg::W(100)],
    ]);
    assert_eq!(v.process_queue(&mut queue, &ram).unwrap(), 3);
    let (used, replies) = driver.used();
    assert_eq!(
        used,
        vec![(0, 4), (4, 4), (8, (PROBE_SIZE + TAIL_SIZE) as u32)]
    );
    assert_eq!(replies[0], vec![0, 0, 0, 0]);
    assert_eq!(replies[1], vec![0, 0, 0, 0]);
    assert_eq!(status_at(&replies[2], PROBE_SIZE), Status::Ok);
    assert_eq!(replies[2][4], RESV_MEM_T_MSI);
    // Past the used length, the writable buffer is untouched.
    assert!(replies[2][PROBE_SIZE + TAIL_SIZE..]
        .iter()
        .all(|&b| b == 0xee));
    assert_eq!(target(&dev, 0x4010, Access::Read), Ok(0x8010));
}

/// Malformed chains get the core's status, or go back unwritten with used length 0; none
/// panics, and none changes anything.
#[test]
fn malformed_chains() {
    let ram = ram();
    let (mut v, dev) = setup();
    let mut driver = Driver::new(&ram);
    let mut queue = driver.device_queue();
    let attach = linux_attach(1, EP);
    driver.post(vec![
        // No writable part: no tail to write to; nothing done.
        vec![Seg::R(attach[..20].to_vec())],
        // Readable part too short for ATTACH: INVAL.
        vec![Seg::R(attach[..19].to_vec()), Seg::W(4)],
        // Writable part too short for the tail: unwritten.
        vec![Seg::R(attach[..20].to_vec()), Seg::W(3)],
        // Unknown type: unwritten.
        vec![Seg::R(vec![0x42; 24]), Seg::W(4)],
        // No readable part at all: unwritten.
        vec![Seg::W(4)],
        // A readable buffer outside guest memory: unprocessed, unwritten.
        vec![Seg::Bad, Seg::W(4)],
        // PROBE with room for the tail but not the properties: INVAL at the end.
        vec![Seg::R(linux_probe(EP)[..72].to_vec()), Seg::W(10)],
    ]);
    assert_eq!(v.process_queue(&mut queue, &ram).unwrap(), 7);
    let (used, replies) = driver.used();
    let heads = driver.heads();
    let lens: Vec<u32> = used.iter().map(|&(_, l)| l).collect();
    assert_eq!(used.iter().map(|&(id, _)| id).collect::<Vec<_>>(), heads);
    assert_eq!(lens, vec![0, 4, 0, 0, 0, 0, 10]);
    assert_eq!(status_at(&replies[1], 0), Status::Inval);
    assert_eq!(replies[2], vec![0xee; 3]);
    assert_eq!(replies[3], vec![0xee; 4]);
    assert_eq!(replies[4], vec![0xee; 4]);
    assert_eq!(replies[5], vec![0xee; 4]);
    assert_eq!(status_at(&replies[6], 6), Status::Inval);
    assert_eq!(v.endpoint_domain(EP), None);
    assert!(v.domains().is_empty());
    assert_eq!(target(&dev, 0, Access::Read), Err(FaultKind::Blocked));
}

/// One pass of 8 UNMAPs: their effects are immediate, but no chain is used while a guard
/// taken before the pass is alive, and all 8 are used together once it is dropped.
#[test]
fn eight_unmaps_complete_together() {
    let ram = ram();
    let (mut v, dev) = setup();
    let mut driver = Driver::new(&ram);
    let mut queue = driver.device_queue();
    let mut chains = vec![linux_chain(linux_attach(1, EP))];
    for i in 0..8u64 {
        chains.push(linux_chain(linux_map(
            1,
            0x10_0000 + i * 0x1_0000,
            0x4000_0000 + i * 0x1_0000,
            0x1_0000,
            RW,
        )));
    }
    driver.post(chains);
    assert_eq!(v.process_queue(&mut queue, &ram).unwrap(), 9);
    assert!(driver
        .used()
        .1
        .iter()
        .all(|r| status_at(r, 0) == Status::Ok));
    assert_eq!(v.domain_mappings(1).len(), 8);

    let (pinned_tx, pinned_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = {
        let dev = dev.clone();
        thread::spawn(move || {
            let g = dev.pin();
            assert!(g.translate(0x10_0000, 8, Access::Read).is_ok());
            pinned_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            drop(g);
        })
    };
    pinned_rx.recv().unwrap();

    let before = driver.used_idx();
    driver.post(
        (0..8u64)
            .map(|i| linux_chain(linux_unmap(1, 0x10_0000 + i * 0x1_0000, 0x1_0000)))
            .collect(),
    );
    let (done_tx, done_rx) = mpsc::channel();
    let server = thread::scope(|s| {
        let h = s.spawn(|| {
            let n = v.process_queue(&mut queue, &ram).unwrap();
            done_tx.send(()).unwrap();
            n
        });
        // The unmaps take effect at once: new translations fault.
        assert!(becomes_unmapped(&dev, 0x17_0000));
        assert!(
            done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the pass completed while a guard that might use the old pages was alive"
        );
        assert_eq!(
            driver.used_idx(),
            before,
            "no chain used before the fence holds"
        );
        release_tx.send(()).unwrap();
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        h.join().unwrap()
    });
    holder.join().unwrap();
    assert_eq!(server, 8);
    let (used, replies) = driver.used();
    assert_eq!(
        used,
        driver.heads().iter().map(|&h| (h, 4)).collect::<Vec<_>>()
    );
    assert!(replies.iter().all(|r| status_at(r, 0) == Status::Ok));
    assert!(v.domain_mappings(1).is_empty());
    for i in 0..8u64 {
        assert_eq!(
            target(&dev, 0x10_0000 + i * 0x1_0000, Access::Read),
            Err(FaultKind::Unmapped)
        );
    }
}

/// A pass whose fences cannot be waited for (the queue thread holds a guard: `EDEADLK`) is not
/// reported: its chains stay off the used ring, and the next `process_queue` from a thread
/// without guards completes them (replies written, in order) before serving new chains. A pass
/// without fences completes even while a guard is held.
#[test]
fn a_stalled_pass_completes_on_the_next_call() {
    let ram = ram();
    let (mut v, dev) = setup();
    let mut driver = Driver::new(&ram);
    let mut queue = driver.device_queue();
    driver.post(vec![
        linux_chain(linux_attach(1, EP)),
        linux_chain(linux_map(1, 0x10_0000, 0x4000_0000, 0x1_0000, RW)),
    ]);
    let guard = dev.pin();
    // MAP and ATTACH carry no fence: served with the guard held.
    assert_eq!(v.process_queue(&mut queue, &ram).unwrap(), 2);
    assert!(
        guard.translate(0x10_0000, 8, Access::Read).is_err(),
        "the guard's snapshot predates the attach"
    );
    let served = driver.used_idx();
    driver.post(vec![linux_chain(linux_unmap(1, 0x10_0000, 0x1_0000))]);
    let e = v.process_queue(&mut queue, &ram).unwrap_err();
    assert!(
        matches!(e, viommu::virtio_iommu::QueueError::Fence(_)),
        "{e:?}"
    );
    assert!(v.has_stalled_pass());
    assert_eq!(
        driver.used_idx(),
        served,
        "nothing of the stalled pass is reported"
    );
    // The UNMAP took effect: new translations fault.
    drop(guard);
    assert_eq!(
        target(&dev, 0x10_0000, Access::Read),
        Err(FaultKind::Unmapped)
    );
    // Still stalled if retried with a guard held.
    let again = dev.pin();
    assert!(matches!(
        v.process_queue(&mut queue, &ram),
        Err(viommu::virtio_iommu::QueueError::Fence(_))
    ));
    drop(again);
    assert_eq!(v.process_queue(&mut queue, &ram).unwrap(), 1);
    assert!(!v.has_stalled_pass());
    let (used, replies) = driver.used();
    assert_eq!(used, vec![(driver.heads()[0], TAIL_SIZE as u32)]);
    assert_eq!(status_at(&replies[0], 0), Status::Ok);
    assert_eq!(v.process_queue(&mut queue, &ram).unwrap(), 0);
}

/// Fault reports go out on the event queue, one 24-byte `struct virtio_iommu_fault` per
/// buffer, in order; a buffer too small is returned unwritten (used length 0) and the report
/// goes into the next one; reports that find no buffer stay queued for a later call.
#[test]
fn fault_reports_on_the_event_queue() {
    use std::collections::VecDeque;
    use viommu::virtio_iommu::{FaultEvent, FAULT_R_DOMAIN, FAULT_R_MAPPING};
    let ram = ram();
    let (v, dev) = setup();
    let mut driver = Driver::new(&ram);
    let mut eventq = driver.device_queue();
    let unmapped = dev.translate(0x10_0000, 8, Access::Write).unwrap_err();
    let mut events: VecDeque<FaultEvent> = (0..3)
        .map(|i| {
            let f = viommu::Fault {
                iova: 0x1000 * (i + 1),
                ..unmapped
            };
            v.fault_event(dev.id(), &f, Access::Write).unwrap()
        })
        .collect();
    driver.post(vec![
        vec![Seg::W(24)],
        vec![Seg::W(8)],
        vec![Seg::W(16), Seg::W(16)],
    ]);
    assert_eq!(v.report_faults(&mut eventq, &ram, &mut events).unwrap(), 2);
    assert_eq!(events.len(), 1, "the third report waits for a buffer");
    let (used, bytes) = driver.used();
    let heads = driver.heads();
    assert_eq!(used, vec![(heads[0], 24), (heads[1], 0), (heads[2], 24)]);
    for (b, iova) in [(&bytes[0], 0x1000u64), (&bytes[2], 0x2000)] {
        // Not attached: the device is blocked, so the reason is R_DOMAIN.
        assert_eq!(b[0], FAULT_R_DOMAIN);
        assert_ne!(b[0], FAULT_R_MAPPING);
        assert_eq!(&b[8..12], &EP.to_le_bytes());
        assert_eq!(&b[16..24], &iova.to_le_bytes());
    }
    // No buffers left: nothing delivered, nothing lost.
    assert_eq!(v.report_faults(&mut eventq, &ram, &mut events).unwrap(), 0);
    assert_eq!(events.len(), 1);
}
