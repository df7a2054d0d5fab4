//! The queue drivers against a hostile guest: what one `process_queue` or `report_faults` pass
//! may cost the host (chains served, bytes held) whatever the guest posts, and a used ring the
//! device cannot write. The guest's side is virtio-queue's mock rings over guest-physical
//! memory; `Reposting` is a queue whose guest posts another chain each time the device takes
//! one. Host memory is measured per thread by a counting allocator.
#![cfg(feature = "virtio-iommu-queue")]

use std::collections::VecDeque;
use std::num::Wrapping;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use viommu::virtio_iommu::{Config, FaultEvent, Status, VirtioIommu};
use viommu::{Access, DeviceInfo, FaultKind, GroupId, Iommu};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{DescriptorChain, Queue, QueueGuard, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

#[path = "support/linux_virtio_iommu.rs"]
#[allow(dead_code)]
mod linux;
use linux::{linux_attach, linux_map};

/// Bytes this thread allocated and has not freed, and the most it held since a reset.
#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{thread_peak_since as peak_since, thread_reset_peak as reset_peak};

const RAM: usize = 0x40_0000;
const USED_GPA: u64 = 0x1000;
const BUF_GPA: u64 = 0x10_0000;
const INDIRECT_GPA: u64 = 0x20_0000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const EP: u32 = 8;

fn ram() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap()
}

fn setup() -> VirtioIommu {
    let iommu = Iommu::new();
    let mut v = VirtioIommu::new(iommu.clone(), Config::default());
    let (_, dev) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    v.add_endpoint(EP, &dev, Vec::new()).unwrap();
    v
}

fn device_queue(mock: &MockSplitQueue<'_, GuestMemoryMmap>, size: u16) -> Queue {
    let mut q = Queue::new(size).unwrap();
    q.set_size(size);
    q.set_ready(true);
    q.try_set_desc_table_address(mock.desc_table_addr())
        .unwrap();
    q.try_set_avail_ring_address(mock.avail_addr()).unwrap();
    q.try_set_used_ring_address(GuestAddress(USED_GPA)).unwrap();
    q
}

fn store_desc(mock: &MockSplitQueue<'_, GuestMemoryMmap>, idx: u16, d: SplitDescriptor) {
    mock.desc_table()
        .store(idx, RawDescriptor::from(d))
        .unwrap();
}

/// Names `heads[k]` in available-ring entry `k`, then publishes `avail.idx = heads.len()`.
fn make_available(
    ram: &GuestMemoryMmap,
    mock: &MockSplitQueue<'_, GuestMemoryMmap>,
    heads: &[u16],
) {
    for (k, &h) in heads.iter().enumerate() {
        let entry = mock.avail_addr().unchecked_add(4 + 2 * k as u64);
        ram.write_obj(h.to_le(), entry).unwrap();
    }
    ram.store(
        (heads.len() as u16).to_le(),
        mock.avail_addr().unchecked_add(2),
        Ordering::Release,
    )
    .unwrap();
}

/// A two-descriptor chain at descriptors `2i`, `2i + 1`: `readable`, then `writable` bytes.
fn post_pair(
    ram: &GuestMemoryMmap,
    mock: &MockSplitQueue<'_, GuestMemoryMmap>,
    i: u16,
    readable: &[u8],
    writable: u32,
) -> u16 {
    let (r, w) = (2 * i, 2 * i + 1);
    let rgpa = BUF_GPA + u64::from(r) * 0x1000;
    let wgpa = BUF_GPA + u64::from(w) * 0x1000;
    ram.write_slice(readable, GuestAddress(rgpa)).unwrap();
    let f = if readable.is_empty() { 0 } else { F_NEXT };
    if readable.is_empty() {
        store_desc(mock, r, SplitDescriptor::new(wgpa, writable, F_WRITE, 0));
    } else {
        store_desc(
            mock,
            r,
            SplitDescriptor::new(rgpa, readable.len() as u32, f, w),
        );
        store_desc(mock, w, SplitDescriptor::new(wgpa, writable, F_WRITE, 0));
    }
    r
}

