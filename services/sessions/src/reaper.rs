//! The reaper (H1).

/// Ends sessions whose agent never attached or whose hub is gone.
pub struct Reaper {}
