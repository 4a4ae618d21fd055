//! The Messenger protocol. Filled in by its own issue; see ARCHITECTURE.md.
#![forbid(unsafe_code)]
