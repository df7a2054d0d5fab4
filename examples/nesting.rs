//! Nested translation for emulator authors: a guest that owns its stage-1 tables (SMMUv3 and
//! VT-d formats) on top of a stage 2 that the VMM owns, and the two replaces SPEC requires to
//! be hitless, run with DMA threads translating throughout:
//!
//! 1. *vPASID*: a device moves from an SMMUv3 nested HWPT with one CD (S1CDMax 0) to one with
//!    2^3 CDs and back. Untagged DMA never faults; SSIDs 1.. fault `Blocked` on the one-CD
//!    table (legal) and translate through their own CD on the other.
//! 2. *S2 → S1*: a device moves between the stage-2 HWPT (IOVA = IPA), an SMMUv3 and a VT-d
//!    nested HWPT whose stage 1 is an identity map of the DMA buffers: nothing ever faults.
//!
//! What a VMM writes: [`GuestRam`] implements [`TableMemory`] (how the library reads the
//! guest's tables), [`forward`] turns the guest's invalidation commands into
//! `hwpt_invalidate`. The rest is the guest's side, written here as a tiny table builder.
//!
//! ```text
//! cargo run --release --example nesting
//! ```
//!
//! Prints, per case, translations done, faults (must be 0), switches made and a few sample
//! translations; exits non-zero if any DMA faulted where it must not.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use viommu::{
    Access, Device, DeviceInfo, FaultKind, GroupId, HwptFlags, Invalidation, Iommu, ObjId, Prot,
    Stage1, TableMemory,
};

const PAGE: u64 = 4096;
/// Guest RAM: guest-physical (IPA) 0 .. 4 MiB, mapped in the VMM at `HOST_BASE`. Stage 2 (the
/// parent HWPT's IOAS) maps IPA `x` to target `HOST_BASE + x`.
const RAM_SIZE: u64 = 4 << 20;
const HOST_BASE: u64 = 0x7f00_0000_0000;
/// Where the guest keeps its page tables and CD tables (IPAs).
const TABLES: u64 = 0x10_0000;
/// The DMA buffers: 16 pages at IPA `BUFFERS` (and at IOVA `BUFFERS`: the S2 → S1 case
/// translates IOVA = IPA in every domain).
const BUFFERS: u64 = 0x20_0000;
const BUFFER_PAGES: u64 = 16;
/// How many switches each case makes.
const SWITCHES: u64 = 20_000;

// ---------------------------------------------------------------------------------------
// The VMM side.

/// The VMM's view of guest RAM. The library calls `read_u64` on DMA threads, on an IOTLB miss,
/// with the stage-2 target of a table entry's IPA: it must be quick and must not block.
struct GuestRam {
    words: Vec<AtomicU64>,
}

impl TableMemory for GuestRam {
    fn read_u64(&self, target: u64) -> Option<u64> {
        let offset = target.checked_sub(HOST_BASE)?;
        let word = self.words.get(usize::try_from(offset / 8).ok()?)?;
        Some(word.load(Ordering::Acquire))
    }
}

/// An invalidation command as the guest queues it (the SMMUv3 command queue's CMD_CFGI_CD,
/// CMD_TLBI_NH_VA and CMD_TLBI_NH_ALL; VT-d's PASID-cache and IOTLB descriptors are alike).
#[allow(dead_code)] // the example queues two of them
enum GuestCommand {
    CfgiCd { ssid: u32 },
    TlbiVa { ssid: u32, iova: u64, pages: u64 },
    TlbiAll,
}

/// The emulated IOMMU front end, on the guest's command: drop what the guest changed. When
/// `hwpt_invalidate` returns, no DMA uses an old entry, so the guest may reuse its pages (the
/// VMM completes the guest's CMD_SYNC only then).
fn forward(iommu: &Iommu, hwpt: ObjId, cmd: GuestCommand) -> viommu::Result<()> {
    let inv = match cmd {
        GuestCommand::CfgiCd { ssid } => Invalidation::Config { pasid: ssid },
        GuestCommand::TlbiVa { ssid, iova, pages } => Invalidation::Range {
            pasid: Some(ssid),
            iova,
            len: pages * PAGE,
        },
        GuestCommand::TlbiAll => Invalidation::All,
    };
    iommu.hwpt_invalidate(hwpt, inv)
}

