//! The blob index: the local redb cache ([`cache`]) and its synchronisation with the remote index
//! objects, including recovery of packs that were uploaded but never indexed (a crashed backup).

pub mod cache;
pub mod marks;
