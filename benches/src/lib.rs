//! cairn benchmark support.