fn used_idx(ram: &GuestMemoryMmap, used: u64) -> u16 {
    ram.load(GuestAddress(used).unchecked_add(2), Ordering::Acquire)
        .unwrap()
}

fn used_elem(ram: &GuestMemoryMmap, used: u64, pos: u16) -> (u32, u32) {
    let elem = GuestAddress(used).unchecked_add(4 + 8 * u64::from(pos));
    (
        ram.read_obj(elem).unwrap(),
        ram.read_obj(elem.unchecked_add(4)).unwrap(),
    )
}

/// A queue whose guest posts one more chain (the same head again) each time the device pops
/// one, up to `repost` times: the guest that keeps a pass busy as long as the device pops.
struct Reposting {
    q: Queue,
    repost: usize,
    pops: usize,
}

impl<'a> QueueGuard<'a> for Reposting {
    type G = &'a mut Queue;
}

impl QueueT for Reposting {
    fn new(max_size: u16) -> Result<Self, virtio_queue::Error> {
        Ok(Reposting {
            q: Queue::new(max_size)?,
            repost: 0,
            pops: 0,
        })
    }
    fn is_valid<M: GuestMemory>(&self, mem: &M) -> bool {
        self.q.is_valid(mem)
    }
    fn reset(&mut self) {
        self.q.reset()
    }
    fn lock(&mut self) -> <Self as QueueGuard<'_>>::G {
        &mut self.q
    }
    fn max_size(&self) -> u16 {
        self.q.max_size()
    }
    fn size(&self) -> u16 {
        self.q.size()
    }
    fn set_size(&mut self, size: u16) {
        self.q.set_size(size)
    }
    fn ready(&self) -> bool {
        self.q.ready()
    }
    fn set_ready(&mut self, ready: bool) {
        self.q.set_ready(ready)
    }
    fn set_desc_table_address(&mut self, low: Option<u32>, high: Option<u32>) {
        self.q.set_desc_table_address(low, high)
    }
    fn set_avail_ring_address(&mut self, low: Option<u32>, high: Option<u32>) {
        self.q.set_avail_ring_address(low, high)
    }
    fn set_used_ring_address(&mut self, low: Option<u32>, high: Option<u32>) {
        self.q.set_used_ring_address(low, high)
    }
    fn set_event_idx(&mut self, enabled: bool) {
        self.q.set_event_idx(enabled)
    }
    fn avail_idx<M>(&self, mem: &M, order: Ordering) -> Result<Wrapping<u16>, virtio_queue::Error>
    where
        M: GuestMemory + ?Sized,
    {
        self.q.avail_idx(mem, order)
    }
    fn used_idx<M: GuestMemory>(
        &self,
        mem: &M,
        order: Ordering,
    ) -> Result<Wrapping<u16>, virtio_queue::Error> {
        self.q.used_idx(mem, order)
    }
    fn add_used<M: GuestMemory>(
        &mut self,
        mem: &M,
        head_index: u16,
        len: u32,
    ) -> Result<(), virtio_queue::Error> {
        self.q.add_used(mem, head_index, len)
    }
    fn enable_notification<M: GuestMemory>(
        &mut self,
        mem: &M,
    ) -> Result<bool, virtio_queue::Error> {
        self.q.enable_notification(mem)
    }
    fn disable_notification<M: GuestMemory>(&mut self, mem: &M) -> Result<(), virtio_queue::Error> {
        self.q.disable_notification(mem)
    }
    fn needs_notification<M: GuestMemory>(&mut self, mem: &M) -> Result<bool, virtio_queue::Error> {
        self.q.needs_notification(mem)
    }
    fn next_avail(&self) -> u16 {
        self.q.next_avail()
    }
    fn set_next_avail(&mut self, next_avail: u16) {
        self.q.set_next_avail(next_avail)
    }
    fn next_used(&self) -> u16 {
        self.q.next_used()
    }
    fn set_next_used(&mut self, next_used: u16) {
        self.q.set_next_used(next_used)
    }
    fn desc_table(&self) -> u64 {
        self.q.desc_table()
    }
    fn avail_ring(&self) -> u64 {
        self.q.avail_ring()
    }
    fn used_ring(&self) -> u64 {
        self.q.used_ring()
    }
    fn event_idx_enabled(&self) -> bool {
        self.q.event_idx_enabled()
    }
    fn pop_descriptor_chain<M>(&mut self, mem: M) -> Option<DescriptorChain<M>>
    where
        M: Clone + Deref,
        M::Target: GuestMemory,
    {
        let chain = self.q.pop_descriptor_chain(mem.clone())?;
        self.pops += 1;
        if self.repost > 0 {
            self.repost -= 1;
            // The guest names the same head in the next entry and publishes it.
            let size = self.q.size();
            let avail = GuestAddress(self.q.avail_ring());
            let m = mem.deref();
            let idx: u16 = m.load(avail.unchecked_add(2), Ordering::Acquire).unwrap();
            let entry = avail.unchecked_add(4 + 2 * u64::from(idx % size));
            m.write_obj(chain.head_index().to_le(), entry).unwrap();
            m.store(
                idx.wrapping_add(1).to_le(),
                avail.unchecked_add(2),
                Ordering::Release,
            )
            .unwrap();
        }
        Some(chain)
    }
}

