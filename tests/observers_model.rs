//! `IoasMirror` against a model (G15): a random run of maps (some overlapping or misaligned,
//! so they fail), unmaps (some splitting an area or finding nothing, so they fail), maps a
//! mirror refuses, and a second mirror added (replayed) and removed midway. After every step:
//!
//! * the call succeeded or failed as the reference model of the successful calls predicts,
//!   and an unmap returned the bytes the model removes;
//! * every registered mirror's own map of areas, built only from the calls it got, equals the
//!   reference: a failed map left no trace in any mirror (the mirrors told before a refusing
//!   one were told to take it back), and a replay plus the later calls rebuild the IOAS;
//! * the IOAS itself equals the reference, read page by page through an attached device.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use viommu::{
    errno, Access, DeviceInfo, Error, GroupId, IoasMirror, Iommu, MirrorError, ObjId, Prot,
};

const PAGE: u64 = 0x1000;
/// The IOVA window the steps use: `SLOTS` pages from `BASE`.
const BASE: u64 = 0x10_0000;
const SLOTS: u64 = 24;

/// An area: target, length, permissions; keyed by its first IOVA.
type Areas = BTreeMap<u64, (u64, u64, Prot)>;

/// A mirror that keeps its own copy of the IOAS from the calls it gets, and refuses the next
/// map with an errno when told to.
#[derive(Default)]
struct ModelMirror {
    areas: Mutex<Areas>,
    refuse_next: Mutex<Option<i32>>,
}

impl IoasMirror for ModelMirror {
    fn map(&self, iova: u64, target: u64, len: u64, prot: Prot) -> Result<(), MirrorError> {
        if let Some(errno) = self.refuse_next.lock().unwrap().take() {
            return Err(MirrorError { errno });
        }
        let mut areas = self.areas.lock().unwrap();
        // The mirror never hears of an area that overlaps one it holds.
        let last = iova + (len - 1);
        assert!(
            areas
                .range(..=last)
                .next_back()
                .is_none_or(|(&s, &(_, l, _))| s + l <= iova),
            "told to map {iova:#x}+{len:#x} over an area it holds"
        );
        areas.insert(iova, (target, len, prot));
        Ok(())
    }

    fn unmap(&self, iova: u64, len: u64) {
        let removed = self.areas.lock().unwrap().remove(&iova);
        assert_eq!(
            removed.map(|a| a.1),
            Some(len),
            "told to unmap {iova:#x}+{len:#x}, which it does not hold as one area"
        );
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// Map `pages` pages at slot `slot` (half a page off when `misaligned`); with
    /// `refused_by`, that mirror (0 or 1; skipped if not registered) refuses it with `errno`.
    Map {
        slot: u64,
        pages: u64,
        target_page: u64,
        prot: u8,
        misaligned: bool,
        refused_by: Option<(usize, i32)>,
    },
    /// Unmap `pages` pages at slot `slot`.
    Unmap { slot: u64, pages: u64 },
    /// Unmap everything.
    UnmapAll,
    /// Add the second mirror (replayed), or remove it if registered.
    ToggleSecond,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (
            0..SLOTS,
            1..=4u64,
            0..1u64 << 20,
            1..=3u8,
            prop::bool::weighted(0.1),
            prop::option::weighted(0.15, (0..2usize, 1..=134i32)),
        )
            .prop_map(|(slot, pages, target_page, prot, misaligned, refused_by)| Step::Map {
                slot,
                pages,
                target_page,
                prot,
                misaligned,
                refused_by,
            }),
        4 => (0..SLOTS, 1..=6u64).prop_map(|(slot, pages)| Step::Unmap { slot, pages }),
        1 => Just(Step::UnmapAll),
        1 => Just(Step::ToggleSecond),
    ]
}

fn prot_of(bits: u8) -> Prot {
    match bits {
        1 => Prot::READ,
        2 => Prot::WRITE,
        _ => Prot::RW,
    }
}

/// The areas of `model` that `first ..= last` overlaps.
fn overlapping(model: &Areas, first: u64, last: u64) -> Vec<(u64, u64)> {
    let from = model
        .range(..=first)
        .next_back()
        .filter(|(&s, &(_, l, _))| s + l > first)
        .map_or(first, |(&s, _)| s);
    model
        .range(from..=last)
        .map(|(&s, &(_, l, _))| (s, l))
        .collect()
}

/// The IOAS as `dev` sees it, page by page, must be `model`.
fn check_ioas(dev: &viommu::Device, model: &Areas) {
    for p in 0..SLOTS + 8 {
        let iova = BASE + p * PAGE;
        let want = model
            .range(..=iova)
            .next_back()
            .filter(|(&s, &(_, l, _))| iova < s + l)
            .map(|(&s, &(t, _, prot))| (t + (iova - s), prot));
        for access in [Access::Read, Access::Write] {
            let got = dev.translate_chunk(iova, PAGE, access).ok();
            match want {
                Some((target, prot)) if prot.allows(access) => {
                    let c = got.unwrap_or_else(|| panic!("{iova:#x} {access:?} faulted"));
                    assert_eq!((c.iova, c.target, c.len), (iova, target, PAGE));
                }
                _ => assert!(got.is_none(), "{iova:#x} {access:?} translated: {got:?}"),
            }
        }
    }
}

