#![doc = include_str!("../../docs/patterns.md")]
