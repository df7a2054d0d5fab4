//! `viommu::vm_memory::DmaMemory` and `PinnedDmaMemory`, vm-memory's `GuestMemory` over a
//! viommu device without an IOTLB: reads and writes through IOVAs, discontiguous targets and
//! backend regions, faults as vm-memory's IOMMU error, zero-length and 2^64 ranges, the
//! backend's dirty bitmap, virtio-queue's `Reader` and `Writer` on a pinned chain, the unmap
//! fence around a pinned chain, and no allocation on the hot path.
#![cfg(feature = "vm-memory")]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use viommu::vm_memory::{DmaMemory, PinnedDmaMemory};
use viommu::{Device, DeviceInfo, GroupId, Iommu, ObjId, Prot};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::iommu::{Error as IommuError, IovaRange};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryError,
    GuestMemoryMmap, GuestMemoryRegion, Permissions,
};

/// Counts this thread's allocations, for the no-allocation test.
#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::thread_allocs as allocs;

const PAGE: u64 = 4096;
/// Guest RAM: 1 MiB at GPA 0, in two regions of 512 KiB (so a chunk can span both).
const RAM: u64 = 0x10_0000;
const HALF: u64 = RAM / 2;
/// IOVA of GPA 0.
const IOVA: u64 = 0x4000_0000;
/// Two IOVA pages whose targets are swapped: IOVA + A -> GPA B and IOVA + B -> GPA A.
const A: u64 = 0x2_0000;
const B: u64 = 0x3_0000;

struct Setup<Bm: vm_memory::bitmap::Bitmap + 'static> {
    iommu: Iommu,
    dev_id: ObjId,
    ioas: ObjId,
    mem: DmaMemory<GuestMemoryMmap<Bm>>,
}

/// A device attached to an IOAS that maps `IOVA + g` to GPA `g` over all of RAM, one area per
/// page (so single pages can be unmapped) except pages A and B, which are swapped.
fn setup_with<Bm: vm_memory::bitmap::NewBitmap + Bitmap + 'static>() -> Setup<Bm> {
    let iommu = Iommu::new();
    let (dev_id, dev) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    for off in (0..RAM).step_by(PAGE as usize) {
        let target = match off {
            A => B,
            B => A,
            other => other,
        };
        iommu
            .ioas_map(ioas, Some(IOVA + off), target, PAGE, Prot::RW)
            .unwrap();
    }
    iommu.device_attach(dev_id, ioas).unwrap();
    let ram = GuestMemoryMmap::<Bm>::from_ranges(&[
        (GuestAddress(0), HALF as usize),
        (GuestAddress(HALF), HALF as usize),
    ])
    .unwrap();
    Setup {
        iommu,
        dev_id,
        ioas,
        mem: DmaMemory::new(ram, dev),
    }
}

fn setup() -> Setup<()> {
    setup_with()
}

fn iova(gpa: u64) -> GuestAddress {
    GuestAddress(IOVA + gpa)
}

/// The `CannotResolve` range of an IOMMU error, or a panic.
fn unresolved(err: GuestMemoryError) -> IovaRange {
    match err {
        GuestMemoryError::IommuError(IommuError::CannotResolve { iova_range, .. }) => iova_range,
        other => panic!("expected an IOMMU error, got {other:?}"),
    }
}

/// The lengths of the slices of a request, or its error.
fn slices<G: GuestMemory>(
    m: &G,
    at: GuestAddress,
    len: usize,
    p: Permissions,
) -> Result<Vec<usize>, GuestMemoryError> {
    m.get_slices(at, len, p)?
        .map(|s| s.map(|s| s.len()))
        .collect()
}

