//! Fuzz target `envelope`: see `cairn_fuzz::envelope` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_fuzz::envelope(data);
});
