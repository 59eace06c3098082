//! One client connection: read size-prefixed frames, answer each request in order, and write the
//! response — in-memory chunks with `write_all`, file ranges with `sendfile`.
//!
//! A frame whose size prefix is not positive or over the limit, an unknown API, or a body that does
//! not decode closes the connection (ApiVersions of an unsupported version is answered with
//! UNSUPPORTED_VERSION first, as Kafka does). The broker itself carries on.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::{Buf, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

use crate::broker::Broker;
use crate::log::{FileSlice, now_ms};
use crate::protocol::{
    Chunk, DecodeError, ResponseFrame, decode_request, encode_response, frame_len,
};

/// Reads frames for one connection, reusing one buffer.
struct FrameReader {
    buf: BytesMut,
    max: usize,
}

impl FrameReader {
    /// The next frame, or `None` at a clean end of stream. Cancel-safe: bytes read stay buffered.
    async fn next(&mut self, stream: &mut TcpStream) -> io::Result<Option<bytes::Bytes>> {
        loop {
            if let Some(prefix) = self.buf.first_chunk::<4>() {
                let len = frame_len(*prefix, self.max)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
                self.buf.reserve(4 + len - self.buf.len());
            } else if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            if stream.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-frame",
                    ))
                };
            }
        }
    }
}

/// Serves one connection until the peer closes it, it misbehaves, or the broker shuts down.
pub(crate) async fn serve(
    mut stream: TcpStream,
    broker: Arc<Broker>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let peer = stream.peer_addr().ok();
    let client_host = peer.map_or_else(String::new, |p| format!("/{}", p.ip()));
    let _ = stream.set_nodelay(true);
    crate::broker::metrics::connections(1.0);
    serve_frames(&mut stream, &broker, &mut shutdown, peer, &client_host).await;
    crate::broker::metrics::connections(-1.0);
}

async fn serve_frames(
    stream: &mut TcpStream,
    broker: &Broker,
    shutdown: &mut broadcast::Receiver<()>,
    peer: Option<std::net::SocketAddr>,
    client_host: &str,
) {
    let mut reader = FrameReader {
        buf: BytesMut::with_capacity(64 * 1024),
        max: broker.config().max_request_bytes,
    };
    loop {
        let frame = tokio::select! {
            frame = reader.next(stream) => frame,
            _ = shutdown.recv() => return,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                crate::broker::metrics::bad_request("frame");
                log_bad_input(peer, &e);
                return;
            }
        };
        let started = std::time::Instant::now();
        let bytes_in = frame.len() + 4;
        let mut api = "ApiVersions";
        let response = match decode_request(frame) {
            Ok(request) => {
                api = crate::protocol::versions::name(request.api_key);
                match broker.handle(request, client_host).await {
                    Ok(response) => response,
                    Err(e) => {
                        tracing::error!(?peer, error = %e, "could not encode a response; closing the connection");
                        return;
                    }
                }
            }
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => {
                let body =
                    crate::broker::api_versions_error(ResponseError::UnsupportedVersion.code());
                encode_response(ApiKey::ApiVersions, 0, correlation_id, &body, vec![]).ok()
            }
            Err(e) => {
                crate::broker::metrics::bad_request(match e {
                    DecodeError::TooShort(_) | DecodeError::Malformed { .. } => "malformed",
                    DecodeError::UnknownApi { .. } => "unknown_api",
                    DecodeError::UnsupportedVersion { .. } => "unsupported_version",
                });
                log_bad_input(peer, &e);
                return;
            }
        };
        let bytes_out = response.as_ref().map_or(0, ResponseFrame::len);
        crate::broker::metrics::request(api, started.elapsed(), bytes_in, bytes_out);
        if let Some(response) = response
            && let Err(e) = write_response(stream, &response).await
        {
            tracing::debug!(?peer, error = %e, "write failed; closing the connection");
            return;
        }
    }
}

/// Logs bad input from a peer at most once a second at warn level (the rest at debug), so a
/// flood of garbage cannot flood the log.
fn log_bad_input(peer: Option<std::net::SocketAddr>, error: &dyn std::fmt::Display) {
    static LAST_WARN_MS: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let last = LAST_WARN_MS.load(Ordering::Relaxed);
    if now - last >= 1000
        && LAST_WARN_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(?peer, %error, "bad request; closing the connection");
    } else {
        tracing::debug!(?peer, %error, "bad request; closing the connection");
    }
}

async fn write_response(stream: &mut TcpStream, response: &ResponseFrame) -> io::Result<()> {
    for chunk in &response.chunks {
        match chunk {
            Chunk::Bytes(bytes) => stream.write_all(bytes).await?,
            Chunk::File(slice) => send_file(stream, slice).await?,
        }
    }
    Ok(())
}

/// Sends a file range with `sendfile(2)`: the kernel copies page cache to socket directly.
async fn send_file(stream: &mut TcpStream, slice: &FileSlice) -> io::Result<()> {
    let mut offset = libc::off_t::try_from(slice.position).map_err(io::Error::other)?;
    let mut remaining = usize::try_from(slice.len).map_err(io::Error::other)?;
    let file_fd = slice.file.as_raw_fd();
    let socket_fd = stream.as_raw_fd();
    while remaining > 0 {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the duration of the call (the stream and the
            // `Arc<File>` are borrowed), and `offset` is a valid pointer to a local.
            let n = unsafe { libc::sendfile(socket_fd, file_fd, &mut offset, remaining) };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file shorter than its index",
                ));
            }
            Ok(n) => remaining -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