#[test]
fn reads_and_writes_land_at_the_backend_address() {
    let s = setup();
    let ram = s.mem.backend();
    let data: Vec<u8> = (0..=255).collect();
    s.mem.write_slice(&data, iova(0x2345)).unwrap();
    let mut back = [0u8; 256];
    ram.read_slice(&mut back, GuestAddress(0x2345)).unwrap();
    assert_eq!(&back[..], &data[..]);
    let mut through = [0u8; 256];
    s.mem.read_slice(&mut through, iova(0x2345)).unwrap();
    assert_eq!(through, back);
    s.mem.write_obj(0xdead_beef_u32, iova(A + 8)).unwrap();
    assert_eq!(
        ram.read_obj::<u32>(GuestAddress(B + 8)).unwrap(),
        0xdead_beef
    );
    s.mem.store(7u16, iova(0x10), Ordering::Release).unwrap();
    assert_eq!(s.mem.load::<u16>(iova(0x10), Ordering::Acquire).unwrap(), 7);
    // The same through the pinned form.
    let pinned = s.mem.pin();
    pinned.write_obj(0x55aa_u16, iova(B + 2)).unwrap();
    assert_eq!(ram.read_obj::<u16>(GuestAddress(A + 2)).unwrap(), 0x55aa);
    assert_eq!(pinned.read_obj::<u32>(iova(A + 8)).unwrap(), 0xdead_beef);
    assert!(pinned.physical_memory().is_none() && s.mem.physical_memory().is_none());
    assert_eq!(pinned.memory().device().id(), s.mem.device().id());
    assert!(format!("{pinned:?}").contains("PinnedDmaMemory"));
}

#[test]
fn a_request_across_discontiguous_targets_is_several_slices() {
    let s = setup();
    let ram = s.mem.backend();
    let data = [0x5au8; 64];
    // 32 bytes at the end of IOVA page A - 1 (GPA A - 32) and 32 at the start of page A (GPA B).
    s.mem.write_slice(&data, iova(A - 32)).unwrap();
    assert_eq!(
        slices(&s.mem, iova(A - 32), 64, Permissions::Read).unwrap(),
        vec![32, 32]
    );
    assert_eq!(
        slices(&s.mem.pin(), iova(A - 32), 64, Permissions::Write).unwrap(),
        vec![32, 32]
    );
    assert_eq!(
        ram.read_obj::<[u8; 32]>(GuestAddress(A - 32)).unwrap(),
        [0x5a; 32]
    );
    assert_eq!(
        ram.read_obj::<[u8; 32]>(GuestAddress(B)).unwrap(),
        [0x5a; 32]
    );
    assert_eq!(ram.read_obj::<u8>(GuestAddress(A)).unwrap(), 0);
    // Reading it back crosses the same boundary.
    let mut back = [0u8; 64];
    s.mem.read_slice(&mut back, iova(A - 32)).unwrap();
    assert_eq!(back, [0x5a; 64]);
    // A contiguous request across the backend's two regions: one chunk, two slices.
    assert_eq!(
        slices(&s.mem, iova(HALF - 16), 48, Permissions::ReadWrite).unwrap(),
        vec![16, 32]
    );
    s.mem.write_slice(&[3; 48], iova(HALF - 16)).unwrap();
    let mut back = [0u8; 48];
    ram.read_slice(&mut back, GuestAddress(HALF - 16)).unwrap();
    assert_eq!(back, [3; 48]);
}

#[test]
fn faults_are_vm_memorys_iommu_error_and_nothing_is_written() {
    let s = setup();
    let page = 0x5_0000;
    s.iommu.ioas_unmap(s.ioas, IOVA + page, PAGE).unwrap();
    // A write that starts in a mapped page and runs into the unmapped one: the whole request
    // is translated before a byte moves.
    for pinned in [false, true] {
        let err = if pinned {
            s.mem.pin().write_slice(&[0xff; 64], iova(page - 16))
        } else {
            s.mem.write_slice(&[0xff; 64], iova(page - 16))
        }
        .unwrap_err();
        assert_eq!(
            unresolved(err),
            IovaRange {
                base: iova(page),
                length: 48
            }
        );
    }
    let ram = s.mem.backend();
    assert_eq!(
        ram.read_obj::<[u8; 16]>(GuestAddress(page - 16)).unwrap(),
        [0; 16]
    );
    // Starting inside the hole; the reason is the fault's text.
    let err = s.mem.read_obj::<u64>(iova(page + 8)).unwrap_err();
    assert!(err.to_string().contains("nothing is mapped"), "{err}");
    assert_eq!(
        unresolved(err),
        IovaRange {
            base: iova(page + 8),
            length: 8
        }
    );
    // Past RAM's IOVAs.
    assert!(s.mem.read_obj::<u8>(iova(RAM)).is_err());
    assert!(!s.mem.check_range(iova(page - 8), 16, Permissions::No));
    assert!(s.mem.check_range(iova(page - 8), 8, Permissions::ReadWrite));
}