// ---------------------------------------------------------------------------------------
// The guest side: it writes its tables into its RAM.

struct Guest {
    ram: Arc<GuestRam>,
    next_table: AtomicU64,
}

/// The stage-1 formats the guest writes: both are 4-level, 9 bits a level, 4 KiB pages here.
#[derive(Clone, Copy)]
enum Format {
    /// AArch64 (SMMUv3 CD with T0SZ 16): valid + table, or valid + page + AF (AP[2] for
    /// read-only).
    Arm,
    /// x86-64 (VT-d first stage): present + R/W.
    Vtd,
}

impl Guest {
    fn write(&self, ipa: u64, value: u64) {
        self.ram.words[(ipa / 8) as usize].store(value, Ordering::Release);
    }

    fn read(&self, ipa: u64) -> u64 {
        self.ram.words[(ipa / 8) as usize].load(Ordering::Acquire)
    }

    /// A zeroed page for a table (its IPA).
    fn alloc(&self) -> u64 {
        self.next_table.fetch_add(PAGE, Ordering::Relaxed)
    }

    /// Maps the 4 KiB page at `iova` to `ipa` (writable) in the table rooted at `root`.
    fn map(&self, fmt: Format, root: u64, iova: u64, ipa: u64) {
        let mut table = root;
        for level in (1..4).rev() {
            let slot = table + ((iova >> (12 + 9 * level)) & 0x1ff) * 8;
            table = match self.read(slot) {
                0 => {
                    let next = self.alloc();
                    self.write(slot, next | 0b11);
                    next
                }
                e => e & 0x000f_ffff_ffff_f000,
            };
        }
        let leaf = match fmt {
            Format::Arm => ipa | 0b11 | (1 << 10),
            Format::Vtd => ipa | 0b11,
        };
        self.write(table + ((iova >> 12) & 0x1ff) * 8, leaf);
    }

    /// A new stage-1 table mapping the buffers' IOVAs to `ipa ..`.
    fn table(&self, fmt: Format, ipa: u64) -> u64 {
        let root = self.alloc();
        for p in 0..BUFFER_PAGES {
            self.map(fmt, root, BUFFERS + p * PAGE, ipa + p * PAGE);
        }
        root
    }

    /// Writes CD `index` (valid, AArch64, 4 KiB granule, T0SZ 16, ASID = index) of the linear
    /// CD table at `cd_table`, pointing at the stage-1 table `root`.
    fn write_cd(&self, cd_table: u64, index: u64, root: u64) {
        let cd = cd_table + index * 64;
        self.write(cd + 8, root); // TTB0
        self.write(cd, 16 | (1 << 31) | (1 << 41) | (index << 48));
    }
}

/// An SMMUv3 STE (words 0 and 1): stage-1 translate through the linear CD table at
/// `cd_table` with 2^`cd_max` CDs; untagged DMA uses CD 0 (S1DSS 2).
fn ste(cd_table: u64, cd_max: u64) -> Stage1 {
    Stage1::SmmuV3 {
        ste: [1 | (0b101 << 1) | cd_table | (cd_max << 59), 2],
    }
}

// ---------------------------------------------------------------------------------------
// The DMA threads and the switching guest.

/// A DMA thread's tally.
#[derive(Default)]
struct Tally {
    translations: AtomicU64,
    /// Faults that must not happen, and translations to the wrong place.
    faults: AtomicU64,
    /// `Blocked` faults of SSIDs on a one-CD table (legal).
    blocked: AtomicU64,
}

/// Runs `dma(iteration)` on two threads (returning: translations done, illegal faults, legal
/// blocks) while `switch(k)` makes `SWITCHES` switches.
fn run(
    tally: &Tally,
    dma: impl Fn(u64, &Device) -> (u64, u64, u64) + Sync,
    devs: [&Device; 2],
    mut switch: impl FnMut(u64) -> viommu::Result<()>,
) -> viommu::Result<()> {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for dev in devs {
            let (stop, dma) = (&stop, &dma);
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (done, bad, blocked) = dma(i, dev);
                    tally.translations.fetch_add(done, Ordering::Relaxed);
                    tally.faults.fetch_add(bad, Ordering::Relaxed);
                    tally.blocked.fetch_add(blocked, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        let r = (1..=SWITCHES).try_for_each(&mut switch);
        stop.store(true, Ordering::Relaxed);
        r
    })
}

