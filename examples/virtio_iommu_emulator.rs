//! A VMM with a virtio-iommu: guest memory, a virtio-iommu device whose request queue is served
//! by `VirtioIommu::process_queue`, and a DMA device (a virtio-iommu endpoint) that serves its
//! own virtqueue through vm-memory's `IommuMemory` on a DMA thread.
//!
//! ```text
//! cargo run --release --features virtio-iommu-queue --example virtio_iommu_emulator [-- --seconds N]
//! ```
//!
//! The guest (the main thread) posts its virtio-iommu requests as Linux's driver posts them
//! (one readable, one writable buffer each): PROBE the DMA endpoint, ATTACH it to domain 1, MAP the DMA device's rings and buffers into
//! domain 1 and the same into domain 2, then move the endpoint between the two domains with
//! ATTACH requests (each a hitless `device_replace`) while the DMA thread keeps serving
//! requests; at the end it UNMAPs and DETACHes. A domain ceases to exist when its last
//! endpoint leaves (virtio 1.3, DETACH), so each domain also holds an idle endpoint (a
//! device of its own group) that keeps its mappings alive across the switches.
//!
//! The guest's side of both queues is virtio-queue's mock driver (`MockSplitQueue`).
//! The DMA device sees its rings and buffers at IOVAs (guest-physical + 4 GiB); the
//! virtio-iommu's own queue is guest-physical. The example prints the requests the DMA device
//! served, the faults it saw (0: every buffer is mapped in both domains), the domain switches
//! and the virtio-iommu requests served.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use viommu::virtio_iommu::wire::{Request, MAP_F_READ, MAP_F_WRITE, TAIL_SIZE};
use viommu::virtio_iommu::{Config, Status, VirtioIommu};
use viommu::vm_memory::DeviceIommu;
use viommu::{Device, DeviceInfo, GroupId, Iommu};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap, IommuMemory};

/// Guest RAM: 4 MiB at GPA 0.
const RAM: u64 = 0x40_0000;
/// The DMA device's IOVAs: guest-physical + 4 GiB.
const IOVA: u64 = 0x1_0000_0000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// The virtio-iommu request queue: rings at GPA 0, its used ring on a page of its own (the
/// mock places its used ring over the available ring's second half), one page per request
/// descriptor from `VIOMMU_BUF`.
const VIOMMU_QSIZE: u16 = 32;
const VIOMMU_USED: u64 = 0x1000;
const VIOMMU_BUF: u64 = 0x10_0000;

/// The DMA device's virtqueue: rings at 0x2000 and 0x3000 (used), buffers at `DMA_BUF`, two
/// pages per request (8 bytes in, 8 bytes out).
const DMA_QSIZE: u16 = 16;
const DMA_RINGS: u64 = 0x2000;
const DMA_USED: u64 = 0x3000;
const DMA_BUF: u64 = 0x20_0000;
const DMA_BUF_LEN: u64 = DMA_QSIZE as u64 * 0x2000;

/// virtio-iommu endpoint IDs: the DMA device, and the idle endpoints that hold domains 1 and 2.
const EP_DMA: u32 = 8;
const EP_HOLD_1: u32 = 9;
const EP_HOLD_2: u32 = 10;

/// The guest's virtio-iommu driver: posts requests (one readable and one writable buffer,
/// as Linux's `viommu_add_req` does), "notifies" the device, and reads back each status.
struct IommuDriver<'a> {
    mock: MockSplitQueue<'a, GuestMemoryMmap>,
    ram: &'a GuestMemoryMmap,
    queue: Queue,
    avail_idx: u16,
    served: u64,
}

