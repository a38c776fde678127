//! Fuzz target `lifecycle`: see `cairn_fuzz::lifecycle_objects` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_fuzz::lifecycle_objects(data);
});
