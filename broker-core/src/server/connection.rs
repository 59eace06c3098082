//! One client connection: read size-prefixed frames, answer each request in order, and write the
//! response — in-memory chunks with `write_all`, file ranges with `sendfile`.
//!
//! Requests are handled one after the other, in the order they arrive; but a produce that waits
//! for its fsync (`acks=all` with fsync durability) does not hold up the requests behind it:
//! up to [`MAX_IN_FLIGHT`] of them wait at once while the next requests are read and handled,
//! and the responses are written in request order, as the protocol requires. A client that
//! pipelines its produce requests (librdkafka and the Java client send up to five at once) gets
//! its batches appended back to back instead of one per fsync.
//!
//! A frame whose size prefix is not positive or over the limit, an unknown API, or a body that does
//! not decode closes the connection (ApiVersions of an unsupported version is answered with
//! UNSUPPORTED_VERSION first, as Kafka does). The broker itself carries on.

use std::collections::VecDeque;
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

use crate::broker::{Broker, Handled};
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

/// Produce requests of one connection whose fsync may be awaited at once (Kafka clients send up
/// to five per connection by default).
const MAX_IN_FLIGHT: usize = 8;

/// A request answered or being answered, in the connection's queue of responses.
struct InFlight<'a> {
    response: Handled<'a>,
    api: &'static str,
    started: std::time::Instant,
    bytes_in: usize,
}

/// What the connection loop does next.
enum Step<'a> {
    Frame(io::Result<Option<bytes::Bytes>>),
    Answered(InFlight<'a>),
    Shutdown,
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
    // Responses go out in request order; only produce requests waiting for their fsync can be
    // pending, and the next requests are read and handled meanwhile.
    let mut in_flight: VecDeque<InFlight<'_>> = VecDeque::new();
    loop {
        let step = tokio::select! {
            biased;
            done = answered(&mut in_flight), if !in_flight.is_empty() => Step::Answered(done),
            frame = reader.next(stream), if in_flight.len() < MAX_IN_FLIGHT => Step::Frame(frame),
            _ = shutdown.recv() => Step::Shutdown,
        };
        let frame = match step {
            Step::Shutdown => return,
            Step::Answered(done) => {
                if !send(stream, done, peer).await {
                    return;
                }
                continue;
            }
            Step::Frame(Ok(Some(frame))) => frame,
            Step::Frame(Ok(None)) => {
                // The peer is done sending (perhaps only half-closed): it still gets the
                // responses of what it sent.
                while !in_flight.is_empty() {
                    let done = answered(&mut in_flight).await;
                    if !send(stream, done, peer).await {
                        return;
                    }
                }
                return;
            }
            Step::Frame(Err(e)) => {
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
                broker.handle_pipelined(request, client_host).await
            }
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => {
                let body =
                    crate::broker::api_versions_error(ResponseError::UnsupportedVersion.code());
                Handled::Ready(Ok(encode_response(
                    ApiKey::ApiVersions,
                    0,
                    correlation_id,
                    &body,
                    vec![],
                )
                .ok()))
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
        let request = InFlight {
            response,
            api,
            started,
            bytes_in,
        };
        if in_flight.is_empty() && matches!(request.response, Handled::Ready(_)) {
            if !send(stream, request, peer).await {
                return;
            }
        } else {
            in_flight.push_back(request);
        }
    }
}

/// The oldest request of the queue once its response is ready (it stays queued until then, so
/// cancelling this loses nothing).
async fn answered<'a>(in_flight: &mut VecDeque<InFlight<'a>>) -> InFlight<'a> {
    if let Some(front) = in_flight.front_mut()
        && let Handled::Durable(wait) = &mut front.response
    {
        let frame = wait.await;
        front.response = Handled::Ready(frame);
    }
    match in_flight.pop_front() {
        Some(done) => done,
        None => std::future::pending().await,
    }
}

/// Writes one answered request's response (if it has one) and records its metrics. Returns
/// whether the connection can go on.
async fn send(
    stream: &mut TcpStream,
    done: InFlight<'_>,
    peer: Option<std::net::SocketAddr>,
) -> bool {
    let response = match done.response {
        Handled::Ready(Ok(response)) => response,
        Handled::Ready(Err(e)) => {
            tracing::error!(?peer, error = %e, "could not encode a response; closing the connection");
            return false;
        }
        Handled::Durable(_) => unreachable!("only answered requests are sent"),
    };
    let bytes_out = response.as_ref().map_or(0, ResponseFrame::len);
    crate::broker::metrics::request(done.api, done.started.elapsed(), done.bytes_in, bytes_out);
    if let Some(response) = response
        && let Err(e) = write_response(stream, &response).await
    {
        tracing::debug!(?peer, error = %e, "write failed; closing the connection");
        return false;
    }
    true
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
