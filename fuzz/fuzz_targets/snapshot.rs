//! Fuzz target `snapshot`: see `cairn_fuzz::snapshot` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_fuzz::snapshot(data);
});
