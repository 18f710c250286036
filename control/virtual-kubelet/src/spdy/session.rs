//! One SPDY session over an upgraded connection, server side: the peer
//! opens streams (odd ids, increasing), this side answers each with a
//! SYN_REPLY and writes and finishes it; PINGs are answered; a GOAWAY stops
//! new streams. One task reads, one writes (owning each direction's zlib
//! context); streams hand data over through bounded queues.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    sync::{mpsc, watch, Notify},
};

use super::{
    frame::{self, rst, Frame, FLAG_FIN, SETTINGS_INITIAL_WINDOW_SIZE},
    headers::{HeaderDeflater, HeaderInflater, Headers},
    SpdyError,
};

/// The largest frame payload accepted (Kubernetes' peers write what one
/// 32 KiB `io.Copy` read gives them).
pub const MAX_FRAME_PAYLOAD: usize = 1024 * 1024;
/// The largest DATA frame this side writes.
const MAX_CHUNK: usize = 32 * 1024;
/// Data frames buffered per stream before reading the connection pauses.
const STREAM_QUEUE: usize = 8;
/// Streams open at once; more are refused.
const MAX_STREAMS: usize = 256;
/// The windows both sides start with (SPDY/3.1 for streams and session).
const INITIAL_WINDOW: i64 = 64 * 1024;
/// How long a sender whose window ran out waits for a first WINDOW_UPDATE
/// before deciding the peer keeps no windows.
const WINDOW_GRACE: Duration = Duration::from_millis(250);

/// A stream the peer opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// What the peer sends; ends when it finishes or resets the stream,
    /// or the session ends.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

impl Stream {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// This side's half of a stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    outgoing: mpsc::Sender<Frame>,
    flow: Arc<Flow>,
}

impl StreamWriter {
    async fn queue(&self, frame: Frame) -> Result<(), SpdyError> {
        self.outgoing
            .send(frame)
            .await
            .map_err(|_| SpdyError::Closed)
    }

    /// Accepts the stream (SYN_REPLY, no headers, as the kubelet does).
    pub async fn reply(&self) -> Result<(), SpdyError> {
        self.queue(Frame::SynReply {
            stream_id: self.id,
            flags: 0,
            headers: Vec::new(),
        })
        .await
    }

