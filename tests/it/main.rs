//! cairn's integration tests, built into one binary: the CLI end to end on real files and
//! processes, fault injection through the library, and the format's test vectors and fixtures.

mod backends;
mod cli_e2e;
mod comforts;
mod corruption;
mod crash;
mod deadends;
mod drill;
mod environment;
mod faults;
mod fidelity;
mod fixture_v1;
mod fixture_v2;
mod forget;
mod format_vectors;
mod fuzz_corpus;
mod incremental;
mod keys;
mod layers;
mod liveness;
mod netfaults;
mod operations;
mod pipes;
mod prune;
mod recover;
mod repair;
mod restore_mechanics;
mod saver;
mod schedules;
mod signals;
mod sources;
mod speed_options;
mod staging;
mod stuck_store;
mod support;
mod sweeps;
