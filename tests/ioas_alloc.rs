//! Automatic IOVA allocation (`ioas_map(ioas, None, ..)`): the indexed allocator makes the
//! same choices as the straightforward one it replaced (sort every area and reservation, scan
//! for the first aligned gap), which is copied here as the reference, over random sequences of
//! fixed and automatic maps, unmaps, and devices with reserved ranges and narrow apertures
//! attaching and detaching.

mod common;

use common::{bind, narrow, reserving, PAGE};
use proptest::prelude::*;
use viommu::{DeviceInfo, Error, Iommu, ObjId, Prot};

const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

/// The IOAS as the test sees it: its areas, the attached devices' reservations and apertures.
#[derive(Default)]
struct Model {
    /// `(first, last)` of every area.
    areas: Vec<(u64, u64)>,
    /// `(first, last, device index)`, page-rounded as `device_bind` rounds them.
    reserved: Vec<(u64, u64, usize)>,
    /// `(device index, aperture last)` of the attached devices.
    attached: Vec<(usize, u64)>,
}

impl Model {
    fn limit(&self) -> u64 {
        self.attached
            .iter()
            .map(|&(_, l)| l)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The allocator before the index, as it was (`IoasState::alloc_iova`).
    fn reference_alloc(&self, target: u64, len: u64) -> Result<u64, Error> {
        let limit = self.limit();
        let mut align = PAGE;
        for size in [1u64 << 21, 1u64 << 30] {
            if target % size == 0 && len >= size {
                align = size;
            }
        }
        let mut obstacles: Vec<(u64, u64)> = self
            .areas
            .iter()
            .copied()
            .chain(self.reserved.iter().map(|&(f, l, _)| (f, l)))
            .collect();
        obstacles.sort_unstable();
        let mut cursor: u64 = 0;
        let fits = |start: u64| start.checked_add(len - 1).filter(|&l| l <= limit);
        for (first, last) in obstacles {
            if let Some(start) = align_up(cursor, align) {
                if let Some(end) = fits(start) {
                    if end < first {
                        return Ok(start);
                    }
                }
            }
            if last == u64::MAX {
                return Err(Error::NoSpace { len, align });
            }
            cursor = cursor.max(last + 1);
        }
        align_up(cursor, align)
            .filter(|&s| fits(s).is_some())
            .ok_or(Error::NoSpace { len, align })
    }

    /// The errno a fixed map of `first ..= last` should fail with, if any.
    fn fixed_error(&self, first: u64, last: u64) -> Option<i32> {
        let meets = |&(f, l): &(u64, u64)| f <= last && l >= first;
        if last > self.limit() {
            Some(libc_eoverflow())
        } else if self.reserved.iter().any(|&(f, l, _)| meets(&(f, l))) {
            Some(22)
        } else if self.areas.iter().any(meets) {
            Some(17)
        } else {
            None
        }
    }
}

fn libc_eoverflow() -> i32 {
    75
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    v.checked_add(align - 1).map(|x| x & !(align - 1))
}

/// A device: its aperture width and reserved ranges.
#[derive(Clone, Debug)]
struct Dev {
    iova_bits: u8,
    reserved: Vec<(u64, u64)>,
}

#[derive(Clone, Debug)]
enum Op {
    /// `pages` pages at page `at` (or at a 2 MiB / 1 GiB multiple with `at_big`).
    Fixed { at: u64, big: u8, pages: u64 },
    /// An automatic map: `kind` picks the target's alignment and the length.
    Auto { kind: u8, pages: u64 },
    /// Unmaps the `n`-th area (modulo the count), or everything when `all`.
    Unmap { n: usize, all: bool },
    /// Attaches device `d` if detached, else detaches it.
    Toggle { d: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..2048, 0u8..8, 1u64..6).prop_map(|(at, big, pages)| Op::Fixed { at, big, pages }),
        5 => (0u8..8, 1u64..40).prop_map(|(kind, pages)| Op::Auto { kind, pages }),
        3 => (any::<usize>(), prop::bool::weighted(0.05)).prop_map(|(n, all)| Op::Unmap { n, all }),
        3 => (0usize..3).prop_map(|d| Op::Toggle { d }),
    ]
}

