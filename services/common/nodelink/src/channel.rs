//! The gateway's half of `AgentChannel` (being written).