impl<'a> IommuDriver<'a> {
    fn new(ram: &'a GuestMemoryMmap) -> Result<IommuDriver<'a>, Box<dyn std::error::Error>> {
        let mock = MockSplitQueue::new(ram, VIOMMU_QSIZE);
        let mut queue = Queue::new(VIOMMU_QSIZE)?;
        queue.set_size(VIOMMU_QSIZE);
        queue.set_ready(true);
        queue.try_set_desc_table_address(mock.desc_table_addr())?;
        queue.try_set_avail_ring_address(mock.avail_addr())?;
        queue.try_set_used_ring_address(GuestAddress(VIOMMU_USED))?;
        Ok(IommuDriver {
            mock,
            ram,
            queue,
            avail_idx: 0,
            served: 0,
        })
    }

    /// Posts `reqs` as one pass (`(readable bytes, writable length)` each), has `dev` serve
    /// the queue, and returns each request's status.
    fn send(
        &mut self,
        dev: &mut VirtioIommu,
        reqs: &[(Vec<u8>, u32)],
    ) -> Result<Vec<Status>, Box<dyn std::error::Error>> {
        assert!(2 * reqs.len() <= usize::from(VIOMMU_QSIZE));
        let mut writable = Vec::new();
        for (k, (readable, wlen)) in reqs.iter().enumerate() {
            let head = 2 * k as u16;
            let (r_gpa, w_gpa) = (
                VIOMMU_BUF + u64::from(head) * 0x1000,
                VIOMMU_BUF + u64::from(head + 1) * 0x1000,
            );
            self.ram.write_slice(readable, GuestAddress(r_gpa))?;
            let table = self.mock.desc_table();
            let r = Descriptor::new(r_gpa, readable.len() as u32, F_NEXT, head + 1);
            table.store(head, RawDescriptor::from(r))?;
            let w = Descriptor::new(w_gpa, *wlen, F_WRITE, 0);
            table.store(head + 1, RawDescriptor::from(w))?;
            let slot = self
                .mock
                .avail_addr()
                .unchecked_add(4 + 2 * u64::from(self.avail_idx % VIOMMU_QSIZE));
            self.ram.write_obj(head.to_le(), slot)?;
            self.avail_idx = self.avail_idx.wrapping_add(1);
            writable.push((w_gpa, *wlen));
        }
        self.ram.store(
            self.avail_idx.to_le(),
            self.mock.avail_addr().unchecked_add(2),
            Ordering::Release,
        )?;

        // The device's notification handler: one queue pass.
        let n = dev.process_queue(&mut self.queue, self.ram)?;
        assert_eq!(n, reqs.len(), "every posted request was served");
        self.served += n as u64;
        let used: u16 = self.ram.load(
            GuestAddress(VIOMMU_USED).unchecked_add(2),
            Ordering::Acquire,
        )?;
        assert_eq!(used, self.avail_idx, "every request was used");

        // The status is the tail's first byte, at the end of the writable buffer.
        writable
            .iter()
            .map(|&(gpa, len)| {
                let at = GuestAddress(gpa + u64::from(len) - TAIL_SIZE as u64);
                let status: u8 = self.ram.read_obj(at)?;
                Ok(Status::from_u8(status).ok_or("an unknown status")?)
            })
            .collect()
    }

    /// Like `send`, and every request must succeed.
    fn send_ok(
        &mut self,
        dev: &mut VirtioIommu,
        reqs: &[Request],
    ) -> Result<(), Box<dyn std::error::Error>> {
        let reqs: Vec<(Vec<u8>, u32)> = reqs
            .iter()
            .map(|r| (r.to_bytes(), TAIL_SIZE as u32))
            .collect();
        for (k, status) in self.send(dev, &reqs)?.into_iter().enumerate() {
            if status != Status::Ok {
                return Err(format!("request {k} of the pass: {status:?}").into());
            }
        }
        Ok(())
    }
}

fn attach(domain: u32, endpoint: u32) -> Request {
    Request::Attach {
        domain,
        endpoint,
        flags: 0,
        reserved_set: false,
    }
}

/// MAP (read-write) of the guest-physical range `gpa .. gpa + len` at IOVA + `gpa`.
fn map(domain: u32, gpa: u64, len: u64) -> Request {
    Request::Map {
        domain,
        virt_start: IOVA + gpa,
        virt_end: IOVA + gpa + len - 1,
        phys_start: gpa,
        flags: MAP_F_READ | MAP_F_WRITE,
    }
}

fn unmap(domain: u32, gpa: u64, len: u64) -> Request {
    Request::Unmap {
        domain,
        virt_start: IOVA + gpa,
        virt_end: IOVA + gpa + len - 1,
        reserved_set: false,
    }
}

/// The DMA thread: the DMA device serves its virtqueue through `IommuMemory` (every address
/// an IOVA) until `stop`. Its guest driver's side (posting one request at a time, checking
/// the reply) runs on the same thread, through guest-physical memory. Returns (served, faults).
fn dma_device(ram: GuestMemoryMmap, dev: Device, stop: &AtomicBool) -> (u64, u64) {
    let mem = IommuMemory::new(ram.clone(), DeviceIommu::new(dev), true, ());
    let mock = MockSplitQueue::create(&ram, GuestAddress(DMA_RINGS), DMA_QSIZE);
    let mut queue = Queue::new(DMA_QSIZE).expect("a valid queue size");
    queue.set_size(DMA_QSIZE);
    queue.set_ready(true);
    let rings = [
        queue.try_set_desc_table_address(GuestAddress(IOVA + mock.desc_table_addr().0)),
        queue.try_set_avail_ring_address(GuestAddress(IOVA + mock.avail_addr().0)),
        queue.try_set_used_ring_address(GuestAddress(IOVA + DMA_USED)),
    ];
    assert!(rings.iter().all(Result::is_ok), "aligned ring addresses");

    let (mut served, mut faults, mut avail_idx) = (0u64, 0u64, 0u16);
    while !stop.load(Ordering::Relaxed) {
        // Driver: post one request (8 bytes in, 8 bytes out) and publish it.
        let req = DMA_BUF + u64::from(avail_idx % DMA_QSIZE) * 0x2000;
        let table = mock.desc_table();
        let posted = ram.write_obj(served, GuestAddress(req)).is_ok()
            && table
                .store(
                    0,
                    RawDescriptor::from(Descriptor::new(IOVA + req, 8, F_NEXT, 1)),
                )
                .is_ok()
            && table
                .store(
                    1,
                    RawDescriptor::from(Descriptor::new(IOVA + req + 0x1000, 8, F_WRITE, 0)),
                )
                .is_ok();
        let slot = mock
            .avail_addr()
            .unchecked_add(4 + 2 * u64::from(avail_idx % DMA_QSIZE));
        avail_idx = avail_idx.wrapping_add(1);
        let published = posted
            && ram.write_obj(0u16, slot).is_ok()
            && ram
                .store(
                    avail_idx,
                    mock.avail_addr().unchecked_add(2),
                    Ordering::Release,
                )
                .is_ok();
        assert!(published, "the driver's buffers are in guest memory");

        // Device: pop the chain through the IOMMU, read the request, write the reply.
        while let Some(chain) = queue.pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            let mut input = [0u8; 8];
            let read = Reader::new(&mem, chain.clone()).map(|mut r| r.read_exact(&mut input));
            let ok = matches!(read, Ok(Ok(()))) && {
                let output = (u64::from_le_bytes(input) + 1).to_le_bytes();
                let written = Writer::new(&mem, chain).map(|mut w| w.write_all(&output));
                matches!(written, Ok(Ok(())))
            };
            faults += u64::from(!ok);
            faults += u64::from(queue.add_used(&mem, head, 8).is_err());
            served += 1;
        }
        // Driver: check the reply.
        let reply = ram.read_obj::<u64>(GuestAddress(req + 0x1000));
        faults += u64::from(reply.ok() != Some(served));
    }
    (served, faults)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = args::arg("--seconds", 1);

