//! Shared by the store test binaries. Each binary uses only part of it.
#![allow(dead_code)]

pub mod conformance;
