//! NodeService and ResourceGroupService (being written).