#[test]
fn permissions_are_checked_per_access() {
    let s = setup();
    let (ro, wo) = (0x6_0000, 0x7_0000);
    for (gpa, prot) in [(ro, Prot::READ), (wo, Prot::WRITE)] {
        s.iommu.ioas_unmap(s.ioas, IOVA + gpa, PAGE).unwrap();
        s.iommu
            .ioas_map(s.ioas, Some(IOVA + gpa), gpa, PAGE, prot)
            .unwrap();
    }
    use Permissions::*;
    for pinned in [false, true] {
        let p = s.mem.pin();
        let check = |gpa: u64, perm| {
            if pinned {
                p.check_range(iova(gpa), 64, perm)
            } else {
                s.mem.check_range(iova(gpa), 64, perm)
            }
        };
        assert!(check(ro, No) && check(ro, Read) && !check(ro, Write) && !check(ro, ReadWrite));
        assert!(check(wo, No) && !check(wo, Read) && check(wo, Write) && !check(wo, ReadWrite));
        assert!(check(0, No) && check(0, Read) && check(0, Write) && check(0, ReadWrite));
        assert!(!check(RAM, No));
    }
    assert!(s.mem.read_obj::<u8>(iova(ro)).is_ok());
    assert!(s.mem.read_obj::<u8>(iova(wo)).is_err());
    assert!(s.mem.write_obj(1u8, iova(wo)).is_ok());
    let err = s.mem.write_obj(1u8, iova(ro)).unwrap_err();
    assert!(err.to_string().contains("does not allow"), "{err}");
    assert_eq!(unresolved(err).base, iova(ro));
    let err = slices(&s.mem, iova(ro - 8), 16, ReadWrite).unwrap_err();
    assert_eq!(unresolved(err).base, iova(ro));
}

#[test]
fn a_blocked_device_faults_and_zero_bytes_touch_nothing() {
    let s = setup();
    s.iommu.device_detach(s.dev_id).unwrap();
    let err = s.mem.read_obj::<u32>(iova(0x100)).unwrap_err();
    assert!(err.to_string().contains("blocked"), "{err}");
    assert_eq!(unresolved(err).base, iova(0x100));
    assert!(s.mem.pin().read_obj::<u32>(iova(0x100)).is_err());
    assert!(!s.mem.check_range(iova(0x100), 1, Permissions::No));
    // Zero bytes: an empty iterator, even on the blocked domain and at any address.
    for at in [iova(0x100), GuestAddress(u64::MAX), GuestAddress(0)] {
        assert_eq!(
            slices(&s.mem, at, 0, Permissions::Write).unwrap(),
            [0usize; 0]
        );
        assert_eq!(
            slices(&s.mem.pin(), at, 0, Permissions::Read).unwrap(),
            [0usize; 0]
        );
        assert!(s.mem.check_range(at, 0, Permissions::ReadWrite));
    }
    s.mem.write_slice(&[], iova(0x100)).unwrap();
    s.mem.read_slice(&mut [], iova(0x100)).unwrap();
}

#[test]
fn ranges_at_the_top_of_the_address_space_fault_without_panicking() {
    let s = setup();
    let p = s.mem.pin();
    let top = u64::MAX - 7;
    // Ends exactly at 2^64: a fault naming the request.
    for len in [8usize, 1] {
        let at = GuestAddress(u64::MAX - (len as u64 - 1));
        let err = slices(&s.mem, at, len, Permissions::Read).unwrap_err();
        let range = unresolved(err);
        assert_eq!(range.base, at);
        assert_eq!(range.length, len);
        assert!(slices(&p, at, len, Permissions::Write).is_err());
        assert!(!s.mem.check_range(at, len, Permissions::No));
    }
    // Wraps past 2^64.
    for len in [16usize, usize::MAX] {
        let err = slices(&s.mem, GuestAddress(top), len, Permissions::Read).unwrap_err();
        assert_eq!(unresolved(err).base, GuestAddress(top));
        assert!(slices(&p, GuestAddress(top), len, Permissions::Read).is_err());
        assert!(!p.check_range(GuestAddress(top), len, Permissions::Read));
    }
    assert!(s.mem.read_obj::<u64>(GuestAddress(u64::MAX)).is_err());
    // A huge request from a mapped IOVA faults where the mapping ends.
    let err = slices(&s.mem, iova(0), usize::MAX, Permissions::Read).unwrap_err();
    assert!(matches!(err, GuestMemoryError::IommuError(_)), "{err:?}");
}

