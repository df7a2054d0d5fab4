//! Documentation beyond the API reference: how `viommu` works and how to use it well.
//!
//! These modules hold no code. Each renders one page of the repository's `docs/` folder,
//! included as it is (`#![doc = include_str!(..)]`), so the page read on GitHub and the one
//! read in rustdoc are the same text.
//!
//! * [`patterns`]: patterns and limitations for emulator authors: how long to hold a guard,
//!   how many guards a thread may hold, one `Iommu` per VM, what the one-shot
//!   [`Device::translate`](crate::Device::translate) does and does not fence.
//! * [`design`]: the design notes: architecture, the replace and unmap protocols, memory
//!   orderings, lock order, reclamation.
//! * [`loom`]: how the concurrent guarantees are model-checked with loom, what the loom build
//!   changes, and what the valgrind heap check covers.
//! * [`nesting`]: nested translation: the SMMUv3 and VT-d stage-1 formats supported and
//!   not, how the software IOTLB stays coherent, and which kernel behaviours are followed.
//! * [`benchmarks`]: the latency suite and the criterion benches: how to run them, what is
//!   compared, and results.

pub mod benchmarks;
pub mod design;
pub mod loom;
pub mod nesting;
pub mod patterns;

// Compile-time claims of the API, pinned with `compile_fail` doctests (built by rustdoc only).
#[cfg(doctest)]
mod compile_fail;