fn dev() -> impl Strategy<Value = Dev> {
    // Low and often overlapping between devices: a detach must keep what the others reserve.
    let range = (0u64..256, 1u64..64).prop_map(|(p, n)| (p * PAGE, (p + n) * PAGE - 1));
    (
        prop_oneof![Just(23u8), Just(26), Just(31), Just(48)],
        prop::collection::vec(range, 0..4),
    )
        .prop_map(|(iova_bits, reserved)| Dev {
            iova_bits,
            reserved,
        })
}

fn run(devs: &[Dev], ops: &[Op]) -> Result<(), TestCaseError> {
    let iommu = Iommu::new();
    let ioas = iommu.ioas_alloc().unwrap();
    let ids: Vec<ObjId> = devs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut info = narrow(d.iova_bits);
            info.reserved = d.reserved.iter().map(|&(f, l)| f..l + 1).collect();
            bind(&iommu, i as u32 + 1, info).0
        })
        .collect();
    let mut m = Model::default();
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Fixed { at, big, pages } => {
                let iova = match big {
                    0 => at * MIB2,
                    1 => (at % 4) * GIB,
                    _ => at * PAGE,
                };
                let len = pages * PAGE;
                let got = iommu.ioas_map(ioas, Some(iova), 0x1_0000_0000, len, Prot::RW);
                let last = iova + len - 1;
                match m.fixed_error(iova, last) {
                    Some(errno) => prop_assert_eq!(
                        got.map_err(|e| e.errno()),
                        Err(errno),
                        "step {}: {:?}",
                        step,
                        op
                    ),
                    None => {
                        prop_assert_eq!(got, Ok(iova), "step {}: {:?}", step, op);
                        m.areas.push((iova, last));
                    }
                }
            }
            Op::Auto { kind, pages } => {
                let (target, len) = match kind {
                    0 => (MIB2, MIB2),                    // 2 MiB aligned
                    1 => (MIB2, 2 * MIB2 + pages * PAGE), // 2 MiB aligned, longer
                    2 => (GIB, GIB),                      // 1 GiB aligned
                    3 => (GIB, pages * PAGE),             // aligned target, short: 4 KiB
                    _ => (0x1000 + pages * PAGE, pages * PAGE),
                };
                let want = m.reference_alloc(target, len);
                let got = iommu.ioas_map(ioas, None, target, len, Prot::READ);
                prop_assert_eq!(&got, &want, "step {}: {:?}", step, op);
                if let Ok(iova) = got {
                    m.areas.push((iova, iova + len - 1));
                }
            }
            Op::Unmap { n, all } => {
                if all {
                    let bytes: u64 = m.areas.iter().map(|&(f, l)| l - f + 1).sum();
                    prop_assert_eq!(iommu.ioas_unmap(ioas, 0, u64::MAX), Ok(bytes));
                    m.areas.clear();
                } else if !m.areas.is_empty() {
                    let (f, l) = m.areas.swap_remove(n % m.areas.len());
                    prop_assert_eq!(iommu.ioas_unmap(ioas, f, l - f + 1), Ok(l - f + 1));
                }
            }
            Op::Toggle { d } => {
                let Some(dev) = devs.get(d) else { continue };
                if let Some(i) = m.attached.iter().position(|&(x, _)| x == d) {
                    prop_assert_eq!(iommu.device_detach(ids[d]), Ok(()));
                    m.attached.swap_remove(i);
                    m.reserved.retain(|&(_, _, x)| x != d);
                } else {
                    let aperture = if dev.iova_bits == 64 {
                        u64::MAX
                    } else {
                        (1u64 << dev.iova_bits) - 1
                    };
                    let outside = m.areas.iter().any(|&(_, l)| l > aperture);
                    let collides = dev
                        .reserved
                        .iter()
                        .any(|&(f, l)| m.areas.iter().any(|&(af, al)| af <= l && al >= f));
                    let got = iommu.device_attach(ids[d], ioas);
                    prop_assert_eq!(
                        got.is_ok(),
                        !outside && !collides,
                        "step {}: attach {:?}: {:?}",
                        step,
                        dev,
                        got
                    );
                    if got.is_ok() {
                        m.attached.push((d, aperture));
                        m.reserved
                            .extend(dev.reserved.iter().map(|&(f, l)| (f, l, d)));
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn automatic_iovas_match_the_sort_and_scan_reference(
        devs in prop::collection::vec(dev(), 0..=3),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(&devs, &ops)?;
    }
}

/// Many small holes before the first one that fits (the case the index exists for): an
/// automatic map skips 2 000 one-page holes and lands in the first gap that is big and
/// aligned enough; freeing an area in the middle makes its hole the answer.
#[test]
fn the_lowest_fitting_hole_wins_among_many() {
    let iommu = Iommu::new();
    let ioas = iommu.ioas_alloc().unwrap();
    for i in 0..2000u64 {
        let iova = i * 2 * PAGE;
        assert_eq!(
            iommu.ioas_map(ioas, Some(iova), 0x1000, PAGE, Prot::RW),
            Ok(iova)
        );
    }
    let end = 4000 * PAGE;
    // Two pages: nothing below the last area fits.
    assert_eq!(
        iommu.ioas_map(ioas, None, 0x1000, 2 * PAGE, Prot::RW),
        Ok(end - PAGE)
    );
    // A 2 MiB-aligned 2 MiB map goes to the next 2 MiB boundary above everything.
    let at = iommu.ioas_map(ioas, None, MIB2, MIB2, Prot::RW).unwrap();
    assert_eq!(at, (end + PAGE).div_ceil(MIB2) * MIB2);
    // Unmapping areas 10 and 11 opens a hole of three pages at page 19.
    assert_eq!(iommu.ioas_unmap(ioas, 20 * PAGE, PAGE), Ok(PAGE));
    assert_eq!(iommu.ioas_unmap(ioas, 22 * PAGE, PAGE), Ok(PAGE));
    assert_eq!(
        iommu.ioas_map(ioas, None, 0x1000, 3 * PAGE, Prot::RW),
        Ok(19 * PAGE)
    );
    // One page still goes to the lowest one-page hole.
    assert_eq!(iommu.ioas_map(ioas, None, 0x1000, PAGE, Prot::RW), Ok(PAGE));
}

/// `ENOSPC` when nothing fits below the aperture of an attached device, and the space comes
/// back when that device detaches.
#[test]
fn no_space_below_a_narrow_aperture_until_it_leaves() {
    let iommu = Iommu::new();
    let ioas = iommu.ioas_alloc().unwrap();
    let (dev, _) = bind(
        &iommu,
        1,
        DeviceInfo {
            iova_bits: 22,
            ..reserving(0..PAGE)
        },
    );
    iommu.device_attach(dev, ioas).unwrap();
    // 4 MiB less the reserved first page: a 4 MiB map does not fit; 4 MiB - 4 KiB does.
    let err = iommu
        .ioas_map(ioas, None, 0x1000, 4 << 20, Prot::RW)
        .unwrap_err();
    assert_eq!(err.errno(), 28, "{err:?}");
    assert_eq!(
        iommu.ioas_map(ioas, None, 0x1000, (4 << 20) - PAGE, Prot::RW),
        Ok(PAGE)
    );
    let err = iommu
        .ioas_map(ioas, None, 0x1000, PAGE, Prot::RW)
        .unwrap_err();
    assert_eq!(err.errno(), 28, "{err:?}");
    iommu.device_detach(dev).unwrap();
    // Aperture and reservation gone: the first free page is 0, then above the area.
    assert_eq!(iommu.ioas_map(ioas, None, 0x1000, PAGE, Prot::RW), Ok(0));
    assert_eq!(
        iommu.ioas_map(ioas, None, 0x1000, PAGE, Prot::RW),
        Ok(4 << 20)
    );
}
