//! Budgets: what a caller (a guest, through the virtio-iommu device) can make the library
//! allocate for one IOAS. A map past the budget fails with `ENOMEM` and changes nothing (G8);
//! an attach whose new domain would pass it too. The device answers `S_NOMEM` by default.
#![cfg(feature = "virtio-iommu")]

use std::time::Instant;
use viommu::virtio_iommu::wire::{Request, MAP_F_READ, MAP_F_WRITE, TAIL_SIZE};
use viommu::virtio_iommu::{Config, Status, VirtioIommu};
use viommu::{errno, Budget, DeviceInfo, Error, GroupId, Iommu, Prot};

const K4: u64 = 4096;
const G1: u64 = 1 << 30;

fn enomem(e: Error) {
    assert!(matches!(e, Error::BudgetExceeded { .. }), "{e:?}");
    assert_eq!(e.errno(), errno::ENOMEM);
}

#[test]
fn the_area_limit_refuses_the_next_map_and_changes_nothing() {
    let iommu = Iommu::new();
    let (dev, _d) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    iommu.device_attach(dev, ioas).unwrap();
    iommu
        .ioas_set_budget(
            ioas,
            Budget {
                max_areas: 2,
                ..Budget::UNLIMITED
            },
        )
        .unwrap();
    iommu.ioas_map(ioas, Some(0), 0, K4, Prot::RW).unwrap();
    iommu.ioas_map(ioas, None, 0, K4, Prot::RW).unwrap();
    let (usage, stats) = (iommu.ioas_usage(ioas).unwrap(), iommu.stats());
    assert_eq!(usage.areas, 2);
    enomem(iommu.ioas_map(ioas, Some(G1), 0, K4, Prot::RW).unwrap_err());
    enomem(iommu.ioas_map(ioas, None, 0, K4, Prot::RW).unwrap_err());
    assert_eq!(iommu.ioas_usage(ioas).unwrap(), usage);
    assert_eq!(iommu.stats(), stats);
    // An unmap makes room again.
    iommu.ioas_unmap(ioas, 0, K4).unwrap();
    iommu.ioas_map(ioas, Some(G1), 0, K4, Prot::RW).unwrap();
}