/// Prints one sample: what the guest mapped (IOVA → IPA) and what DMA got (the target).
fn sample(what: &str, dev: &Device, ssid: u32, iova: u64, ipa: Option<u64>) {
    let got = dev
        .pin_pasid(ssid)
        .translate(iova, 8, Access::Read)
        .map(|t| t.as_slice()[0].target);
    match (ipa, got) {
        (Some(ipa), Ok(target)) => {
            println!("    {what:<22} IOVA {iova:#x} -> IPA {ipa:#x} -> target {target:#x}")
        }
        (_, Ok(target)) => println!("    {what:<22} IOVA {iova:#x} -> target {target:#x}"),
        (_, Err(f)) => println!("    {what:<22} IOVA {iova:#x} -> fault {:?}", f.kind),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iommu = Iommu::new();
    let info = DeviceInfo {
        pasid_bits: 8,
        ..DeviceInfo::default()
    };
    let (dev_id, dev) = iommu.device_bind(GroupId(1), info.clone())?;
    let (peer_id, peer) = iommu.device_bind(GroupId(1), info)?;

    // The VMM: guest RAM, and stage 2 mapping all of it (IPA -> HOST_BASE + IPA).
    let ram = Arc::new(GuestRam {
        words: (0..RAM_SIZE / 8).map(|_| AtomicU64::new(0)).collect(),
    });
    let guest = Guest {
        ram: ram.clone(),
        next_table: AtomicU64::new(TABLES),
    };
    let ioas = iommu.ioas_alloc()?;
    iommu.ioas_map(ioas, Some(0), HOST_BASE, RAM_SIZE, Prot::RW)?;
    let parent = iommu.hwpt_alloc(dev_id, ioas, HwptFlags::NEST_PARENT)?;
    let nested = |s1: Stage1| iommu.hwpt_alloc_nested(dev_id, parent, s1, ram.clone());
    let target = |ipa: u64| HOST_BASE + ipa;
    let mut failed = false;

    // Case 1, vPASID. CD `s` maps the buffers to IPA `BUFFERS + s * 64 KiB`; the one-CD table
    // and the 8-CD table share CD 0's stage-1 table.
    let cd_ipa = |s: u64| BUFFERS + s * 0x1_0000;
    let roots: Vec<u64> = (0..8)
        .map(|s| guest.table(Format::Arm, cd_ipa(s)))
        .collect();
    let (one_cd, eight_cds) = (guest.alloc(), guest.alloc());
    guest.write_cd(one_cd, 0, roots[0]);
    for (s, &root) in roots.iter().enumerate().take(7) {
        guest.write_cd(eight_cds, s as u64, root);
    }
    let small = nested(ste(one_cd, 0))?;
    let big = nested(ste(eight_cds, 3))?;
    iommu.device_attach(dev_id, small)?;
    iommu.device_attach(peer_id, small)?;
    // The guest fills CD 7 after the STE is in use, and says so (CMD_CFGI_CD).
    guest.write_cd(eight_cds, 7, roots[7]);
    forward(&iommu, big, GuestCommand::CfgiCd { ssid: 7 })?;
    let tally = Tally::default();
    run(
        &tally,
        |i, dev| {
            let (mut done, mut bad, mut blocked) = (0, 0, 0);
            let off = (i % BUFFER_PAGES) * PAGE + 64;
            // Untagged DMA: CD 0 on either table, never a fault.
            match dev.pin().translate(BUFFERS + off, 512, Access::Write) {
                Ok(t) if t.as_slice()[0].target == target(cd_ipa(0) + off) => done += 1,
                _ => bad += 1,
            }
            // SSID 1 .. 7: its own CD on the 8-CD table, `Blocked` on the one-CD table.
            let ssid = 1 + i % 7;
            match dev
                .pin_pasid(ssid as u32)
                .translate(BUFFERS + off, 512, Access::Read)
            {
                Ok(t) if t.as_slice()[0].target == target(cd_ipa(ssid) + off) => done += 1,
                Err(f) if f.kind == FaultKind::Blocked => blocked += 1,
                _ => bad += 1,
            }
            (done, bad, blocked)
        },
        [&dev, &peer],
        |k| {
            iommu.device_replace(dev_id, if k % 2 == 1 { big } else { small })?;
            Ok(())
        },
    )?;
    println!("case 1, vPASID: one CD <-> 2^3 CDs, 2 DMA threads");
    println!(
        "  translations {}, faults {}, switches {SWITCHES} (SSID requests blocked on the one-CD table: {})",
        tally.translations.load(Ordering::Relaxed),
        tally.faults.load(Ordering::Relaxed),
        tally.blocked.load(Ordering::Relaxed),
    );
    // The guest maps one more page for SSID 3 and invalidates it (CMD_TLBI_NH_VA).
    let extra = BUFFERS + BUFFER_PAGES * PAGE;
    guest.map(Format::Arm, roots[3], extra, cd_ipa(3) + 0x8000);
    forward(
        &iommu,
        big,
        GuestCommand::TlbiVa {
            ssid: 3,
            iova: extra,
            pages: 1,
        },
    )?;
    iommu.device_replace(dev_id, big)?;
    sample("untagged (CD 0):", &dev, 0, BUFFERS, Some(cd_ipa(0)));
    sample(
        "SSID 5 (CD 5):",
        &dev,
        5,
        BUFFERS + 0x123,
        Some(cd_ipa(5) + 0x123),
    );
    sample(
        "SSID 3, new page:",
        &dev,
        3,
        extra,
        Some(cd_ipa(3) + 0x8000),
    );
    iommu.device_replace(dev_id, small)?;
    sample("SSID 5, one-CD table:", &dev, 5, BUFFERS, None);
    failed |= tally.faults.load(Ordering::Relaxed) != 0;

    // Case 2, S2 -> S1: the stage-2 HWPT itself (IOVA = IPA), and SMMUv3 and VT-d nested
    // HWPTs whose stage 1 maps the buffers' IOVAs to the same IPAs.
    let cds = guest.alloc();
    guest.write_cd(cds, 0, guest.table(Format::Arm, BUFFERS));
    let smmu = nested(ste(cds, 0))?;
    let vtd = nested(Stage1::VtdS1 {
        pgtbl_addr: guest.table(Format::Vtd, BUFFERS),
        addr_width: 48,
    })?;
    iommu.device_replace(dev_id, parent)?;
    let domains = [parent, smmu, vtd];
    let tally = Tally::default();
    run(
        &tally,
        |i, dev| {
            let off = (i % BUFFER_PAGES) * PAGE + 128;
            match dev.pin().translate(BUFFERS + off, 1024, Access::Write) {
                Ok(t) if t.as_slice()[0].target == target(BUFFERS + off) => (1, 0, 0),
                _ => (0, 1, 0),
            }
        },
        [&dev, &peer],
        // parent -> SMMUv3 -> VT-d -> parent -> VT-d -> SMMUv3 -> parent: every pair.
        |k| {
            let to = domains[[0, 1, 2, 0, 2, 1][(k % 6) as usize]];
            iommu.device_replace(dev_id, to)?;
            Ok(())
        },
    )?;
    println!("case 2, S2 -> S1: stage 2 only <-> SMMUv3 <-> VT-d nested, 2 DMA threads");
    println!(
        "  translations {}, faults {}, switches {SWITCHES}",
        tally.translations.load(Ordering::Relaxed),
        tally.faults.load(Ordering::Relaxed),
    );
    for (name, hwpt) in [
        ("stage 2 only:", parent),
        ("SMMUv3 nested:", smmu),
        ("VT-d nested:", vtd),
    ] {
        iommu.device_replace(dev_id, hwpt)?;
        sample(name, &dev, 0, BUFFERS + 0x5008, Some(BUFFERS + 0x5008));
    }
    failed |= tally.faults.load(Ordering::Relaxed) != 0;

    if failed {
        return Err("DMA faulted during a hitless replace".into());
    }
    Ok(())
}
