//! The baselines of `iommu-memory`: rust-vmm vm-memory 0.18's documented `RwLock<Iotlb>`
//! pattern as a `vm_memory::Iommu`, so that `IommuMemory` runs the same accesses over it as
//! over viommu's `DeviceIommu`. Moved from the criterion bench `benches/vm_memory.rs` (which
//! keeps its own copy), in its two uses:
//!
//! * [`SwapIommu`] (`swap`): a prefilled IOTLB, looked up under its read guard, that never
//!   misses. A domain switch builds the other domain's IOTLB (the same entries) outside the
//!   lock, swaps it in under the write lock (as a cloud-hypervisor-style switch replaces the
//!   device's mappings under its write lock) and drops the old one after unlocking: the
//!   pattern's cheapest switch; its readers wait only for the swap.
//! * [`RefillIommu`] (`refill`): the IOTLB as a cache in front of the domain, as vm-memory's
//!   own test IOMMU and the vhost-user IOTLB use it: a miss reads the active domain's mapping
//!   (a `BTreeMap`) and inserts it under the write lock, then looks up again. A switch empties
//!   the IOTLB under the write lock and makes the other domain active, so readers refill what
//!   they use after every switch. Idle it never misses after warm-up.
//!
//! Also the shapes' mappings and request streams, and the guest memory they point into.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use vm_memory::iommu::{Error as IommuError, IotlbIterator, IovaRange};
use vm_memory::{GuestAddress, GuestMemoryMmap, Iommu as VmIommu, Iotlb, Permissions};

/// 4 KiB.
pub const PAGE: u64 = 4096;
/// Pages of guest memory, and pages mapped by the `256_pages` shape.
pub const PAGES: u64 = 256;
/// Bytes of guest memory (1 MiB).
pub const RAM: u64 = PAGES * PAGE;
/// Where the mappings start.
pub const IOVA: u64 = 0x1000_0000;
/// Bytes of each access.
pub const LEN: usize = 512;

/// What the device's domain maps, and which IOVAs the accesses use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One mapping of the whole memory; every access at the same IOVA (512 bytes inside one
    /// page): one IOTLB entry for the baselines, a reused scratch entry for the adapter.
    Contiguous,
    /// 256 separately mapped pages with scattered targets, accessed in turn: 256 IOTLB
    /// entries for the baselines, a refilled scratch for the adapter.
    Pages256,
}

impl Shape {
    /// Both shapes, in report order.
    pub const ALL: [Shape; 2] = [Shape::Contiguous, Shape::Pages256];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Contiguous => "contiguous",
            Shape::Pages256 => "256_pages",
        }
    }

    /// The `(iova, target, len)` mappings of the shape.
    pub fn mappings(self) -> Vec<(u64, u64, u64)> {
        match self {
            Shape::Contiguous => vec![(IOVA, 0, RAM)],
            Shape::Pages256 => (0..PAGES)
                .map(|i| (IOVA + i * PAGE, scattered(i), PAGE))
                .collect(),
        }
    }

    /// The IOVA of request `k` of the shape's stream.
    #[inline]
    pub fn request(self, k: u64) -> GuestAddress {
        GuestAddress(
            IOVA + match self {
                Shape::Contiguous => 0x100,
                Shape::Pages256 => (k % PAGES) * PAGE + 0x100,
            },
        )
    }

    /// A prefilled IOTLB with the shape's mappings.
    pub fn iotlb(self) -> Iotlb {
        let mut t = Iotlb::new();
        for (iova, target, len) in self.mappings() {
            t.set_mapping(
                GuestAddress(iova),
                GuestAddress(target),
                len as usize,
                Permissions::ReadWrite,
            )
            .expect("IOTLB mapping");
        }
        t
    }
}

/// The target page of IOVA page `i` in the `256_pages` shape: scattered, so no two neighbours
/// are contiguous.
fn scattered(i: u64) -> u64 {
    ((i * 97) % PAGES) * PAGE
}

/// The guest memory every design accesses: `RAM` bytes at guest address 0, mmap-backed.
pub fn ram() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).expect("guest memory")
}

fn cannot_resolve(base: GuestAddress, length: usize, reason: &str) -> IommuError {
    IommuError::CannotResolve {
        iova_range: IovaRange { base, length },
        reason: reason.into(),
    }
}

/// `swap`: a prefilled `RwLock<Iotlb>`, looked up under a read guard (see the module docs).
#[derive(Debug)]
pub struct SwapIommu {
    iotlb: RwLock<Iotlb>,
    shape: Shape,
}