#[test]
fn the_table_limit_is_checked_before_the_tables_are_built() {
    let iommu = Iommu::new();
    let (dev, _d) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    iommu.device_attach(dev, ioas).unwrap();
    iommu
        .ioas_set_budget(
            ioas,
            Budget {
                max_table_bytes: 64 * K4,
                ..Budget::UNLIMITED
            },
        )
        .unwrap();
    let before = iommu.ioas_usage(ioas).unwrap();
    let stats = iommu.stats();
    // 1 GiB with 4 KiB leaves (the target is not congruent to the IOVA modulo 2 MiB): 512
    // leaf tables, refused before one is built.
    let t = Instant::now();
    enomem(iommu.ioas_map(ioas, Some(0), K4, G1, Prot::RW).unwrap_err());
    assert!(t.elapsed().as_millis() < 100, "refused at once");
    assert_eq!(iommu.ioas_usage(ioas).unwrap(), before);
    assert_eq!(iommu.stats(), stats);
    // The same range with 2 MiB leaves needs a handful of tables: allowed.
    iommu.ioas_map(ioas, Some(0), 0, G1, Prot::RW).unwrap();
    let after = iommu.ioas_usage(ioas).unwrap();
    assert!(after.table_bytes <= 64 * K4, "{after:?}");
    // Maps of 4 KiB pages spread one per 2 MiB: refused once the tables would pass 64 KiB.
    let mut n = 0;
    let err = loop {
        match iommu.ioas_map(ioas, Some(2 * G1 + n * (2 << 20)), 0, K4, Prot::RW) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    enomem(err);
    assert!(n > 0 && n < 64, "{n}");
    assert!(iommu.ioas_usage(ioas).unwrap().table_bytes <= 64 * K4);
}

#[test]
fn one_map_may_add_only_so_much() {
    let iommu = Iommu::new();
    let ioas = iommu.ioas_alloc().unwrap();
    let (dev, _d) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    iommu.device_attach(dev, ioas).unwrap();
    iommu
        .ioas_set_budget(
            ioas,
            Budget {
                max_map_table_bytes: 16 * K4,
                ..Budget::UNLIMITED
            },
        )
        .unwrap();
    enomem(
        iommu
            .ioas_map(ioas, Some(0), K4, 64 << 20, Prot::RW)
            .unwrap_err(),
    );
    // Two maps of half the size each pass.
    iommu
        .ioas_map(ioas, Some(0), K4, 16 << 20, Prot::RW)
        .unwrap();
    iommu
        .ioas_map(ioas, Some(16 << 20), K4, 16 << 20, Prot::RW)
        .unwrap();
}

#[test]
fn an_attach_whose_new_domain_passes_the_budget_fails_and_changes_nothing() {
    let iommu = Iommu::new();
    let ioas = iommu.ioas_alloc().unwrap();
    let (a, _da) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let narrow = DeviceInfo {
        iova_bits: 39,
        ..DeviceInfo::default()
    };
    let (b, _db) = iommu.device_bind(GroupId(2), narrow).unwrap();
    iommu.device_attach(b, ioas).unwrap();
    // 64 MiB with 4 KiB leaves: 32 leaf tables a domain.
    iommu
        .ioas_map(ioas, Some(0), K4, 64 << 20, Prot::RW)
        .unwrap();
    let used = iommu.ioas_usage(ioas).unwrap().table_bytes;
    iommu
        .ioas_set_budget(
            ioas,
            Budget {
                max_table_bytes: used + 8 * K4,
                ..Budget::UNLIMITED
            },
        )
        .unwrap();
    let stats = iommu.stats();
    // `a` needs its own (48-bit) domain, which would double the tables.
    enomem(iommu.device_attach(a, ioas).unwrap_err());
    enomem(
        iommu
            .hwpt_alloc(a, ioas, viommu::HwptFlags::empty())
            .unwrap_err(),
    );
    iommu.synchronize().unwrap();
    assert_eq!(iommu.stats(), stats);
    assert_eq!(iommu.ioas_usage(ioas).unwrap().table_bytes, used);
}

fn send(v: &mut VirtioIommu, r: Request) -> Status {
    let mut w = vec![0u8; TAIL_SIZE];
    let used = v.handle(&r.to_bytes(), &mut w).unwrap();
    Status::from_u8(w[used - TAIL_SIZE]).unwrap()
}

fn device(config: Config) -> (VirtioIommu, viommu::Device) {
    let iommu = Iommu::new();
    let mut v = VirtioIommu::new(iommu.clone(), config);
    let (_, dev) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    v.add_endpoint(1, &dev, Vec::new()).unwrap();
    let attach = Request::Attach {
        domain: 1,
        endpoint: 1,
        flags: 0,
        reserved_set: false,
    };
    assert_eq!(send(&mut v, attach), Status::Ok);
    (v, dev)
}

fn map(v: &mut VirtioIommu, start: u64, len: u64, phys: u64) -> Status {
    send(
        v,
        Request::Map {
            domain: 1,
            virt_start: start,
            virt_end: start + len - 1,
            phys_start: phys,
            flags: MAP_F_READ | MAP_F_WRITE,
        },
    )
}

/// The report's attack: one 36-byte MAP with a 4 KiB-aligned `phys_start` over most of the
/// default 2^48 input range (about 512 GiB of tables) is refused at once, changing nothing.
#[test]
fn the_device_refuses_a_guests_huge_map_with_nomem() {
    let (mut v, _dev) = device(Config::default());
    const { assert!(Config::DEFAULT_BUDGET.max_table_bytes < 1 << 30) };
    let ioas = v.domain_ioas(1).unwrap();
    let iommu = v.iommu().clone();
    let before = iommu.ioas_usage(ioas).unwrap();
    let t = Instant::now();
    assert_eq!(map(&mut v, 0, (1 << 47) - K4, K4), Status::NoMem);
    assert!(t.elapsed().as_millis() < 100);
    assert_eq!(iommu.ioas_usage(ioas).unwrap(), before);
    assert!(v.domain_mappings(1).is_empty());
    // 4 GiB with 4 KiB leaves (8 MiB of tables) is within one MAP's share.
    assert_eq!(map(&mut v, 0, 4 * G1, K4), Status::Ok);
}

/// Maps until the budget says no: the tables never pass it, and the refused MAP changes
/// nothing (a small configured budget, so that the test stays fast).
#[test]
fn the_device_budget_bounds_a_guests_tables() {
    let budget = Budget {
        max_areas: 1 << 18,
        max_table_bytes: 8 << 20,
        max_map_table_bytes: 1 << 20,
    };
    let (mut v, _dev) = device(Config {
        budget,
        ..Config::default()
    });
    let ioas = v.domain_ioas(1).unwrap();
    let iommu = v.iommu().clone();
    let mut at = 0;
    loop {
        // 256 MiB with 4 KiB leaves: about 512 KiB of tables each.
        let s = map(&mut v, at, 256 << 20, K4);
        if s == Status::NoMem {
            break;
        }
        assert_eq!(s, Status::Ok);
        at += 256 << 20;
    }
    let usage = iommu.ioas_usage(ioas).unwrap();
    assert!(usage.table_bytes <= 8 << 20, "{usage:?}");
    assert!(usage.table_bytes > 6 << 20, "{usage:?}");
    assert_eq!(v.domain_mappings(1).len() as u64, usage.areas);
    // Past the per-MAP share: NOMEM too, even with room left after an unmap.
    let unmap = Request::Unmap {
        domain: 1,
        virt_start: 0,
        virt_end: (256 << 20) - 1,
        reserved_set: false,
    };
    assert_eq!(send(&mut v, unmap), Status::Ok);
    assert_eq!(map(&mut v, 1 << 46, 2 * G1, K4), Status::NoMem);
}
