//! placeholder: see the crate owner issue (threat-intel feeds).