#[test]
fn writes_mark_the_backends_dirty_bitmap_at_the_target() {
    let s = setup_with::<AtomicBitmap>();
    let ram = s.mem.backend();
    let dirty = |gpa: u64| {
        let r = ram.find_region(GuestAddress(gpa)).unwrap();
        r.bitmap()
            .dirty_at((gpa - r.start_addr().raw_value()) as usize)
    };
    // A read marks nothing.
    let _: u64 = s.mem.read_obj(iova(A + 0x10)).unwrap();
    assert!(!dirty(A) && !dirty(B));
    // A write through IOVA page A lands in (and marks) GPA page B, not A.
    s.mem.write_obj(1u64, iova(A + 0x10)).unwrap();
    assert!(dirty(B) && !dirty(A));
    // The pinned form, across both backend regions (GPA HALF - 8 .. HALF + 8).
    s.mem.pin().write_slice(&[1; 16], iova(HALF - 8)).unwrap();
    assert!(dirty(HALF - 8) && dirty(HALF));
    assert!(!dirty(HALF + PAGE));
}

/// The driver's side of one chain: a 32-byte request whose buffer straddles IOVA pages A - 1
/// and A (discontiguous targets), and a 16-byte reply in page B; the queue programmed with
/// the rings' IOVAs.
fn post_chain<'a>(ram: &'a GuestMemoryMmap) -> (MockSplitQueue<'a, GuestMemoryMmap>, Queue) {
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;
    let mock = MockSplitQueue::new(ram, 16);
    let table = mock.desc_table();
    let req = Descriptor::new(IOVA + A - 16, 32, F_NEXT, 1);
    let rep = Descriptor::new(IOVA + B + 0x100, 16, F_WRITE, 0);
    table.store(0, RawDescriptor::from(req)).unwrap();
    table.store(1, RawDescriptor::from(rep)).unwrap();
    ram.write_slice(&[1; 16], GuestAddress(A - 16)).unwrap();
    ram.write_slice(&[2; 16], GuestAddress(B)).unwrap();
    let avail = mock.avail_addr();
    ram.write_obj(0u16, avail.unchecked_add(4)).unwrap();
    ram.store(1u16, avail.unchecked_add(2), Ordering::Release)
        .unwrap();
    let mut q = Queue::new(16).unwrap();
    q.set_size(16);
    q.set_ready(true);
    q.try_set_desc_table_address(GuestAddress(IOVA + mock.desc_table_addr().0))
        .unwrap();
    q.try_set_avail_ring_address(GuestAddress(IOVA + avail.0))
        .unwrap();
    q.try_set_used_ring_address(GuestAddress(IOVA + 0x1000))
        .unwrap();
    (mock, q)
}

/// The device's side: reads the request, writes its byte sum (twice, as 8-byte words).
fn serve(chain_mem: &PinnedDmaMemory<'_, GuestMemoryMmap>, q: &mut Queue) -> Option<[u8; 32]> {
    let chain = q.pop_descriptor_chain(chain_mem)?;
    let head = chain.head_index();
    let mut req = [0u8; 32];
    Reader::new(chain_mem, chain.clone())
        .unwrap()
        .read_exact(&mut req)
        .unwrap();
    let sum: u64 = req.iter().map(|&b| u64::from(b)).sum();
    let mut w = Writer::new(chain_mem, chain).unwrap();
    w.write_all(&sum.to_le_bytes()).unwrap();
    w.write_all(&sum.to_le_bytes()).unwrap();
    q.add_used(chain_mem, head, 16).unwrap();
    Some(req)
}

#[test]
fn virtio_queue_serves_a_chain_through_the_pinned_form() {
    let s = setup();
    let ram = s.mem.backend();
    let (_mock, mut q) = post_chain(ram);
    let chain_mem = s.mem.pin();
    let req = serve(&chain_mem, &mut q).unwrap();
    assert_eq!(&req[..16], &[1; 16]);
    assert_eq!(&req[16..], &[2; 16]);
    assert!(serve(&chain_mem, &mut q).is_none());
    drop(chain_mem);
    // IOVA B + 0x100 is GPA A + 0x100.
    assert_eq!(
        ram.read_obj::<[u64; 2]>(GuestAddress(A + 0x100)).unwrap(),
        [48; 2]
    );
    assert_eq!(q.next_used(), 1);
}

