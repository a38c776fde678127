//! Fuzz target `tree`: see `cairn_fuzz::tree` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_fuzz::tree(data);
});
