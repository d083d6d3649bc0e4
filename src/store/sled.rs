//! (in progress; only with --features sled)
