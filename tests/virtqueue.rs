//! The real client: rust-vmm's virtio-queue processes split-queue descriptor chains whose ring
//! and buffer addresses are IOVAs, through `vm_memory::IommuMemory` over
//! `viommu::vm_memory::DeviceIommu`. The guest's side is virtio-queue's own mock driver
//! (`MockSplitQueue`, feature `test-utils`) over guest-physical memory.
#![cfg(feature = "vm-memory")]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use viommu::vm_memory::{DeviceIommu, DeviceMemory};
use viommu::{DeviceInfo, GroupId, HwptFlags, Iommu, ObjId, Prot};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::iommu::Error as IommuError;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap, IommuMemory};

/// Guest RAM: 4 MiB at GPA 0.
const RAM: usize = 0x40_0000;
/// The device sees GPA `g` at IOVA `IOVA + g`.
const IOVA: u64 = 0x1_0000_0000;
const QSIZE: u16 = 16;
/// Chains the driver posts per round (two descriptors each: request, reply).
const BATCH: u16 = 4;
const REQ_GPA: u64 = 0x10_0000;
const REQ_LEN: usize = 64;
const REPLY_LEN: usize = 16;
/// The used ring, on a page of its own: the mock places its used ring at the available ring's
/// start plus one byte per entry (`SplitQueueRing::end` counts entries, not bytes), on top of
/// the available ring's second half, which the first wrap of the ring would expose.
const USED_GPA: u64 = 0x1000;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

fn req_gpa(slot: u16) -> u64 {
    REQ_GPA + u64::from(slot) * 0x2000
}
fn reply_gpa(slot: u16) -> u64 {
    req_gpa(slot) + 0x1000
}
fn request(seq: u64) -> [u8; REQ_LEN] {
    let mut r = [0u8; REQ_LEN];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in r[8..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
    r
}
fn reply(req: &[u8; REQ_LEN]) -> [u8; REPLY_LEN] {
    let sum: u64 = req[8..].iter().map(|&b| u64::from(b)).sum();
    let mut r = [0u8; REPLY_LEN];
    r[..8].copy_from_slice(&req[..8]);
    r[8..].copy_from_slice(&sum.to_le_bytes());
    r
}

/// The guest's side: virtio-queue's mock lays out the rings in guest-physical memory and
/// stores the descriptors (whose addresses are IOVAs); publishing wraps the available ring.
struct Driver<'a> {
    mock: MockSplitQueue<'a, GuestMemoryMmap>,
    ram: &'a GuestMemoryMmap,
    avail_idx: u16,
    seq: u64,
}

impl<'a> Driver<'a> {
    fn new(ram: &'a GuestMemoryMmap) -> Driver<'a> {
        Driver {
            mock: MockSplitQueue::new(ram, QSIZE),
            ram,
            avail_idx: 0,
            seq: 0,
        }
    }

    /// The device's queue, programmed with the rings' IOVAs.
    fn device_queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_ready(true);
        q.try_set_desc_table_address(GuestAddress(IOVA + self.mock.desc_table_addr().0))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(IOVA + self.mock.avail_addr().0))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(IOVA + USED_GPA))
            .unwrap();
        q
    }

    /// Posts `BATCH` requests in slots `0 .. BATCH` (descriptors `2 slot`, `2 slot + 1`).
    fn post(&mut self) {
        for slot in 0..BATCH {
            let head = 2 * slot;
            let table = self.mock.desc_table();
            let req = SplitDescriptor::new(
                IOVA + req_gpa(slot),
                REQ_LEN as u32,
                VRING_DESC_F_NEXT,
                head + 1,
            );
            let rep = SplitDescriptor::new(
                IOVA + reply_gpa(slot),
                REPLY_LEN as u32,
                VRING_DESC_F_WRITE,
                0,
            );
            table.store(head, RawDescriptor::from(req)).unwrap();
            table.store(head + 1, RawDescriptor::from(rep)).unwrap();
            self.ram
                .write_slice(&request(self.seq), GuestAddress(req_gpa(slot)))
                .unwrap();
            self.ram
                .write_slice(&[0xee; REPLY_LEN], GuestAddress(reply_gpa(slot)))
                .unwrap();
            self.seq += 1;
            let entry = self
                .mock
                .avail_addr()
                .unchecked_add(4 + 2 * u64::from(self.avail_idx % QSIZE));
            self.ram.write_obj(head.to_le(), entry).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
        }
        // ORDERING: [AVAIL-IDX] Release, the driver's end: the device's Acquire load of the
        // index sees the ring entries and the requests written above.
        self.ram
            .store(
                self.avail_idx.to_le(),
                self.mock.avail_addr().unchecked_add(2),
                Ordering::Release,
            )
            .unwrap();
    }

    /// Checks the device's used ring and replies for the last batch; returns the mismatches.
    fn check(&self) -> u64 {
        let mut bad = 0;
        let used_idx: u16 = self
            .ram
            .load(GuestAddress(USED_GPA).unchecked_add(2), Ordering::Acquire)
            .unwrap();
        bad += u64::from(used_idx != self.avail_idx);
        for (k, slot) in (0..BATCH).enumerate() {
            let seq = self.seq - u64::from(BATCH) + k as u64;
            let pos = self.avail_idx.wrapping_sub(BATCH).wrapping_add(slot) % QSIZE;
            let elem = GuestAddress(USED_GPA).unchecked_add(4 + 8 * u64::from(pos));
            let id: u32 = self.ram.read_obj(elem).unwrap();
            let len: u32 = self.ram.read_obj(elem.unchecked_add(4)).unwrap();
            let got: [u8; REPLY_LEN] = self.ram.read_obj(GuestAddress(reply_gpa(slot))).unwrap();
            bad += u64::from(id != u32::from(2 * slot) || len != REPLY_LEN as u32);
            bad += u64::from(got != reply(&request(seq)));
        }
        bad
    }
}

