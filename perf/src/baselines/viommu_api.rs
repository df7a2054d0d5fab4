//! viommu itself, driven through its public API only.
//!
//! Setup: one device bound in group 0 (default aperture, nothing reserved), two IOASes that
//! map the same IOVAs to different targets, and one user HWPT on each (`hwpt_alloc`), so a
//! switch never has to build or populate a domain; the device starts on domain 0's HWPT.
//!
//! Three flavours share the setup:
//! - [`Flavor::Replace`]: one-shot `Device::translate_chunk` (one epoch pin and one domain snapshot
//!   per translation) and `device_replace` to switch: the atomic publish.
//! - [`Flavor::Guard64`]: the same, but a reader pins once (`Device::pin`) per block of 64
//!   translations, as an emulator does for a descriptor chain.
//! - [`Flavor::DetachAttach`]: one-shot translation, switched with `device_detach` followed
//!   by `device_attach`: what a front end without replace has to do; readers that land in the
//!   gap fault as blocked, and the scenarios count those faults.

use super::two_domains::TwoDomains;
use super::{translate_each, DomainIdx, Kind, Layout, OpError, Translator};
use ::viommu::{Access, Chunk, Device, Fault, FaultKind, Iommu, ObjId, Prot, Translation};

/// How readers translate and how the device switches domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// One-shot translate, `device_replace`.
    Replace,
    /// A `DmaGuard` per block of translations, `device_replace`.
    Guard64,
    /// One-shot translate, `device_detach` + `device_attach`.
    DetachAttach,
}

impl Flavor {
    /// The flavour that implements `kind`, if `kind` is one of viommu's.
    pub fn of(kind: Kind) -> Option<Flavor> {
        match kind {
            Kind::Viommu => Some(Flavor::Replace),
            Kind::ViommuGuard => Some(Flavor::Guard64),
            Kind::DetachAttach => Some(Flavor::DetachAttach),
            _ => None,
        }
    }
}

/// One device of a viommu context with two prebuilt domains.
pub struct ViommuTranslator {
    iommu: Iommu,
    dev_id: ObjId,
    dev: Device,
    ioas: [ObjId; 2],
    hwpt: [ObjId; 2],
    flavor: Flavor,
}

/// The target of `iova` for a request of `len` bytes, through `translate_chunk` (the fastest
/// correct call): its chunk when that covers the request, else the whole request through
/// `translate` (`full`), so a request that leaves its first leaf is still checked to its end.
#[inline(always)]
fn chunk_first_target<'g>(
    chunk: Result<Chunk, Fault>,
    len: u64,
    full: impl FnOnce() -> Result<Translation<'g>, Fault>,
) -> Result<u64, FaultKind> {
    match chunk {
        Ok(c) if c.len == len => Ok(c.target),
        Ok(_) => first_target(full()),
        Err(f) => Err(f.kind),
    }
}

/// The target of a translation's first chunk (0 for an empty one), or the fault kind.
#[inline]
fn first_target(r: Result<Translation<'_>, Fault>) -> Result<u64, FaultKind> {
    match r {
        Ok(mut t) => Ok(t.next().map_or(0, |c| c.target)),
        Err(f) => Err(f.kind),
    }
}

fn failed(what: &str, e: ::viommu::Error) -> OpError {
    OpError::Failed(format!("{what}: {e} (errno {})", e.errno()))
}

impl ViommuTranslator {
    /// Builds the context, both domains ([`TwoDomains`] over `layout`), and attaches the device
    /// to domain 0.
    ///
    /// # Panics
    ///
    /// If viommu refuses the setup (a bug: every call here is valid per the API contract).
    pub fn new(layout: &Layout, flavor: Flavor) -> ViommuTranslator {
        let TwoDomains {
            iommu,
            dev_id,
            dev,
            ioas,
            hwpt,
        } = TwoDomains::new(|d| layout.mappings(d));
        ViommuTranslator {
            iommu,
            dev_id,
            dev,
            ioas,
            hwpt,
            flavor,
        }
    }
}

impl Translator for ViommuTranslator {
    #[inline]
    fn translate(&self, iova: u64, len: u64, access: Access) -> Result<u64, FaultKind> {
        chunk_first_target(self.dev.translate_chunk(iova, len, access), len, || {
            self.dev.translate(iova, len, access)
        })
    }

    #[inline]
    fn translate_block(
        &self,
        iovas: &[u64],
        len: u64,
        access: Access,
        out: &mut [Result<u64, FaultKind>],
    ) {
        if self.flavor == Flavor::Guard64 {
            let guard = self.dev.pin();
            for (o, &iova) in out.iter_mut().zip(iovas) {
                *o = chunk_first_target(guard.translate_chunk(iova, len, access), len, || {
                    guard.translate(iova, len, access)
                });
            }
        } else {
            translate_each(self, iovas, len, access, out);
        }
    }

    fn replace(&self, to: DomainIdx) -> Result<(), OpError> {
        match self.flavor {
            Flavor::Replace | Flavor::Guard64 => self
                .iommu
                .device_replace(self.dev_id, self.hwpt[to])
                .map(drop)
                .map_err(|e| failed("device_replace", e)),
            Flavor::DetachAttach => {
                self.iommu
                    .device_detach(self.dev_id)
                    .map_err(|e| failed("device_detach", e))?;
                self.iommu
                    .device_attach(self.dev_id, self.hwpt[to])
                    .map(drop)
                    .map_err(|e| failed("device_attach", e))
            }
        }
    }

    fn map(&self, dom: DomainIdx, iova: u64, target: u64, len: u64) -> Result<(), OpError> {
        self.iommu
            .ioas_map(self.ioas[dom], Some(iova), target, len, Prot::RW)
            .map(drop)
            .map_err(|e| failed("ioas_map", e))
    }

    fn unmap(&self, dom: DomainIdx, iova: u64, len: u64) -> Result<(), OpError> {
        self.iommu
            .ioas_unmap(self.ioas[dom], iova, len)
            .map(drop)
            .map_err(|e| failed("ioas_unmap", e))
    }

    fn map_unmap_batch(
        &self,
        dom: DomainIdx,
        slots: &[(u64, u64)],
        len: u64,
    ) -> Result<u64, OpError> {
        let ioas = self.ioas[dom];
        let mut first = None;
        let mut last = None;
        for &(iova, target) in slots {
            self.map(dom, iova, target, len)?;
            let c = self
                .iommu
                .ioas_unmap_deferred(ioas, iova, len)
                .map_err(|e| failed("ioas_unmap_deferred", e))?;
            // Keep the first to check that the last one's wait settled it; drop the others.
            if first.is_none() {
                first = Some(c);
            } else {
                last = Some(c);
            }
        }
        let (wait, check) = match last {
            Some(l) => (Some(l), first),
            None => (first, None),
        };
        if let Some(c) = wait {
            c.wait().map_err(|e| failed("UnmapCompletion::wait", e))?;
        }
        Ok(u64::from(check.is_some_and(|c| !c.is_complete())))
    }

    fn quiesce(&self) {
        self.iommu.synchronize().expect("synchronize");
    }
}
