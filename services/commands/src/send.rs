//! SendCommand: validation, per-node authorization and planning. H3 fills this in.