    /// Sends `data`, in frames the peer's windows allow.
    pub async fn send(&self, mut data: Bytes) -> Result<(), SpdyError> {
        while !data.is_empty() {
            let allowed = self
                .flow
                .acquire(self.id, data.len().min(MAX_CHUNK))
                .await?;
            let chunk = data.split_to(allowed);
            self.queue(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Ends this side of the stream (an empty DATA frame with FIN).
    pub async fn finish(&self) -> Result<(), SpdyError> {
        if !self.flow.forget(self.id) {
            return Ok(());
        }
        self.queue(Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }
}

/// A session: streams the peer opens, until it goes away. Dropping it
/// stops the reading; what was queued is still written, and the connection
/// closes once every stream's writer is gone.
pub struct Session {
    incoming: mpsc::Receiver<Stream>,
    /// Dropped: the reader stops.
    _stop: watch::Sender<bool>,
}

impl Session {
    /// Runs a session over `io` (after the upgrade).
    pub fn start<IO>(io: IO) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(io);
        let (outgoing, outgoing_rx) = mpsc::channel(64);
        let (incoming_tx, incoming) = mpsc::channel(16);
        let (stop, stopped) = watch::channel(false);
        let flow = Arc::new(Flow::default());
        tokio::spawn(async move {
            if let Err(error) = write_loop(writer, outgoing_rx).await {
                tracing::debug!(%error, "SPDY session: writing ended");
            }
        });
        let reading = Reader {
            incoming: incoming_tx,
            outgoing,
            flow,
            last_stream: Arc::new(Mutex::new(0)),
            streams: HashMap::new(),
            session_unacked: 0,
            going_away: false,
        };
        tokio::spawn(reading.run(reader, stopped));
        Self {
            incoming,
            _stop: stop,
        }
    }

    /// The next stream the peer opens; `None` once it cannot open more.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut outgoing: mpsc::Receiver<Frame>,
) -> Result<(), SpdyError> {
    let mut deflater = HeaderDeflater::new()?;
    let mut buffer = BytesMut::with_capacity(MAX_CHUNK + 64);
    while let Some(first) = outgoing.recv().await {
        frame::encode(&first, &mut deflater, &mut buffer)?;
        // What else is queued goes out in the same write.
        while buffer.len() < 4 * MAX_CHUNK {
            let Ok(next) = outgoing.try_recv() else {
                break;
            };
            frame::encode(&next, &mut deflater, &mut buffer)?;
        }
        writer.write_all(&buffer).await?;
        writer.flush().await?;
        buffer.clear();
    }
    writer.shutdown().await?;
    Ok(())
}

/// What the reader keeps of a stream the peer still sends on.
struct Receiving {
    data: mpsc::Sender<Bytes>,
    unacked: usize,
}

struct Reader {
    incoming: mpsc::Sender<Stream>,
    outgoing: mpsc::Sender<Frame>,
    flow: Arc<Flow>,
    last_stream: Arc<Mutex<u32>>,
    streams: HashMap<u32, Receiving>,
    session_unacked: usize,
    going_away: bool,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, reader: R, mut stopped: watch::Receiver<bool>) {
        let flow = self.flow.clone();
        let outgoing = self.outgoing.clone();
        let last_stream = self.last_stream.clone();
        let result = tokio::select! {
            result = self.read(reader) => result,
            _ = stopped.changed() => Ok(()),
        };
        if let Err(error) = result {
            tracing::info!(%error, "SPDY session ended by a bad frame");
            let last_good_stream_id = *last_stream.lock().unwrap_or_else(|p| p.into_inner());
            let _ = outgoing.try_send(Frame::GoAway {
                last_good_stream_id,
                status: 1,
            });
        }
        flow.close();
    }

    async fn send(&self, frame: Frame) -> Result<(), SpdyError> {
        self.outgoing
            .send(frame)
            .await
            .map_err(|_| SpdyError::Closed)
    }

    async fn reset(&self, stream_id: u32, status: u32) -> Result<(), SpdyError> {
        self.send(Frame::RstStream { stream_id, status }).await
    }

    async fn read<R: AsyncRead + Unpin>(&mut self, mut reader: R) -> Result<(), SpdyError> {
        let mut inflater = HeaderInflater::default();
        while let Some(frame) =
            frame::read_frame(&mut reader, &mut inflater, MAX_FRAME_PAYLOAD).await?
        {
            match frame {
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                    ..
                } => self.open(stream_id, flags, headers).await?,
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => self.data(stream_id, flags, data).await?,
                Frame::RstStream { stream_id, .. } => {
                    self.streams.remove(&stream_id);
                    self.flow.forget(stream_id);
                }
                Frame::Settings { entries } => {
                    for (id, value) in entries {
                        if id == SETTINGS_INITIAL_WINDOW_SIZE {
                            self.flow.set_initial(i64::from(value));
                        }
                    }
                }
                // Odd ids are the peer's own pings, to be echoed.
                Frame::Ping { id } if id % 2 == 1 => self.send(Frame::Ping { id }).await?,
                Frame::GoAway { .. } => self.going_away = true,
                Frame::WindowUpdate { stream_id, delta } => {
                    self.flow.grant(stream_id, i64::from(delta))
                }
                Frame::Ping { .. }
                | Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::Unknown { .. } => {}
            }
        }
        Ok(())
    }

    async fn open(&mut self, stream_id: u32, flags: u8, headers: Headers) -> Result<(), SpdyError> {
        let last = *self.last_stream.lock().unwrap_or_else(|p| p.into_inner());
        if stream_id.is_multiple_of(2) || stream_id <= last {
            return Err(SpdyError::Protocol(format!(
                "the peer opened stream {stream_id} after {last} (client streams are odd and increasing)"
            )));
        }
        *self.last_stream.lock().unwrap_or_else(|p| p.into_inner()) = stream_id;
        if self.going_away || self.streams.len() >= MAX_STREAMS {
            return self.reset(stream_id, rst::REFUSED_STREAM).await;
        }
        let (data, data_rx) = mpsc::channel(STREAM_QUEUE);
        if flags & FLAG_FIN == 0 {
            self.streams
                .insert(stream_id, Receiving { data, unacked: 0 });
        }
        self.flow.open(stream_id);
        let stream = Stream {
            id: stream_id,
            headers,
            data: data_rx,
            writer: StreamWriter {
                id: stream_id,
                outgoing: self.outgoing.clone(),
                flow: self.flow.clone(),
            },
        };
        if self.incoming.send(stream).await.is_err() {
            // Nobody takes streams any more.
            self.streams.remove(&stream_id);
            self.flow.forget(stream_id);
            return self.reset(stream_id, rst::REFUSED_STREAM).await;
        }
        Ok(())
    }

    async fn data(&mut self, stream_id: u32, flags: u8, data: Bytes) -> Result<(), SpdyError> {
        let length = data.len();
        let half_window = usize::try_from(INITIAL_WINDOW / 2).unwrap_or(usize::MAX);
        self.session_unacked += length;
        if self.session_unacked >= half_window {
            let delta = u32::try_from(std::mem::take(&mut self.session_unacked)).unwrap_or(0);
            self.send(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            })
            .await?;
        }
        let Some(receiving) = self.streams.get_mut(&stream_id) else {
            // Finished, reset, or never opened.
            return self.reset(stream_id, rst::INVALID_STREAM).await;
        };
        if !data.is_empty() && receiving.data.send(data).await.is_err() {
            // The reader of the stream is gone: the rest is dropped.
            tracing::debug!(stream_id, "data for a stream nobody reads");
        }
        receiving.unacked += length;
        let fin = flags & FLAG_FIN != 0;
        if !fin && receiving.unacked >= half_window {
            let delta = u32::try_from(std::mem::take(&mut receiving.unacked)).unwrap_or(0);
            self.send(Frame::WindowUpdate { stream_id, delta }).await?;
        }
        if fin {
            self.streams.remove(&stream_id);
        }
        Ok(())
    }
}

