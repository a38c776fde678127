//! Fuzz target `index_object`: see `cairn_fuzz::index_object` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_fuzz::index_object(data);
});