/// The device's side: pops every available chain through `IommuMemory`, reads the request
/// and writes the reply. Odd requests use virtio-queue's `Reader`/`Writer` (slices collected
/// per chain), even ones `Bytes` calls on the descriptors' IOVAs (fenced per access). Returns
/// `(served, errors)`.
fn serve(queue: &mut Queue, mem: &DeviceMemory<GuestMemoryMmap>) -> (u64, u64) {
    let (mut served, mut errors) = (0, 0);
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let descs: Vec<_> = chain.clone().collect();
        let ok = (|| -> Option<()> {
            let seq: u64 = mem.read_obj(descs.first()?.addr()).ok()?;
            if seq % 2 == 1 {
                let mut req = [0u8; REQ_LEN];
                Reader::new(mem, chain.clone())
                    .ok()?
                    .read_exact(&mut req)
                    .ok()?;
                Writer::new(mem, chain.clone())
                    .ok()?
                    .write_all(&reply(&req))
                    .ok()?;
            } else {
                let mut req = [0u8; REQ_LEN];
                mem.read_slice(&mut req, descs[0].addr()).ok()?;
                let w = descs.iter().find(|d| d.is_write_only())?;
                mem.write_slice(&reply(&req), w.addr()).ok()?;
            }
            Some(())
        })();
        errors += u64::from(ok.is_none());
        if queue.add_used(mem, head, REPLY_LEN as u32).is_err() {
            errors += 1;
        }
        served += 1;
    }
    (served, errors)
}

struct Vm {
    iommu: Iommu,
    dev_id: ObjId,
    mem: DeviceMemory<GuestMemoryMmap>,
}

fn vm(ram: &GuestMemoryMmap) -> Vm {
    let iommu = Iommu::new();
    let (dev_id, dev) = iommu
        .device_bind(GroupId(3), DeviceInfo::default())
        .unwrap();
    let mem = IommuMemory::new(ram.clone(), DeviceIommu::new(dev), true, ());
    Vm { iommu, dev_id, mem }
}

