#![doc = include_str!("../../docs/benchmarks.md")]
