//! `viommu::vm_memory::DeviceIommu` under vm-memory's `IommuMemory`: reads and writes through
//! IOVAs, faults as vm-memory's IOMMU error, permissions, bypass, what the unmap fence covers,
//! the scratch IOTLB's reuse, and no allocation on the hot path.
#![cfg(feature = "vm-memory")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use viommu::vm_memory::{accesses, DeviceIommu, DeviceMemory};
use viommu::{Access, Device, DeviceInfo, GroupId, HwptFlags, Iommu, ObjId, Prot};
use vm_memory::iommu::{Error as IommuError, IovaRange};
use vm_memory::{
    Bytes, GuestAddress, GuestMemory, GuestMemoryError, GuestMemoryMmap, Iommu as _, IommuMemory,
    Permissions,
};

/// Counts this thread's allocations, for the no-allocation test.
#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::thread_allocs as allocs;

const PAGE: u64 = 4096;
/// Guest RAM: 1 MiB at GPA 0.
const RAM: usize = 0x10_0000;
/// IOVA of GPA 0 in the first domain.
const IOVA: u64 = 0x4000_0000;

struct Setup {
    iommu: Iommu,
    dev_id: ObjId,
    dev: Device,
    ioas: ObjId,
    mem: DeviceMemory<GuestMemoryMmap>,
}

