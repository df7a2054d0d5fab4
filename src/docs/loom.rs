#![doc = include_str!("../../docs/loom.md")]
