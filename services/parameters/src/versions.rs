//! Version retention: SSM keeps 100 versions; a write beyond that drops the oldest, unless
//! the oldest carries a label, in which case the write fails.

use bosun_core::error::ApiError;

use crate::error::PARAMETER_MAX_VERSION_LIMIT_EXCEEDED;

/// Versions kept per parameter.
pub const MAX_VERSIONS: usize = 100;

/// The number the next write gets: 1 on create, then one more than the latest.
pub fn next_version(latest: Option<u64>) -> u64 {
    latest.map_or(1, |latest| latest.saturating_add(1))
}

/// Given the stored versions of parameter `name` as (version, number of labels), returns the
/// versions a new write must drop so that 100 remain, oldest first, or
/// `ParameterMaxVersionLimitExceeded` when one of them carries a label.
///
/// Normally at most one version is dropped; more only if the store already holds over 99.
pub fn versions_to_drop(
    name: &str,
    versions: impl IntoIterator<Item = (u64, usize)>,
) -> Result<Vec<u64>, ApiError> {
    let mut versions: Vec<(u64, usize)> = versions.into_iter().collect();
    // After the write there will be len + 1 versions.
    let excess = (versions.len() + 1).saturating_sub(MAX_VERSIONS);
    if excess == 0 {
        return Ok(Vec::new());
    }
    versions.sort_unstable_by_key(|(version, _)| *version);
    let mut drop = Vec::with_capacity(excess);
    for (version, label_count) in versions.into_iter().take(excess) {
        if label_count > 0 {
            return Err(ApiError::failed_precondition(format!(
                "parameter {name}: the oldest version {version} carries a label and would be dropped to keep {MAX_VERSIONS} versions; move or remove its labels first"
            ))
            .with_reason(PARAMETER_MAX_VERSION_LIMIT_EXCEEDED));
        }
        drop.push(version);
    }
    Ok(drop)
}
