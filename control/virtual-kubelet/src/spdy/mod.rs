//! A small server side of SPDY/3.1, the multiplexing protocol the API
//! server speaks to kubelets for exec, attach and port-forward (the
//! connection is an HTTP/1.1 upgrade to `SPDY/3.1`; the client opens one
//! stream per channel). Written from the SPDY/3 and 3.1 drafts; how
//! Kubernetes' peers behave (moby/spdystream) decided the rest:
//! - frames: `frame` (codec), header blocks: `headers` (zlib with the
//!   SPDY/3 dictionary, one compression context per direction);
//! - sessions: `session` (stream bookkeeping, PING answers, GOAWAY,
//!   flow-control windows).
//!
//! Kubernetes' SPDY peers keep no flow-control windows: they never send
//! WINDOW_UPDATE and ignore ours. This side acknowledges what it receives
//! (so a peer that keeps windows never stalls), bounds what it buffers per
//! stream (a full stream stops the reading of the connection, which TCP
//! turns into backpressure), and honours the peer's send windows unless
//! the peer shows it keeps none (a window runs out and no WINDOW_UPDATE
//! comes within a short grace).

pub mod frame;
pub mod headers;
pub mod session;

pub use session::{Session, Stream, StreamWriter};

/// What ends a session or a stream.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("reading or writing the connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection ended {0}")]
    Truncated(&'static str),
    #[error("SPDY version {0} is not served (only 3)")]
    Version(u16),
    #[error("a frame of {length} bytes is larger than the {limit} allowed")]
    TooLarge { length: usize, limit: usize },
    #[error("malformed {frame} frame: {why}")]
    Malformed { frame: &'static str, why: String },
    #[error("header block: {0}")]
    HeaderBlock(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the SPDY session is closed")]
    Closed,
    #[error("stream {0} is closed or was reset")]
    StreamClosed(u32),
}
