//! placeholder: see the crate's owner issue.
