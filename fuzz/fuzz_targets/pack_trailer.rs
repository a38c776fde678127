//! Fuzz target `pack_trailer`: see `cairn_fuzz::pack_trailer` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_fuzz::pack_trailer(data);
});
