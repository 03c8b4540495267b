//! The small core every Bosun server crate shares: API errors and their one mapping to gRPC
//! status codes, layered configuration loading, and ordered shutdown with named tasks.

pub mod config;
pub mod error;
pub mod lifecycle;
pub mod time;

pub use error::{ApiError, FieldViolation};