/// A device attached to an IOAS that maps `IOVA ..` to all of RAM, one area per page (so single
/// pages can be unmapped) except the first 64 KiB, which is one area.
fn setup() -> Setup {
    let iommu = Iommu::new();
    let (dev_id, dev) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    iommu
        .ioas_map(ioas, Some(IOVA), 0, 0x1_0000, Prot::RW)
        .unwrap();
    for off in (0x1_0000..RAM as u64).step_by(PAGE as usize) {
        iommu
            .ioas_map(ioas, Some(IOVA + off), off, PAGE, Prot::RW)
            .unwrap();
    }
    iommu.device_attach(dev_id, ioas).unwrap();
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let mem = IommuMemory::new(ram, DeviceIommu::new(dev.clone()), true, ());
    Setup {
        iommu,
        dev_id,
        dev,
        ioas,
        mem,
    }
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

#[test]
fn reads_and_writes_go_through_the_iova() {
    let s = setup();
    let data: Vec<u8> = (0..=255).collect();
    s.mem.write_slice(&data, iova(0x2345)).unwrap();
    let mut back = [0u8; 256];
    s.mem
        .get_backend()
        .read_slice(&mut back, GuestAddress(0x2345))
        .unwrap();
    assert_eq!(&back[..], &data[..]);
    let mut through = [0u8; 256];
    s.mem.read_slice(&mut through, iova(0x2345)).unwrap();
    assert_eq!(through, back);
    s.mem.write_obj(0xdead_beef_u32, iova(0x8)).unwrap();
    assert_eq!(s.mem.read_obj::<u32>(iova(0x8)).unwrap(), 0xdead_beef);
    s.mem
        .store(7u16, iova(0x10), std::sync::atomic::Ordering::Release)
        .unwrap();
    let v: u16 = s
        .mem
        .load(iova(0x10), std::sync::atomic::Ordering::Acquire)
        .unwrap();
    assert_eq!(v, 7);
}

#[test]
fn a_request_across_discontiguous_pages_is_several_slices() {
    let s = setup();
    // Swap two pages' targets: IOVA page 0x20 -> GPA page 0x30 and the other way.
    let a = 0x2_0000;
    let b = 0x3_0000;
    s.iommu.ioas_unmap(s.ioas, IOVA + a, PAGE).unwrap();
    s.iommu
        .ioas_map(s.ioas, Some(IOVA + a), b, PAGE, Prot::RW)
        .unwrap();
    let data = [0x5au8; 64];
    // 32 bytes at the end of IOVA page a - 1 (GPA a - 32) and 32 at the start of page a (GPA b).
    s.mem.write_slice(&data, iova(a - 32)).unwrap();
    let slices: Vec<_> = s
        .mem
        .get_slices(iova(a - 32), 64, Permissions::Read)
        .unwrap()
        .map(|sl| sl.unwrap().len())
        .collect();
    assert_eq!(slices, vec![32, 32]);
    let ram = s.mem.get_backend();
    assert_eq!(
        ram.read_obj::<[u8; 32]>(GuestAddress(a - 32)).unwrap(),
        [0x5a; 32]
    );
    assert_eq!(
        ram.read_obj::<[u8; 32]>(GuestAddress(b)).unwrap(),
        [0x5a; 32]
    );
    assert_eq!(ram.read_obj::<u8>(GuestAddress(a)).unwrap(), 0);
}

#[test]
fn a_fault_is_vm_memorys_iommu_error_with_the_iova_and_nothing_is_written() {
    let s = setup();
    let page = 0x5_0000;
    s.iommu.ioas_unmap(s.ioas, IOVA + page, PAGE).unwrap();
    // A write that starts in a mapped page and runs into the unmapped one.
    let err = s.mem.write_slice(&[0xff; 64], iova(page - 16)).unwrap_err();
    assert_eq!(
        unresolved(err),
        IovaRange {
            base: iova(page),
            length: 48
        }
    );
    // vm-memory translates the whole request first: not even the mapped part was written.
    assert_eq!(
        s.mem
            .get_backend()
            .read_obj::<[u8; 16]>(GuestAddress(page - 16))
            .unwrap(),
        [0; 16]
    );
    // Starting inside the hole: the range starts at the request.
    let err = s.mem.read_obj::<u64>(iova(page + 8)).unwrap_err();
    assert_eq!(
        unresolved(err),
        IovaRange {
            base: iova(page + 8),
            length: 8
        }
    );
    // The reason is the fault's text.
    let err = s.mem.read_obj::<u64>(iova(page + 8)).unwrap_err();
    assert!(err.to_string().contains("nothing is mapped"), "{err}");
    // Past RAM's IOVAs: nothing mapped either.
    assert!(s.mem.read_obj::<u8>(iova(RAM as u64)).is_err());
    // A range whose end leaves the 64-bit space.
    let err = s
        .mem
        .iommu()
        .translate(GuestAddress(u64::MAX - 8), 16, Permissions::Read)
        .unwrap_err();
    assert!(matches!(err, IommuError::CannotResolve { .. }), "{err:?}");
}

#[test]
fn permissions_map_both_ways() {
    let s = setup();
    let ro = 0x6_0000;
    let wo = 0x7_0000;
    s.iommu.ioas_unmap(s.ioas, IOVA + ro, PAGE).unwrap();
    s.iommu.ioas_unmap(s.ioas, IOVA + wo, PAGE).unwrap();
    s.iommu
        .ioas_map(s.ioas, Some(IOVA + ro), ro, PAGE, Prot::READ)
        .unwrap();
    s.iommu
        .ioas_map(s.ioas, Some(IOVA + wo), wo, PAGE, Prot::WRITE)
        .unwrap();
    let m = &s.mem;
    let check = |gpa: u64, p| m.check_range(iova(gpa), 64, p);
    use Permissions::*;
    assert!(check(ro, No) && check(ro, Read) && !check(ro, Write) && !check(ro, ReadWrite));
    assert!(check(wo, No) && !check(wo, Read) && check(wo, Write) && !check(wo, ReadWrite));
    assert!(check(0, No) && check(0, Read) && check(0, Write) && check(0, ReadWrite));
    assert!(!check(0xf_f000 + PAGE, No)); // past RAM's IOVAs
    assert!(m.write_obj(1u8, iova(ro)).is_err());
    assert!(m.read_obj::<u8>(iova(ro)).is_ok());
    assert!(m.read_obj::<u8>(iova(wo)).is_err());
    assert!(m.write_obj(1u8, iova(wo)).is_ok());
    let err = m.write_obj(1u8, iova(ro)).unwrap_err();
    assert!(err.to_string().contains("does not allow"), "{err}");

    assert_eq!(Permissions::from(Access::Read), Read);
    assert_eq!(Permissions::from(Access::Write), Write);
    assert_eq!(Permissions::from(Prot::READ), Read);
    assert_eq!(Permissions::from(Prot::WRITE), Write);
    assert_eq!(Permissions::from(Prot::RW), ReadWrite);
    assert_eq!(Prot::try_from(Read).unwrap(), Prot::READ);
    assert_eq!(Prot::try_from(Write).unwrap(), Prot::WRITE);
    assert_eq!(Prot::try_from(ReadWrite).unwrap(), Prot::RW);
    assert_eq!(Prot::try_from(No).unwrap_err().errno(), 22);
    assert_eq!(accesses(No), &[] as &[Access]);
    assert_eq!(accesses(ReadWrite), &[Access::Read, Access::Write]);
    for p in [Read, Write, ReadWrite] {
        let prot = Prot::try_from(p).unwrap();
        assert_eq!(Permissions::from(prot), p);
        assert!(accesses(p).iter().all(|&a| prot.allows(a)));
    }
}

#[test]
fn a_blocked_device_faults_and_bypass_ignores_the_iommu() {
    let s = setup();
    s.iommu.device_detach(s.dev_id).unwrap();
    let err = s.mem.read_obj::<u32>(iova(0x100)).unwrap_err();
    assert_eq!(unresolved(err).base, iova(0x100));
    assert!(s
        .mem
        .read_obj::<u32>(iova(0x100))
        .unwrap_err()
        .to_string()
        .contains("blocked"));
    // Zero bytes: vm-memory's empty iterator, even on the blocked domain.
    assert_eq!(
        s.mem
            .get_slices(iova(0x100), 0, Permissions::Read)
            .unwrap()
            .count(),
        0
    );
    // Bypass: addresses are the backend's, the IOMMU is not asked.
    let mut mem = s.mem.clone();
    mem.set_iommu_enabled(false);
    assert!(mem.physical_memory().is_some());
    mem.write_obj(0x77u8, GuestAddress(0x100)).unwrap();
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x100)).unwrap(), 0x77);
    assert!(mem.read_obj::<u8>(iova(0x100)).is_err()); // an IOVA is no GPA
}

