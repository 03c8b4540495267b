//! SessionService (H1).

/// `bosun.sessions.v1.SessionService`.
pub struct SessionServiceImpl {}