#[test]
fn an_unmap_waits_for_a_pinned_chain() {
    let s = setup();
    let ram = s.mem.backend();
    let (_mock, mut q) = post_chain(ram);
    let chain_mem = s.mem.pin();
    let chain = q.pop_descriptor_chain(&chain_mem).unwrap();
    // The Writer collects its slices now (translated, the iterators dropped)...
    let mut w = Writer::new(&chain_mem, chain).unwrap();
    // On this thread, an unmap would wait for our own guard: EDEADLK.
    let err = s.iommu.ioas_unmap(s.ioas, IOVA + B, PAGE).unwrap_err();
    assert_eq!(err.errno(), 35);

    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let unmapper = {
        let (iommu, ioas, done) = (s.iommu.clone(), s.ioas, done.clone());
        std::thread::spawn(move || {
            tx.send(()).unwrap();
            iommu.ioas_unmap(ioas, IOVA + B, PAGE).unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !done.load(Ordering::SeqCst),
        "the unmap returned under a pinned chain"
    );
    // ...and writes through them while the unmap waits: still the mapping's target.
    w.write_all(&[9; 16]).unwrap();
    drop(w);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !done.load(Ordering::SeqCst),
        "the unmap returned before the pinned memory was dropped"
    );
    drop(chain_mem);
    unmapper.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(
        ram.read_obj::<[u8; 16]>(GuestAddress(A + 0x100)).unwrap(),
        [9; 16]
    );
    let err = s.mem.write_obj(1u8, iova(B + 0x100)).unwrap_err();
    assert_eq!(unresolved(err).base, iova(B + 0x100));
}

#[test]
fn slices_kept_after_an_unpinned_iterator_are_not_fenced() {
    // As documented: the unpinned form fences only while its iterator lives.
    let s = setup();
    let page = 0xc_0000;
    let kept: Vec<_> = s
        .mem
        .get_slices(iova(page), 64, Permissions::Write)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    s.iommu.ioas_unmap(s.ioas, IOVA + page, PAGE).unwrap(); // returns: no guard is alive
    kept[0].write_slice(&[3; 8], 0).unwrap(); // the old target's memory
    assert!(s.mem.write_obj(1u8, iova(page)).is_err());
}

#[test]
fn the_hot_path_allocates_nothing() {
    let s = setup();
    let mut buf = [0u8; 512];
    let run = |buf: &mut [u8; 512], i: u64| {
        s.mem.read_slice(buf, iova(0x1000)).unwrap();
        s.mem
            .write_slice(buf, iova(0x2000 + (i % 8) * PAGE))
            .unwrap();
        s.mem.read_slice(buf, iova(A - 256)).unwrap(); // two chunks
        let p = s.mem.pin();
        p.read_slice(buf, iova(0x1000)).unwrap();
        p.write_slice(buf, iova(HALF - 256)).unwrap(); // two regions
        let _: u16 = p.load(iova(0x40), Ordering::Acquire).unwrap();
        assert!(p.check_range(iova(A - 256), 512, Permissions::ReadWrite));
        assert!(s.mem.check_range(iova(0x1000), 512, Permissions::Read));
    };
    // Warm up: the thread's first pin registers it.
    run(&mut buf, 0);
    let before = allocs();
    for i in 0..1000u64 {
        run(&mut buf, i);
    }
    assert_eq!(allocs() - before, 0, "allocations on the hot path");
    drop(std::hint::black_box(vec![0u8; 16]));
    assert_eq!(allocs() - before, 1);
}

#[test]
fn dma_memory_is_send_sync_clone_and_replaces_its_backend() {
    fn send_sync<T: Send + Sync + Clone>(_: &T) {}
    let s = setup();
    send_sync(&s.mem);
    let other = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let m2 = s.mem.with_replaced_backend(other);
    m2.write_obj(5u8, iova(0x10)).unwrap();
    assert_eq!(m2.backend().read_obj::<u8>(GuestAddress(0x10)).unwrap(), 5);
    assert_eq!(
        s.mem.backend().read_obj::<u8>(GuestAddress(0x10)).unwrap(),
        0
    );
    let (_, dev): (_, Device) = m2.into_parts();
    assert_eq!(dev.id(), s.mem.device().id());
    assert!(format!("{:?}", s.mem).contains("DmaMemory"));
}
