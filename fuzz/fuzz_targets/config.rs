//! Fuzz target `config`: see `cairn_fuzz::config` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cairn_fuzz::config(data);
});
