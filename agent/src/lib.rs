//! bosun-agent (being written).
