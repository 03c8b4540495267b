//! The codec of the agent channel: prost with small initial buffers.
//!
//! tonic gives every stream an 8 KiB encode and an 8 KiB decode buffer up front. An agent's
//! stream lives for days and carries a heartbeat a minute, and a gateway holds a hundred
//! thousand of them, so those two buffers alone would be 1.6 GB. Here they start at 512 bytes
//! and grow (as `BytesMut` does) only for the messages that need it.

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial size of a stream's encode and decode buffers.
pub const LEAN_BUFFER_SIZE: usize = 512;
/// tonic's default: how much a sender encodes before it yields to the runtime.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(LEAN_BUFFER_SIZE, YIELD_THRESHOLD)
}

/// [`tonic_prost::ProstCodec`] with [`LEAN_BUFFER_SIZE`] buffers; `AgentChannel`'s generated
/// client and server use it (set in build.rs).
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U> {
    _types: std::marker::PhantomData<(T, U)>,
}

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec {
            _types: std::marker::PhantomData,
        }
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
