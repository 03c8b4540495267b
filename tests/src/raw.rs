//! Calling any gRPC method by path with raw bytes, and listing every method of Bosun's
//! descriptor set — so tests cover each new RPC without being edited.

use bytes::{Buf, BufMut};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// A codec that passes message bytes through untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// `/package.Service/Method` of every RPC in Bosun's descriptor set.
pub fn bosun_methods() -> anyhow::Result<Vec<String>> {
    let set = prost_types::FileDescriptorSet::decode(bosun_proto::FILE_DESCRIPTOR_SET)?;
    let mut methods = Vec::new();
    for file in set.file {
        let package = file.package();
        if !package.starts_with("bosun.") {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                methods.push(format!("/{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    methods.sort();
    Ok(methods)
}

/// Calls `path` with one empty message (as a stream, which fits every method kind) and
/// `metadata`; returns the status the call ended with (`Ok` as code Ok).
pub async fn call_empty(
    channel: Channel,
    path: &str,
    metadata: &[(&'static str, String)],
) -> anyhow::Result<tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let mut request = tonic::Request::new(futures::stream::iter(vec![Vec::<u8>::new()]));
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse()?);
    }
    let path: http::uri::PathAndQuery = path.parse()?;
    match grpc.streaming(request, path, RawCodec).await {
        // A streaming answer carries its status in the trailers: read to the end.
        Ok(response) => {
            let mut messages = response.into_inner();
            loop {
                match messages.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(tonic::Status::ok("")),
                    Err(status) => return Ok(status),
                }
            }
        }
        Err(status) => Ok(status),
    }
}
