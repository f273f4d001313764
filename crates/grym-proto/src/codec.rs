//! The codec of every grym contract: prost's, with smaller buffers.
//!
//! tonic's default gives each call an 8 KiB buffer per direction, which a
//! grym message (a task of a few hundred bytes, say) rarely needs: a call
//! through grymd pays four of them, each a trip through the allocator's
//! large-chunk path. These start at [`BUFFER_BYTES`] and grow as a bigger
//! message asks (an audio input, a long output), so nothing is limited.

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// A call's encode and decode buffers start this large.
pub const BUFFER_BYTES: usize = 1024;

/// tonic's own default: how much an encoder fills before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_BYTES`] buffers; the generated clients and
/// servers use it.
#[derive(Debug)]
pub struct GrymCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for GrymCodec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

impl<T, U> Codec for GrymCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
