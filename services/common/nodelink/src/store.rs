//! `node_messages` and `NodeLink` (being written).