/// Item 1: a guest that posts a chain each time the device takes one cannot keep a pass
/// going. On a 16-entry queue a pass serves at most the 16 chains available when it began,
/// then writes their used entries; the next pass takes what was posted since.
#[test]
fn a_pass_serves_only_what_was_available_when_it_began() {
    const SIZE: u16 = 16;
    let ram = ram();
    let mut v = setup();
    let mock = MockSplitQueue::new(&ram, SIZE);
    // One chain (an unknown request type: returned unwritten), named by every entry.
    let head = post_pair(&ram, &mock, 0, &[0x42; 8], 4);
    make_available(&ram, &mock, &[head; SIZE as usize]);
    let mut q = Reposting {
        q: device_queue(&mock, SIZE),
        repost: 10_000,
        pops: 0,
    };
    let served = v.process_queue(&mut q, &ram).unwrap();
    assert_eq!(served, usize::from(SIZE), "one pass, one ring's worth");
    assert_eq!(q.pops, usize::from(SIZE));
    assert_eq!(
        used_idx(&ram, USED_GPA),
        SIZE,
        "the pass wrote its used entries"
    );
    // The guest reposted once per pop: the next pass serves those 16, no more.
    let served = v.process_queue(&mut q, &ram).unwrap();
    assert_eq!(served, usize::from(SIZE));
    assert_eq!(used_idx(&ram, USED_GPA), 2 * SIZE);
}

/// Item 1, the event queue: buffers too small for a report, reposted as fast as the device
/// returns them, end a `report_faults` call after one ring's worth.
#[test]
fn report_faults_stops_after_one_rings_worth() {
    const SIZE: u16 = 16;
    let ram = ram();
    let v = setup();
    let mock = MockSplitQueue::new(&ram, SIZE);
    // One 8-byte buffer, named by every entry.
    let head = post_pair(&ram, &mock, 0, &[], 8);
    make_available(&ram, &mock, &[head; SIZE as usize]);
    let mut q = Reposting {
        q: device_queue(&mock, SIZE),
        repost: 10_000,
        pops: 0,
    };
    let fault = viommu::Fault {
        iova: 0x1000,
        kind: FaultKind::Unmapped,
    };
    let mut events: VecDeque<FaultEvent> = [FaultEvent::new(EP, &fault, Access::Read)]
        .into_iter()
        .collect();
    assert_eq!(v.report_faults(&mut q, &ram, &mut events).unwrap(), 0);
    assert_eq!(
        q.pops,
        usize::from(SIZE),
        "one ring's worth of buffers, then return"
    );
    assert_eq!(events.len(), 1, "the report waits for a buffer that fits");
}

