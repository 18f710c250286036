//! strait-controller's library: what the binary needs beyond the modules'
//! own crates.
pub mod leader;