struct World {
    iommu: Iommu,
    ioas: ObjId,
    dev: viommu::Device,
    first: Arc<ModelMirror>,
    /// The second mirror and its ID while registered.
    second: Option<(Arc<ModelMirror>, viommu::ObserverId)>,
    model: Areas,
}

impl World {
    fn new() -> World {
        let iommu = Iommu::new();
        let ioas = iommu.ioas_alloc().unwrap();
        let (dev_id, dev) = iommu
            .device_bind(GroupId(1), DeviceInfo::default())
            .unwrap();
        iommu.device_attach(dev_id, ioas).unwrap();
        let first = Arc::new(ModelMirror::default());
        iommu.ioas_add_mirror(ioas, first.clone()).unwrap();
        World {
            iommu,
            ioas,
            dev,
            first,
            second: None,
            model: Areas::new(),
        }
    }

    fn mirror(&self, which: usize) -> Option<&Arc<ModelMirror>> {
        match which {
            0 => Some(&self.first),
            _ => self.second.as_ref().map(|(m, _)| m),
        }
    }

    fn run(&mut self, step: &Step) {
        match *step {
            Step::Map {
                slot,
                pages,
                target_page,
                prot,
                misaligned,
                refused_by,
            } => {
                let iova = BASE + slot * PAGE + if misaligned { PAGE / 2 } else { 0 };
                let len = pages * PAGE;
                let target = target_page * PAGE;
                let prot = prot_of(prot);
                let refusal = refused_by.and_then(|(which, errno)| {
                    let m = self.mirror(which)?;
                    *m.refuse_next.lock().unwrap() = Some(errno);
                    Some(errno)
                });
                let got = self
                    .iommu
                    .ioas_map(self.ioas, Some(iova), target, len, prot);
                // A refusal that a failed check pre-empted is not consumed: clear it.
                for which in 0..2 {
                    if let Some(m) = self.mirror(which) {
                        m.refuse_next.lock().unwrap().take();
                    }
                }
                if misaligned {
                    assert_eq!(got.unwrap_err().errno(), errno::EINVAL);
                } else if !overlapping(&self.model, iova, iova + len - 1).is_empty() {
                    assert_eq!(got.unwrap_err().errno(), errno::EEXIST);
                } else if let Some(errno) = refusal {
                    let e = got.unwrap_err();
                    assert_eq!(e.errno(), errno);
                    assert!(matches!(e, Error::MirrorRefused { .. }), "{e:?}");
                } else {
                    assert_eq!(got.unwrap(), iova);
                    self.model.insert(iova, (target, len, prot));
                }
            }
            Step::Unmap { slot, pages } => {
                let (iova, len) = (BASE + slot * PAGE, pages * PAGE);
                let last = iova + len - 1;
                let hit = overlapping(&self.model, iova, last);
                let got = self.iommu.ioas_unmap(self.ioas, iova, len);
                if hit.is_empty() {
                    assert_eq!(got.unwrap_err().errno(), errno::ENOENT);
                } else if hit.iter().any(|&(s, l)| s < iova || s + l - 1 > last) {
                    assert!(got.is_err(), "an unmap that splits an area succeeded");
                } else {
                    let bytes: u64 = hit.iter().map(|&(_, l)| l).sum();
                    assert_eq!(got.unwrap(), bytes);
                    for (s, _) in hit {
                        self.model.remove(&s);
                    }
                }
            }
            Step::UnmapAll => {
                let bytes: u64 = self.model.values().map(|&(_, l, _)| l).sum();
                assert_eq!(
                    self.iommu.ioas_unmap(self.ioas, 0, u64::MAX).unwrap(),
                    bytes
                );
                self.model.clear();
            }
            Step::ToggleSecond => match self.second.take() {
                Some((_, id)) => self.iommu.remove_observer(id).unwrap(),
                None => {
                    let m = Arc::new(ModelMirror::default());
                    let id = self.iommu.ioas_add_mirror(self.ioas, m.clone()).unwrap();
                    self.second = Some((m, id));
                }
            },
        }
    }

    fn check(&self) {
        assert_eq!(
            *self.first.areas.lock().unwrap(),
            self.model,
            "first mirror"
        );
        if let Some((m, _)) = &self.second {
            assert_eq!(*m.areas.lock().unwrap(), self.model, "second mirror");
        }
        check_ioas(&self.dev, &self.model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_mirror_holds_the_ioas_after_every_step(
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let mut w = World::new();
        for s in &steps {
            w.run(s);
            w.check();
        }
        // Destroying the IOAS tells the mirrors every area left.
        let first = w.first.clone();
        w.iommu.device_detach(w.dev.id()).unwrap();
        w.iommu.destroy(w.ioas).unwrap();
        prop_assert!(first.areas.lock().unwrap().is_empty());
    }
}
