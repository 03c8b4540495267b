//! Bosun's wire types and gRPC stubs, generated from `proto/bosun/**` at build time, and the
//! encoded descriptor set (with `google.api.http` options) for reflection and transcoding.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The encoded `FileDescriptorSet` of every Bosun proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bosun_descriptor.bin"));

pub mod codec;

pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("bosun.auth.v1");
    }
}

pub mod audit {
    pub mod v1 {
        tonic::include_proto!("bosun.audit.v1");
    }
}

pub mod documents {
    pub mod v1 {
        tonic::include_proto!("bosun.documents.v1");
    }
}

pub mod parameters {
    pub mod v1 {
        tonic::include_proto!("bosun.parameters.v1");
    }
}

pub mod notifications {
    pub mod v1 {
        tonic::include_proto!("bosun.notifications.v1");
    }
}

pub mod agent {
    pub mod v1 {
        tonic::include_proto!("bosun.agent.v1");
    }
}

pub mod inventory {
    pub mod v1 {
        tonic::include_proto!("bosun.inventory.v1");
    }
}

pub mod commands {
    pub mod v1 {
        tonic::include_proto!("bosun.commands.v1");
    }
}

pub mod sessions {
    pub mod v1 {
        tonic::include_proto!("bosun.sessions.v1");
    }
}