/// The peer's windows: what this side may still send on each stream and
/// on the session.
#[derive(Default)]
struct Flow {
    state: Mutex<FlowState>,
    changed: Notify,
}

struct FlowState {
    initial: i64,
    session: i64,
    streams: HashMap<u32, i64>,
    /// Unknown until the peer sends a WINDOW_UPDATE or window setting
    /// (it keeps them) or lets a window run out without one (it does not).
    peer_keeps_windows: Option<bool>,
    closed: bool,
}

impl Default for FlowState {
    fn default() -> Self {
        Self {
            initial: INITIAL_WINDOW,
            session: INITIAL_WINDOW,
            streams: HashMap::new(),
            peer_keeps_windows: None,
            closed: false,
        }
    }
}

impl Flow {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlowState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, stream_id: u32) {
        let mut state = self.lock();
        let initial = state.initial;
        state.streams.insert(stream_id, initial);
    }

    /// Stops sending on `stream_id`; whether it was open.
    fn forget(&self, stream_id: u32) -> bool {
        let open = self.lock().streams.remove(&stream_id).is_some();
        self.changed.notify_waiters();
        open
    }

    fn grant(&self, stream_id: u32, delta: i64) {
        let mut state = self.lock();
        state.peer_keeps_windows = Some(true);
        if stream_id == 0 {
            state.session += delta;
        } else if let Some(window) = state.streams.get_mut(&stream_id) {
            *window += delta;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    fn set_initial(&self, initial: i64) {
        let mut state = self.lock();
        state.peer_keeps_windows = Some(true);
        let change = initial - state.initial;
        state.initial = initial;
        for window in state.streams.values_mut() {
            *window += change;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    /// Takes up to `wanted` bytes of the windows of `stream_id`, waiting
    /// while they are empty.
    async fn acquire(&self, stream_id: u32, wanted: usize) -> Result<usize, SpdyError> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let unknown = {
                let mut state = self.lock();
                if state.closed {
                    return Err(SpdyError::Closed);
                }
                let session = state.session;
                let keeps = state.peer_keeps_windows;
                let Some(window) = state.streams.get_mut(&stream_id) else {
                    return Err(SpdyError::StreamClosed(stream_id));
                };
                if keeps == Some(false) {
                    return Ok(wanted);
                }
                let available = (*window).min(session);
                if available > 0 {
                    let taken = usize::try_from(available).unwrap_or(usize::MAX).min(wanted);
                    let taken_i64 = i64::try_from(taken).unwrap_or(i64::MAX);
                    *window -= taken_i64;
                    state.session -= taken_i64;
                    return Ok(taken);
                }
                keeps.is_none()
            };
            if !unknown {
                changed.await;
                continue;
            }
            if tokio::time::timeout(WINDOW_GRACE, changed).await.is_err() {
                let mut state = self.lock();
                if state.peer_keeps_windows.is_none() {
                    tracing::debug!(
                        "the SPDY peer keeps no flow-control windows; sending without them"
                    );
                    state.peer_keeps_windows = Some(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

    /// The client's end of a session under test.
    struct Peer {
        reader: ReadHalf<DuplexStream>,
        writer: WriteHalf<DuplexStream>,
        inflater: HeaderInflater,
        deflater: HeaderDeflater,
    }

    impl Peer {
        fn start() -> (Self, Session) {
            let (client, server) = tokio::io::duplex(1 << 20);
            let (reader, writer) = tokio::io::split(client);
            let peer = Peer {
                reader,
                writer,
                inflater: HeaderInflater::default(),
                deflater: HeaderDeflater::new().expect("deflater"),
            };
            (peer, Session::start(server))
        }

        async fn send(&mut self, frame: Frame) {
            let mut out = BytesMut::new();
            frame::encode(&frame, &mut self.deflater, &mut out).expect("encode");
            self.writer.write_all(&out).await.expect("write");
        }

        async fn open(&mut self, stream_id: u32) {
            self.send(Frame::SynStream {
                stream_id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "stdout".into())],
            })
            .await;
        }

        /// The next frame, or `None` when none comes within `wait`.
        async fn next(&mut self, wait: Duration) -> Option<Frame> {
            tokio::time::timeout(
                wait,
                frame::read_frame(&mut self.reader, &mut self.inflater, MAX_FRAME_PAYLOAD),
            )
            .await
            .ok()
            .and_then(|f| f.expect("a well-formed frame"))
        }

        /// Data bytes of `stream_id` that arrive until `wait` passes quietly.
        async fn data_until_quiet(&mut self, stream_id: u32, wait: Duration) -> usize {
            let mut total = 0;
            while let Some(frame) = self.next(wait).await {
                if let Frame::Data {
                    stream_id: id,
                    data,
                    ..
                } = frame
                {
                    assert_eq!(id, stream_id);
                    total += data.len();
                }
            }
            total
        }
    }

    const BIG: usize = 200_000;

    async fn accept_and_send_big(session: &mut Session) -> tokio::task::JoinHandle<()> {
        let stream = session.accept().await.expect("a stream");
        assert_eq!(stream.header("streamtype"), Some("stdout"));
        stream.writer.reply().await.expect("reply");
        tokio::spawn(async move {
            let _ = stream.writer.send(Bytes::from(vec![7u8; BIG])).await;
        })
    }

    #[tokio::test]
    async fn a_peer_that_keeps_windows_is_never_overrun() {
        let (mut peer, mut session) = Peer::start();
        peer.open(1).await;
        // It keeps windows: it says so with an update.
        peer.send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 1,
        })
        .await;
        let _sender = accept_and_send_big(&mut session).await;
        let quiet = Duration::from_millis(600);
        let first = peer.data_until_quiet(1, quiet).await;
        assert_eq!(first, 64 * 1024, "the session window of 64 KiB, no more");
        for stream_id in [0, 1] {
            peer.send(Frame::WindowUpdate {
                stream_id,
                delta: BIG as u32,
            })
            .await;
        }
        let rest = peer.data_until_quiet(1, quiet).await;
        assert_eq!(first + rest, BIG, "the rest once the windows grew");
    }

    #[tokio::test]
    async fn a_peer_that_keeps_no_windows_is_not_waited_for() {
        let (mut peer, mut session) = Peer::start();
        peer.open(1).await;
        let _sender = accept_and_send_big(&mut session).await;
        let all = peer.data_until_quiet(1, Duration::from_secs(2)).await;
        assert_eq!(all, BIG, "everything, after one grace period");
    }

    #[tokio::test]
    async fn pings_are_answered_and_out_of_order_streams_end_the_session() {
        let (mut peer, mut session) = Peer::start();
        peer.send(Frame::Ping { id: 3 }).await;
        assert_eq!(
            peer.next(Duration::from_secs(5)).await,
            Some(Frame::Ping { id: 3 })
        );
        peer.open(5).await;
        let _first = session.accept().await.expect("stream 5");
        // Stream ids must grow.
        peer.open(3).await;
        assert!(matches!(
            peer.next(Duration::from_secs(5)).await,
            Some(Frame::GoAway {
                last_good_stream_id: 5,
                status: 1
            })
        ));
        assert!(
            session.accept().await.is_none(),
            "no more streams after a protocol error"
        );
    }
}