/// Item 2: every entry of a 64-entry available ring names one chain whose indirect table
/// holds 65 535 zero-length writable descriptors. The pass serves all 64 chains while holding
/// a bounded amount of host memory (it used to keep every descriptor: about 1 MiB a chain).
#[test]
fn writable_descriptors_are_bounded_per_chain() {
    const SIZE: u16 = 64;
    const TABLE: u32 = 65_535;
    let ram = ram();
    let mut v = setup();
    let mock = MockSplitQueue::new(&ram, SIZE);
    // The request: an unknown type, so that the chain goes back unwritten.
    ram.write_slice(&[0x42; 8], GuestAddress(BUF_GPA)).unwrap();
    for i in 0..TABLE {
        let (flags, next) = if i + 1 < TABLE {
            (F_WRITE | F_NEXT, (i + 1) as u16)
        } else {
            (F_WRITE, 0)
        };
        let d = SplitDescriptor::new(BUF_GPA + 0x1000, 0, flags, next);
        let at = GuestAddress(INDIRECT_GPA + 16 * u64::from(i));
        ram.write_obj(RawDescriptor::from(d), at).unwrap();
    }
    // Head 0: the request; head 1: the indirect table.
    store_desc(&mock, 0, SplitDescriptor::new(BUF_GPA, 8, F_NEXT, 1));
    store_desc(
        &mock,
        1,
        SplitDescriptor::new(INDIRECT_GPA, TABLE * 16, F_INDIRECT, 0),
    );
    make_available(&ram, &mock, &vec![0u16; usize::from(SIZE)]);
    let mut q = device_queue(&mock, SIZE);
    let start = reset_peak();
    let served = v.process_queue(&mut q, &ram).unwrap();
    let peak = peak_since(start);
    eprintln!("one pass of {SIZE} chains of 65 535 descriptors held at most {peak} bytes");
    assert_eq!(served, usize::from(SIZE));
    assert_eq!(used_idx(&ram, USED_GPA), SIZE);
    assert!(
        peak < 64 << 10,
        "one pass of {SIZE} chains held {peak} bytes of host memory"
    );
}

/// A used ring the device cannot write part of: the entries that fit are added, the rest of
/// the pass (whose requests took effect) is kept, and a later call adds it once the ring can
/// be written again. Nothing is lost and nothing is done twice.
#[test]
fn a_used_ring_failure_loses_no_completed_request() {
    // Room for four two-descriptor chains.
    const SIZE: u16 = 8;
    let ram = ram();
    let mut v = setup();
    let mock = MockSplitQueue::new(&ram, SIZE);
    let attach = linux_attach(1, EP);
    let map = |k: u64| linux_map(1, k * 0x1000, 0x10_0000 + k * 0x1000, 0x1000, 1);
    let reqs = [attach, map(1), map(2), map(3)];
    let heads: Vec<u16> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = r.len() - 4;
            post_pair(&ram, &mock, i as u16, &r[..at], 4)
        })
        .collect();
    make_available(&ram, &mock, &heads);
    let mut q = device_queue(&mock, SIZE);
    // The used ring's first two entries are in guest memory, the third is past its end.
    let bad_used = RAM as u64 - 4 - 2 * 8;
    q.try_set_used_ring_address(GuestAddress(bad_used)).unwrap();
    assert!(v.process_queue(&mut q, &ram).is_err());
    assert_eq!(
        used_idx(&ram, bad_used),
        2,
        "the entries that fit were added"
    );
    assert!(v.has_stalled_pass(), "the other two are kept, not lost");
    // The MAPs took effect already.
    assert_eq!(v.domain_mappings(1).len(), 3);
    // The ring is writable again: the next call adds the kept entries first.
    q.try_set_used_ring_address(GuestAddress(USED_GPA)).unwrap();
    assert_eq!(v.process_queue(&mut q, &ram).unwrap(), 2);
    assert!(!v.has_stalled_pass());
    assert_eq!(used_idx(&ram, USED_GPA), 4);
    for pos in 2..4u16 {
        assert_eq!(
            used_elem(&ram, USED_GPA, pos),
            (u32::from(heads[usize::from(pos)]), 4)
        );
        let mut tail = [0u8; 4];
        let wgpa = BUF_GPA + u64::from(2 * pos + 1) * 0x1000;
        ram.read_slice(&mut tail, GuestAddress(wgpa)).unwrap();
        assert_eq!(tail[0], Status::Ok.as_u8());
    }
    // Nothing more to serve, nothing served twice.
    assert_eq!(v.process_queue(&mut q, &ram).unwrap(), 0);
    assert_eq!(used_idx(&ram, USED_GPA), 4);
}