#[test]
fn a_remap_of_the_same_iova_is_seen_at_once() {
    // The scratch IOTLB keeps its entry between accesses; it must never serve a stale one.
    let s = setup();
    let page = 0x9_0000;
    let other = 0xa_0000;
    s.mem.write_obj(1u64, iova(page)).unwrap();
    s.mem.write_obj(2u64, iova(page + 8)).unwrap(); // same page: the entry is reused
    s.iommu.ioas_unmap(s.ioas, IOVA + page, PAGE).unwrap();
    assert!(s.mem.read_obj::<u64>(iova(page)).is_err());
    s.iommu
        .ioas_map(s.ioas, Some(IOVA + page), other, PAGE, Prot::RW)
        .unwrap();
    s.mem.write_obj(3u64, iova(page)).unwrap();
    let ram = s.mem.get_backend();
    assert_eq!(ram.read_obj::<u64>(GuestAddress(page)).unwrap(), 1);
    assert_eq!(ram.read_obj::<u64>(GuestAddress(other)).unwrap(), 3);

    // And across a replace to a domain with another offset.
    let ioas2 = s.iommu.ioas_alloc().unwrap();
    s.iommu
        .ioas_map(ioas2, Some(IOVA), 0x8_0000, 0x8_0000, Prot::RW)
        .unwrap();
    let hwpt2 = s
        .iommu
        .hwpt_alloc(s.dev_id, ioas2, HwptFlags::empty())
        .unwrap();
    s.mem.write_obj(4u64, iova(0x100)).unwrap();
    s.iommu.device_replace(s.dev_id, hwpt2).unwrap();
    s.mem.write_obj(5u64, iova(0x100)).unwrap();
    assert_eq!(ram.read_obj::<u64>(GuestAddress(0x100)).unwrap(), 4);
    assert_eq!(ram.read_obj::<u64>(GuestAddress(0x8_0100)).unwrap(), 5);
}

#[test]
fn guards_nest() {
    let s = setup();
    s.mem.write_slice(&[1; 32], iova(0x3000)).unwrap();
    let outer = s
        .mem
        .get_slices(iova(0x3000), 32, Permissions::Read)
        .unwrap();
    let inner = s
        .mem
        .get_slices(iova(0xc000), 32, Permissions::Write)
        .unwrap();
    let third = s
        .mem
        .get_slices(iova(0x3010), 8, Permissions::Read)
        .unwrap();
    for sl in inner {
        sl.unwrap().write_slice(&[2; 32], 0).unwrap();
    }
    let got: Vec<usize> = outer.chain(third).map(|sl| sl.unwrap().len()).collect();
    assert_eq!(got, vec![32, 8]);
    assert_eq!(s.mem.read_obj::<[u8; 32]>(iova(0xc000)).unwrap(), [2; 32]);
}

