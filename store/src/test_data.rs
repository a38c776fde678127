//! Test data shared by the crate's unit tests: deterministic, incompressible blob contents.

/// Blobs of the given `sizes` filled with pseudo-random bytes (one linear congruential sequence
/// from `seed` running through all of them, so every blob differs): incompressible, and the
/// same for the same arguments.
pub(crate) fn incompressible_blobs(
    seed: u64,
    sizes: impl IntoIterator<Item = usize>,
) -> Vec<Vec<u8>> {
    let mut state = seed;
    sizes
        .into_iter()
        .map(|size| {
            (0..size)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    state.to_le_bytes()[7]
                })
                .collect()
        })
        .collect()
}