#[test]
fn a_replace_storm_during_processing_gives_zero_errors() {
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let Vm { iommu, dev_id, mem } = vm(&ram);
    // The same guest memory through two IOASes of different shapes: one area (2 MiB leaves),
    // and 64 KiB areas.
    let ioas_a = iommu.ioas_alloc().unwrap();
    let ioas_b = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas_a, Some(IOVA), 0, RAM as u64, Prot::RW)
        .unwrap();
    for off in (0..RAM as u64).step_by(0x1_0000) {
        iommu
            .ioas_map(ioas_b, Some(IOVA + off), off, 0x1_0000, Prot::RW)
            .unwrap();
    }
    let hwpt_a = iommu
        .hwpt_alloc(dev_id, ioas_a, HwptFlags::empty())
        .unwrap();
    let hwpt_b = iommu
        .hwpt_alloc(dev_id, ioas_b, HwptFlags::empty())
        .unwrap();
    iommu.device_attach(dev_id, hwpt_a).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let replaces = Arc::new(AtomicU64::new(0));
    let storm = {
        let (iommu, stop, replaces) = (iommu.clone(), stop.clone(), replaces.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                iommu.device_replace(dev_id, hwpt_b).unwrap();
                iommu.device_replace(dev_id, hwpt_a).unwrap();
                replaces.fetch_add(2, Ordering::Relaxed);
            }
        })
    };

    let mut driver = Driver::new(&ram);
    let mut queue = driver.device_queue();
    let (mut served, mut errors, mut mismatches) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while (replaces.load(Ordering::Relaxed) < 100_000 || served < 20_000)
        && start.elapsed() < Duration::from_secs(60)
    {
        driver.post();
        let (s, e) = serve(&mut queue, &mem);
        served += s;
        errors += e;
        errors += u64::from(s != u64::from(BATCH));
        mismatches += driver.check();
    }
    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    let replaces = replaces.load(Ordering::Relaxed);
    eprintln!(
        "virtqueue under a replace storm: {served} requests, {errors} errors, {mismatches} \
         bad replies, {replaces} replaces in {:.1?}",
        start.elapsed()
    );
    assert_eq!((errors, mismatches), (0, 0));
    assert!(
        served >= 1_000 && replaces >= 1_000,
        "{served} requests, {replaces} replaces"
    );
}

#[test]
fn after_an_unmap_the_next_access_fails_and_nothing_is_written() {
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let Vm { iommu, dev_id, mem } = vm(&ram);
    // One area per page, so one buffer's page can be unmapped alone.
    let ioas = iommu.ioas_alloc().unwrap();
    for off in (0..0x20_0000u64).step_by(0x1000) {
        iommu
            .ioas_map(ioas, Some(IOVA + off), off, 0x1000, Prot::RW)
            .unwrap();
    }
    iommu.device_attach(dev_id, ioas).unwrap();

    let mut driver = Driver::new(&ram);
    let mut queue = driver.device_queue();
    driver.post();
    assert_eq!(serve(&mut queue, &mem), (u64::from(BATCH), 0));
    assert_eq!(driver.check(), 0);

    // The guest unmaps slot 1's reply buffer, then (wrongly) posts it again.
    iommu.ioas_unmap(ioas, IOVA + reply_gpa(1), 0x1000).unwrap();
    driver.post();
    let mut served = 0;
    while let Some(chain) = queue.pop_descriptor_chain(&mem) {
        let head = chain.head_index();
        let reply_iova = GuestAddress(IOVA + reply_gpa(head / 2));
        let mut req = [0u8; REQ_LEN];
        Reader::new(&mem, chain.clone())
            .unwrap()
            .read_exact(&mut req)
            .unwrap();
        let writer = Writer::new(&mem, chain);
        let direct = mem.write_slice(&reply(&req), reply_iova);
        if head == 2 {
            let err = writer.err().expect("a Writer over an unmapped buffer");
            assert!(format!("{err:?}").contains("CannotResolve"), "{err:?}");
            match direct.unwrap_err() {
                GuestMemoryError::IommuError(IommuError::CannotResolve { iova_range, .. }) => {
                    assert_eq!(iova_range.base, reply_iova);
                    assert_eq!(iova_range.length, REPLY_LEN);
                }
                other => panic!("expected an IOMMU error, got {other:?}"),
            }
            queue.add_used(&mem, head, 0).unwrap();
        } else {
            direct.unwrap();
            queue.add_used(&mem, head, REPLY_LEN as u32).unwrap();
        }
        served += 1;
    }
    assert_eq!(served, BATCH);
    // Nothing was written to the unmapped buffer's old target.
    let got: [u8; REPLY_LEN] = ram.read_obj(GuestAddress(reply_gpa(1))).unwrap();
    assert_eq!(got, [0xee; REPLY_LEN]);
    let other: [u8; REPLY_LEN] = ram.read_obj(GuestAddress(reply_gpa(2))).unwrap();
    assert_ne!(other, [0xee; REPLY_LEN]);
}