#[test]
fn the_unmap_fence_waits_for_a_held_iterator() {
    let s = setup();
    let page = 0xb_0000;
    let mut slices = s
        .mem
        .get_slices(iova(page), 64, Permissions::Write)
        .unwrap();
    // On this thread, the fence would wait for our own guard: EDEADLK.
    let err = s.iommu.ioas_unmap(s.ioas, IOVA + page, PAGE).unwrap_err();
    assert_eq!(err.errno(), 35);

    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let unmapper = {
        let iommu = s.iommu.clone();
        let ioas = s.ioas;
        let done = done.clone();
        std::thread::spawn(move || {
            tx.send(()).unwrap();
            iommu.ioas_unmap(ioas, IOVA + page, PAGE).unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !done.load(Ordering::SeqCst),
        "the unmap returned under a live guard"
    );
    // The access the guard covers still lands in the old target.
    slices
        .next()
        .unwrap()
        .unwrap()
        .write_slice(&[9; 64], 0)
        .unwrap();
    assert!(slices.next().is_none());
    drop(slices);
    unmapper.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(
        s.mem
            .get_backend()
            .read_obj::<[u8; 8]>(GuestAddress(page))
            .unwrap(),
        [9; 8]
    );
    assert!(s.mem.write_obj(1u8, iova(page)).is_err());
}

#[test]
fn slices_kept_after_the_iterator_are_not_fenced() {
    // As documented: virtio-queue's Reader/Writer keep slices after dropping the iterator, so
    // an unmap does not wait for them.
    let s = setup();
    let page = 0xc_0000;
    let kept: Vec<_> = s
        .mem
        .get_slices(iova(page), 64, Permissions::Write)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    s.iommu.ioas_unmap(s.ioas, IOVA + page, PAGE).unwrap(); // returns: no guard is alive
    kept[0].write_slice(&[3; 8], 0).unwrap(); // still the old target's memory
    assert!(s.mem.write_obj(1u8, iova(page)).is_err());
}

#[test]
fn the_hot_path_allocates_nothing() {
    let s = setup();
    let mut buf = [0u8; 512];
    // Warm up: the thread's first pin registers it; the scratch's tree gets its node.
    for _ in 0..2 {
        s.mem.read_slice(&mut buf, iova(0x1000)).unwrap();
        s.mem.write_slice(&buf, iova(0xe000)).unwrap();
        s.mem.read_slice(&mut buf, iova(0xfff0 - 512)).unwrap();
        // Across the first area's end: two slices (chunks are maximal across areas).
        s.mem.read_slice(&mut buf, iova(0xff00)).unwrap();
    }
    let before = allocs();
    for i in 0..1000u64 {
        // Same page (the entry is reused), another page (refilled), a write, two pages.
        s.mem.read_slice(&mut buf, iova(0x1000)).unwrap();
        s.mem
            .read_slice(&mut buf, iova(0x2000 + (i % 8) * PAGE))
            .unwrap();
        s.mem.write_slice(&buf, iova(0xe000)).unwrap();
        s.mem.read_slice(&mut buf, iova(0xff00)).unwrap();
        let _: u16 = s
            .mem
            .load(iova(0x40), std::sync::atomic::Ordering::Acquire)
            .unwrap();
        assert!(s.mem.check_range(iova(0x1000), 512, Permissions::Read));
    }
    assert_eq!(allocs() - before, 0, "allocations on the hot path");
    // The counter does count this thread's allocations.
    drop(std::hint::black_box(vec![0u8; 16]));
    assert_eq!(allocs() - before, 1);
}

#[test]
fn translate_is_vm_memorys_iterator() {
    let s = setup();
    let iommu: &DeviceIommu = s.mem.iommu();
    assert_eq!(iommu.device().id(), s.dev.id());
    let ranges: Vec<_> = iommu
        .translate(iova(0x1ff0), 0x20, Permissions::ReadWrite)
        .unwrap()
        .map(|r| (r.base, r.length))
        .collect();
    assert_eq!(ranges, vec![(GuestAddress(0x1ff0), 0x20)]);
    let ranges: Vec<_> = iommu
        .translate(iova(0xfff0), 0x20, Permissions::Read)
        .unwrap()
        .map(|r| (r.base, r.length))
        .collect();
    // Contiguous targets across two areas: one range.
    assert_eq!(ranges, vec![(GuestAddress(0xfff0), 0x20)]);
    let guard_debug = format!(
        "{:?}",
        iommu.translate(iova(0), 8, Permissions::Read).unwrap()
    );
    assert!(guard_debug.contains("DeviceIotlb"), "{guard_debug}");
}
