//! ARM SMMUv3 stage 1 (Arm IHI 0070; the kernel's `arm-smmu-v3.h` names): the guest's STE
//! words 0-1, a linear table of 2^S1CDMax context descriptors (CDs), and AArch64 VMSAv8-64
//! tables with a 4 KiB granule.
//!
//! The STE is checked once, at allocation, as the kernel's `arm_smmu_validate_vste` does
//! (bits outside the fields a guest may set are refused). CDs are read when DMA uses them, as
//! the hardware reads them: the guest may fill its CD table after writing the STE.

use super::{Context, Reader, Walker, UNTAGGED};
use crate::translation::FaultKind;

// STE word 0.
const STE0_V: u64 = 1;
const STE0_CONFIG_SHIFT: u32 = 1;
const STE0_S1FMT_SHIFT: u32 = 4;
const STE0_CTXPTR_MASK: u64 = 0x000f_ffff_ffff_ffc0; // bits 51:6
const STE0_CDMAX_SHIFT: u32 = 59;
/// V, Config, S1Fmt, S1ContextPtr, S1CDMax: everything else in word 0 is RES0.
const STE0_ALLOWED: u64 = STE0_V | (0b111 << 1) | (0b11 << 4) | STE0_CTXPTR_MASK | (0x1f << 59);
// STE word 1.
/// S1DSS 1:0, S1CIR 3:2, S1COR 5:4, S1CSH 7:6 (cache attributes: no meaning here), S1STALLD
/// 27, EATS 29:28 (ATS: no meaning here): what the kernel lets a guest set.
const STE1_ALLOWED: u64 = 0xff | (1 << 27) | (0b11 << 28);

const CONFIG_ABORT: u64 = 0b000;
const CONFIG_BYPASS: u64 = 0b100;
const CONFIG_S1: u64 = 0b101;

// CD word 0.
const CD0_T0SZ_MASK: u64 = 0x3f;
const CD0_TG0_SHIFT: u32 = 6;
const CD0_EPD0: u64 = 1 << 14;
const CD0_V: u64 = 1 << 31;
const CD0_AA64: u64 = 1 << 41;
// CD word 1.
const CD1_TTB0_MASK: u64 = 0x000f_ffff_ffff_fff0; // bits 51:4
/// Bytes per CD.
const CD_SIZE: u64 = 64;

// Descriptors.
const DESC_VALID: u64 = 1 << 0;
const DESC_TABLE: u64 = 1 << 1;
const DESC_AP2_RO: u64 = 1 << 7;
const DESC_AF: u64 = 1 << 10;
const DESC_APTABLE1_RO: u64 = 1 << 62;
/// Output address bits 47:12 (no 52-bit output with a 4 KiB granule here).
const DESC_ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Largest S1CDMax accepted: SSIDs have at most 20 bits (as PASIDs).
const MAX_CDMAX: u64 = 20;

/// What the STE says, checked.
#[derive(Debug)]
pub(crate) struct Ste {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// V = 0 or Config abort: every access faults `Blocked`.
    Abort,
    /// Config bypass: stage 1 off (IOVA = IPA); tagged DMA has no substream to go to.
    Bypass,
    /// Config stage-1 translate.
    Translate {
        cd_table: u64,
        cd_max: u32,
        s1dss: u64,
    },
}

