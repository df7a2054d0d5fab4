#![doc = include_str!("../../docs/nesting.md")]
