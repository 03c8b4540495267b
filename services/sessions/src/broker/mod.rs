//! The session broker (H2): `SessionData.Connect` and `SessionData.Attach`.

/// Serves `bosun.sessions.v1.SessionData` on a gateway replica.
#[derive(Clone)]
pub struct Broker {}
