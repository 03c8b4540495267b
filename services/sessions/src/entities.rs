//! The `sessions` table (H1).
