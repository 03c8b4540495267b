//! Presence: node → gateway replica (being written).
