//! A rust-vmm style emulator: a DMA device serves a virtqueue through
//! `viommu::vm_memory::DmaMemory` (vm-memory's `GuestMemory` over the device, no IOTLB), while
//! the guest moves the device back and forth between two domains (two IOASes mapping the same
//! guest memory). Each descriptor chain is served under one `PinnedDmaMemory`: one domain
//! snapshot for the whole chain, and every buffer copy of its `Reader` and `Writer` fenced
//! against unmaps.
//!
//! ```text
//! cargo run --release --features vm-memory --example rust_vmm [-- --seconds N]
//! ```
//!
//! The guest's side of the queue is virtio-queue's mock driver (`MockSplitQueue`). The device
//! sees the rings and buffers at IOVAs (guest-physical + 4 GiB). It prints the requests served,
//! the faults seen (0: every buffer is mapped in both domains) and the domain switches.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use viommu::vm_memory::DmaMemory;
use viommu::{DeviceInfo, GroupId, HwptFlags, Iommu, Prot};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

const RAM: u64 = 0x40_0000;
const IOVA: u64 = 0x1_0000_0000;
const QSIZE: u16 = 16;
/// The used ring's own page (the mock's layout puts it over the available ring).
const USED_GPA: u64 = 0x1000;
const BUF_GPA: u64 = 0x10_0000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = args::arg("--seconds", 2);

    // Guest memory, and the IOMMU with one device in two domains over it.
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)])?;
    let iommu = Iommu::new();
    let (dev_id, dev) = iommu.device_bind(GroupId(1), DeviceInfo::default())?;
    let ioas_a = iommu.ioas_alloc()?;
    let ioas_b = iommu.ioas_alloc()?;
    iommu.ioas_map(ioas_a, Some(IOVA), 0, RAM, Prot::RW)?;
    for off in (0..RAM).step_by(0x1_0000) {
        iommu.ioas_map(ioas_b, Some(IOVA + off), off, 0x1_0000, Prot::RW)?;
    }
    let hwpt_a = iommu.hwpt_alloc(dev_id, ioas_a, HwptFlags::empty())?;
    let hwpt_b = iommu.hwpt_alloc(dev_id, ioas_b, HwptFlags::empty())?;
    iommu.device_attach(dev_id, hwpt_a)?;

    // The device's view of memory: every address is an IOVA.
    let mem = DmaMemory::new(ram.clone(), dev);

    // The guest moves the device between the domains while it works.
    let stop = Arc::new(AtomicBool::new(false));
    let switches = Arc::new(AtomicU64::new(0));
    let guest = {
        let (iommu, stop, switches) = (iommu.clone(), stop.clone(), switches.clone());
        std::thread::spawn(move || -> viommu::Result<()> {
            let mut target = hwpt_b;
            while !stop.load(Ordering::Relaxed) {
                iommu.device_replace(dev_id, target)?;
                target = if target == hwpt_a { hwpt_b } else { hwpt_a };
                switches.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(10));
            }
            Ok(())
        })
    };

    // The guest's driver side: virtio-queue's mock lays out the rings; descriptors hold IOVAs.
    let mock = MockSplitQueue::new(&ram, QSIZE);
    let mut queue = Queue::new(QSIZE)?;
    queue.set_size(QSIZE);
    queue.set_ready(true);
    queue.try_set_desc_table_address(GuestAddress(IOVA + mock.desc_table_addr().0))?;
    queue.try_set_avail_ring_address(GuestAddress(IOVA + mock.avail_addr().0))?;
    queue.try_set_used_ring_address(GuestAddress(IOVA + USED_GPA))?;

    let (mut served, mut faults, mut avail_idx) = (0u64, 0u64, 0u16);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        // Driver: post one request (8 bytes in, 8 bytes out) and publish it.
        let req = BUF_GPA + u64::from(avail_idx % QSIZE) * 0x2000;
        ram.write_obj(served, GuestAddress(req))?;
        let table = mock.desc_table();
        table.store(
            0,
            RawDescriptor::from(Descriptor::new(IOVA + req, 8, F_NEXT, 1)),
        )?;
        table.store(
            1,
            RawDescriptor::from(Descriptor::new(IOVA + req + 0x1000, 8, F_WRITE, 0)),
        )?;
        let slot = mock
            .avail_addr()
            .unchecked_add(4 + 2 * u64::from(avail_idx % QSIZE));
        ram.write_obj(0u16, slot)?;
        avail_idx = avail_idx.wrapping_add(1);
        ram.store(
            avail_idx,
            mock.avail_addr().unchecked_add(2),
            Ordering::Release,
        )?;

        // Device: pin around each chain, pop it through the IOMMU, read the request, write
        // the reply. The Reader and Writer borrow the pinned memory, so their copies happen
        // under its guard; dropping it at the end of the iteration lets fences complete.
        loop {
            let chain_mem = mem.pin();
            let Some(chain) = queue.pop_descriptor_chain(&chain_mem) else {
                break;
            };
            let head = chain.head_index();
            let mut input = [0u8; 8];
            let read = Reader::new(&chain_mem, chain.clone()).map(|mut r| r.read_exact(&mut input));
            let ok = matches!(read, Ok(Ok(()))) && {
                let output = (u64::from_le_bytes(input) + 1).to_le_bytes();
                let written = Writer::new(&chain_mem, chain).map(|mut w| w.write_all(&output));
                matches!(written, Ok(Ok(())))
            };
            faults += u64::from(!ok);
            queue.add_used(&chain_mem, head, 8)?;
            served += 1;
        }
        // Driver: check the reply.
        let reply: u64 = ram.read_obj(GuestAddress(req + 0x1000))?;
        faults += u64::from(reply != served);
    }
    stop.store(true, Ordering::Relaxed);
    guest.join().expect("the guest thread panicked")?;

    let switches = switches.load(Ordering::Relaxed);
    println!("requests served:  {served}");
    println!("faults:           {faults}");
    println!("domain switches:  {switches}");
    if faults != 0 {
        return Err("a request faulted during the domain switches".into());
    }
    Ok(())
}

/// `--name value` options (shared by the examples).
#[path = "support/args.rs"]
mod args;
