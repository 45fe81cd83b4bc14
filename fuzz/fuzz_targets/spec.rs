//! Fuzz target for the desired-state loader: any bytes through what
//! `timectl validate` does (UTF-8 check, YAML, types, semantic checks) must
//! give a spec or diagnostics, never a panic; every diagnostic must render,
//! and a rendered one never quotes more than a cut value.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use timectl::spec::{Spec, SpecError};

fuzz_target!(|data: &[u8]| {
    match Spec::parse_bytes(Path::new("fuzz.yaml"), data.to_vec()) {
        Ok(spec) => {
            // What validate prints about a valid spec.
            let _ = (spec.provider().name(), spec.timesync.sources.value.len());
            let _ = format!("{spec:?}");
        }
        Err(e @ SpecError::Invalid(_)) => {
            let shown = e.to_string();
            for d in e.diagnostics() {
                // Cut at 600 characters (and 80 without a space).
                assert!(d.message.chars().count() <= 601, "{}", d.message);
            }
            let _ = shown;
        }
        Err(SpecError::Io { .. }) => unreachable!("no file is read"),
    }
});