impl SwapIommu {
    /// The IOTLB prefilled with `shape`'s mappings.
    pub fn new(shape: Shape) -> SwapIommu {
        SwapIommu {
            iotlb: RwLock::new(shape.iotlb()),
            shape,
        }
    }

    /// The domain switch: the other domain's IOTLB built outside the lock, swapped in under
    /// the write lock, the old one dropped after unlocking.
    pub fn switch(&self) {
        let mut fresh = self.shape.iotlb();
        std::mem::swap(
            &mut *self.iotlb.write().expect("iotlb lock poisoned"),
            &mut fresh,
        );
        drop(fresh);
    }
}

impl VmIommu for SwapIommu {
    type IotlbGuard<'a> = RwLockReadGuard<'a, Iotlb>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, IommuError> {
        Iotlb::lookup(
            self.iotlb.read().expect("iotlb lock poisoned"),
            iova,
            length,
            access,
        )
        .map_err(|_| cannot_resolve(iova, length, "miss"))
    }
}

/// One domain's mappings: IOVA -> (target, len).
type Domain = BTreeMap<u64, (u64, u64)>;

/// `refill`: the `Iotlb` as a cache in front of the active domain (see the module docs).
#[derive(Debug)]
pub struct RefillIommu {
    iotlb: RwLock<Iotlb>,
    /// Two domains with the same mappings; `active` names the current one (changed under the
    /// IOTLB's write lock).
    domains: [Domain; 2],
    active: AtomicUsize,
}

impl RefillIommu {
    /// Two domains with `shape`'s mappings, domain 0 active, the IOTLB empty.
    pub fn new(shape: Shape) -> RefillIommu {
        let domain: Domain = shape
            .mappings()
            .into_iter()
            .map(|(iova, target, len)| (iova, (target, len)))
            .collect();
        RefillIommu {
            iotlb: RwLock::new(Iotlb::new()),
            domains: [domain.clone(), domain],
            active: AtomicUsize::new(0),
        }
    }

    /// The domain switch: the IOTLB emptied, the other domain active.
    pub fn switch(&self) {
        let mut iotlb = self.iotlb.write().expect("iotlb lock poisoned");
        iotlb.invalidate_all();
        // Relaxed: read and written under the IOTLB's write lock only.
        self.active.fetch_xor(1, Ordering::Relaxed);
    }
}

impl VmIommu for RefillIommu {
    type IotlbGuard<'a> = RwLockReadGuard<'a, Iotlb>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, IommuError> {
        loop {
            let tlb = self.iotlb.read().expect("iotlb lock poisoned");
            let fails = match Iotlb::lookup(tlb, iova, length, access) {
                Ok(hit) => return Ok(hit),
                Err(fails) => fails,
            };
            let Some(missed) = fails.misses.first() else {
                return Err(cannot_resolve(iova, length, "not mapped"));
            };
            let mut iotlb = self.iotlb.write().expect("iotlb lock poisoned");
            // The active domain, read under the write lock so a switch cannot slip between.
            let domain = &self.domains[self.active.load(Ordering::Relaxed)];
            let at = missed.base.0;
            let Some((&start, &(target, len))) = domain.range(..=at).next_back() else {
                return Err(cannot_resolve(missed.base, length, "not mapped"));
            };
            if at >= start + len {
                return Err(cannot_resolve(missed.base, length, "not mapped"));
            }
            iotlb
                .set_mapping(
                    GuestAddress(start),
                    GuestAddress(target),
                    len as usize,
                    Permissions::ReadWrite,
                )
                .map_err(|_| cannot_resolve(missed.base, length, "IOTLB insert failed"))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, IommuMemory};

    #[test]
    fn baselines_read_and_write_through_switches() {
        for shape in Shape::ALL {
            let swap = IommuMemory::new(ram(), SwapIommu::new(shape), true, ());
            let refill = IommuMemory::new(ram(), RefillIommu::new(shape), true, ());
            for k in [0, 1, 97, 255] {
                let at = shape.request(k);
                let data = [(k as u8).wrapping_add(1); LEN];
                let mut back = [0u8; LEN];
                swap.write_slice(&data, at).unwrap();
                swap.iommu().switch();
                swap.read_slice(&mut back, at).unwrap();
                assert_eq!(back, data, "swap {} {k}", shape.name());
                refill.write_slice(&data, at).unwrap();
                refill.iommu().switch();
                refill.read_slice(&mut back, at).unwrap();
                assert_eq!(back, data, "refill {} {k}", shape.name());
            }
        }
    }
}
