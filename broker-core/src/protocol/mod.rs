//! The Kafka wire protocol, without I/O: request framing and decoding, the served API versions,
//! and response encoding with zero-copy file ranges.

pub mod request;
pub mod response;
pub mod versions;

pub use request::{DecodeError, FrameError, Request, RequestBody, decode_request, frame_len};
pub use response::{Chunk, EncodeError, ResponseFrame, encode_response, file_placeholder};