    // Guest memory, the IOMMU, the DMA device and the two idle endpoints, each its own group.
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)])?;
    let iommu = Iommu::new();
    let (_, dma) = iommu.device_bind(GroupId(1), DeviceInfo::default())?;
    let (_, hold_1) = iommu.device_bind(GroupId(2), DeviceInfo::default())?;
    let (_, hold_2) = iommu.device_bind(GroupId(3), DeviceInfo::default())?;

    // The virtio-iommu device, with the three endpoints the VMM gives it.
    let mut viommu = VirtioIommu::new(iommu.clone(), Config::default());
    viommu.add_endpoint(EP_DMA, &dma, Vec::new())?;
    viommu.add_endpoint(EP_HOLD_1, &hold_1, Vec::new())?;
    viommu.add_endpoint(EP_HOLD_2, &hold_2, Vec::new())?;
    let mut driver = IommuDriver::new(&ram)?;

    // PROBE the DMA endpoint: properties, then the tail.
    let probe_len = viommu.config().probe_size + TAIL_SIZE as u32;
    let probe = Request::Probe { endpoint: EP_DMA }.to_bytes();
    let status = driver.send(&mut viommu, &[(probe, probe_len)])?;
    assert_eq!(status, vec![Status::Ok], "PROBE");

    // ATTACH: the DMA endpoint and the first holder to domain 1, the second holder to domain
    // 2. Then MAP the DMA device's rings and buffers into both domains, at the same IOVAs.
    driver.send_ok(
        &mut viommu,
        &[
            attach(1, EP_DMA),
            attach(1, EP_HOLD_1),
            attach(2, EP_HOLD_2),
        ],
    )?;
    let regions = [(DMA_RINGS, 0x2000), (DMA_BUF, DMA_BUF_LEN)];
    let maps: Vec<Request> = [1, 2]
        .iter()
        .flat_map(|&d| regions.iter().map(move |&(gpa, len)| map(d, gpa, len)))
        .collect();
    driver.send_ok(&mut viommu, &maps)?;

    // The DMA thread serves its queue while the guest moves the endpoint between domains.
    let stop = Arc::new(AtomicBool::new(false));
    let dma_thread = {
        let (ram, dma, stop) = (ram.clone(), dma.clone(), stop.clone());
        std::thread::spawn(move || dma_device(ram, dma, &stop))
    };
    let mut switches = 0u64;
    let (mut domain, start) = (1u32, Instant::now());
    while start.elapsed() < Duration::from_secs(seconds) {
        domain = 3 - domain;
        driver.send_ok(&mut viommu, &[attach(domain, EP_DMA)])?;
        assert_eq!(viommu.endpoint_domain(EP_DMA), Some(domain));
        switches += 1;
        std::thread::sleep(Duration::from_micros(10));
    }
    stop.store(true, Ordering::Relaxed);
    let (served, faults) = dma_thread.join().expect("the DMA thread panicked");

    // Teardown: UNMAP everything, then DETACH every endpoint (the domains cease to exist).
    let unmaps: Vec<Request> = [1, 2]
        .iter()
        .flat_map(|&d| regions.iter().map(move |&(gpa, len)| unmap(d, gpa, len)))
        .collect();
    driver.send_ok(&mut viommu, &unmaps)?;
    driver.send_ok(
        &mut viommu,
        &[
            Request::Detach {
                domain,
                endpoint: EP_DMA,
            },
            Request::Detach {
                domain: 1,
                endpoint: EP_HOLD_1,
            },
            Request::Detach {
                domain: 2,
                endpoint: EP_HOLD_2,
            },
        ],
    )?;
    assert!(viommu.domains().is_empty(), "no domain is left");

    println!("DMA requests served:          {served}");
    println!("faults:                       {faults}");
    println!("domain switches:              {switches}");
    println!("virtio-iommu requests served: {}", driver.served);
    if faults != 0 {
        return Err("a DMA request faulted during the domain switches".into());
    }
    Ok(())
}

/// `--name value` options (shared by the examples).
#[path = "support/args.rs"]
mod args;
