//! Fuzz target `key_object`: see `cairn_fuzz::key_object` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_fuzz::key_object(data);
});
