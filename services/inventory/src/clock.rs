//! The time, injectable so tests control expiry and ping status (shared with the Parameter
//! Store: `bosun_core::time`).

pub use bosun_core::time::{Clock, ManualClock, SystemClock};