impl Ste {
    /// Checks STE words 0 and 1 as the kernel does for a guest's vSTE.
    pub(crate) fn parse(ste: [u64; 2]) -> Result<Ste, &'static str> {
        let [w0, w1] = ste;
        // V = 0: the kernel clears the whole STE and accepts it; every access aborts.
        if w0 & STE0_V == 0 {
            return Ok(Ste { mode: Mode::Abort });
        }
        if w0 & !STE0_ALLOWED != 0 {
            return Err("SMMUv3 STE word 0 has reserved bits set (58:52)");
        }
        if w1 & !STE1_ALLOWED != 0 {
            return Err("SMMUv3 STE word 1 sets bits a guest may not set (only S1DSS, S1CIR, S1COR, S1CSH, S1STALLD, EATS)");
        }
        let mode = match (w0 >> STE0_CONFIG_SHIFT) & 0b111 {
            CONFIG_ABORT => Mode::Abort,
            CONFIG_BYPASS => Mode::Bypass,
            CONFIG_S1 => {
                let cd_max = w0 >> STE0_CDMAX_SHIFT;
                if cd_max > MAX_CDMAX {
                    return Err("SMMUv3 STE S1CDMax above 20 (SSIDs have at most 20 bits)");
                }
                let s1fmt = (w0 >> STE0_S1FMT_SHIFT) & 0b11;
                // S1Fmt is ignored with a single CD.
                if cd_max > 0 && s1fmt != 0 {
                    return Err("SMMUv3 STE S1Fmt other than 0 (linear CD table) is not supported");
                }
                let s1dss = w1 & 0b11;
                if cd_max > 0 && s1dss == 0b11 {
                    return Err("SMMUv3 STE S1DSS value 0b11 is reserved");
                }
                Mode::Translate {
                    cd_table: w0 & STE0_CTXPTR_MASK,
                    cd_max: cd_max as u32,
                    s1dss,
                }
            }
            _ => {
                return Err(
                    "SMMUv3 STE Config other than abort (0b000), bypass (0b100) or stage-1 translate (0b101)",
                )
            }
        };
        Ok(Ste { mode })
    }

    /// The CD that substream `ssid` uses, or what happens instead.
    fn cd_index(&self, ssid: u32) -> Result<Option<u64>, FaultKind> {
        match self.mode {
            Mode::Abort => Err(FaultKind::Blocked),
            Mode::Bypass if ssid == UNTAGGED => Ok(None),
            Mode::Bypass => Err(FaultKind::Blocked),
            Mode::Translate { cd_max, s1dss, .. } => {
                if ssid == UNTAGGED {
                    if cd_max == 0 {
                        return Ok(Some(0));
                    }
                    return match s1dss {
                        0 => Err(FaultKind::Blocked),
                        1 => Ok(None),
                        _ => Ok(Some(0)),
                    };
                }
                if u64::from(ssid) >= 1u64 << cd_max {
                    return Err(FaultKind::Blocked);
                }
                Ok(Some(u64::from(ssid)))
            }
        }
    }
}

impl Walker for Ste {
    fn context(&self, ssid: u32, rd: &Reader<'_>) -> Result<Context, FaultKind> {
        let Some(index) = self.cd_index(ssid)? else {
            return Ok(Context::Bypass);
        };
        let Mode::Translate { cd_table, .. } = self.mode else {
            unreachable!("a CD index comes from a translating STE")
        };
        let cd = cd_table + index * CD_SIZE;
        let w0 = rd.read(cd)?;
        // A CD that is invalid or that we do not support: its substream faults `Blocked`.
        if w0 & CD0_V == 0 || w0 & CD0_AA64 == 0 || (w0 >> CD0_TG0_SHIFT) & 0b11 != 0 {
            return Err(FaultKind::Blocked);
        }
        let t0sz = (w0 & CD0_T0SZ_MASK) as u32;
        // 4 KiB granule: input sizes 25 ..= 48 bits (52-bit input needs LPA2).
        if !(16..=39).contains(&t0sz) {
            return Err(FaultKind::Blocked);
        }
        let input_bits = 64 - t0sz;
        let w1 = rd.read(cd + 8)?;
        // The level whose index holds the input's top bits: level 3 resolves bits 20:12.
        let level = match input_bits {
            40.. => 0,
            31..=39 => 1,
            _ => 2,
        };
        Ok(Context::Table {
            root: w1 & CD1_TTB0_MASK,
            level,
            input_bits,
            disabled: w0 & CD0_EPD0 != 0,
        })
    }

    fn walk(
        &self,
        ctx: &Context,
        iova: u64,
        rd: &Reader<'_>,
    ) -> Result<(u64, u64, bool), FaultKind> {
        let Context::Table {
            root,
            level,
            input_bits,
            disabled,
        } = *ctx
        else {
            unreachable!("walk is called for table contexts")
        };
        if iova >> input_bits != 0 {
            return Err(FaultKind::Aperture);
        }
        if disabled {
            return Err(FaultKind::Unmapped);
        }
        let mut table = root;
        let mut level = level;
        let mut read_only = false;
        loop {
            let shift = 12 + 9 * (3 - level);
            let index = (iova >> shift) & 0x1ff;
            let desc = rd.read(table + index * 8)?;
            if desc & DESC_VALID == 0 {
                return Err(FaultKind::Unmapped);
            }
            if level < 3 && desc & DESC_TABLE != 0 {
                read_only |= desc & DESC_APTABLE1_RO != 0;
                table = desc & DESC_ADDR_MASK;
                level += 1;
                continue;
            }
            // A block at level 0, or a level-3 descriptor without the page bit: invalid with
            // a 4 KiB granule (a translation fault). AF = 0: an access-flag fault (no HTTU:
            // the library never writes guest tables).
            if level == 0 || (level == 3 && desc & DESC_TABLE == 0) || desc & DESC_AF == 0 {
                return Err(FaultKind::Unmapped);
            }
            read_only |= desc & DESC_AP2_RO != 0;
            let size_mask = (1u64 << shift) - 1;
            let ipa = (desc & DESC_ADDR_MASK & !size_mask) | (iova & size_mask & !0xfff);
            return Ok((ipa, size_mask, !read_only));
        }
    }
}
