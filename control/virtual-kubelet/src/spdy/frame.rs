//! SPDY/3 frames: an 8-byte header (a control bit, then the version and
//! type of a control frame or the stream of a data frame; 8 bits of flags;
//! a 24-bit length) and the payload. Reading refuses what does not parse
//! with an error naming the frame; it never trusts a length further than
//! the limit it is given.

use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::{
    headers::{HeaderDeflater, HeaderInflater, Headers},
    SpdyError,
};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const STREAM_IN_USE: u32 = 8;
}

/// The SETTINGS id of the initial stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// `(id, value)` pairs; flags per entry are not kept.
    Settings {
        entries: Vec<(u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this side does not know (ignored, as the
    /// draft asks).
    Unknown {
        kind: u16,
    },
}

fn word(payload: &[u8], at: usize) -> Option<u32> {
    payload
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
}

/// Decodes one frame from its header and whole payload.
pub fn decode(
    header: [u8; 8],
    payload: Bytes,
    inflater: &mut HeaderInflater,
) -> Result<Frame, SpdyError> {
    let flags = header[4];
    if header[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if stream_id == 0 {
            return Err(SpdyError::Malformed {
                frame: "DATA",
                why: "stream 0".into(),
            });
        }
        return Ok(Frame::Data {
            stream_id,
            flags,
            data: payload,
        });
    }
    let version = u16::from_be_bytes([header[0] & 0x7f, header[1]]);
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    let kind = u16::from_be_bytes([header[2], header[3]]);
    let malformed = |frame: &'static str, why: &str| SpdyError::Malformed {
        frame,
        why: why.to_owned(),
    };
    let stream = |frame: &'static str| {
        word(&payload, 0)
            .map(|w| w & 0x7fff_ffff)
            .ok_or_else(|| malformed(frame, "too short for its stream id"))
    };
    let exact = |frame: &'static str, length: usize| {
        if payload.len() == length {
            Ok(())
        } else {
            Err(malformed(
                frame,
                &format!("{} bytes long, not {length}", payload.len()),
            ))
        }
    };
    Ok(match kind {
        SYN_STREAM => {
            if payload.len() < 10 {
                return Err(malformed("SYN_STREAM", "shorter than its fixed fields"));
            }
            let stream_id = stream("SYN_STREAM")?;
            if stream_id == 0 {
                return Err(malformed("SYN_STREAM", "stream 0"));
            }
            Frame::SynStream {
                stream_id,
                associated_to: word(&payload, 4).unwrap_or(0) & 0x7fff_ffff,
                priority: payload[8] >> 5,
                flags,
                headers: inflater.inflate(&payload[10..])?,
            }
        }
        SYN_REPLY | HEADERS => {
            let name = if kind == SYN_REPLY {
                "SYN_REPLY"
            } else {
                "HEADERS"
            };
            let stream_id = stream(name)?;
            let headers = inflater.inflate(&payload[4..])?;
            if kind == SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
        }
        RST_STREAM => {
            exact("RST_STREAM", 8)?;
            Frame::RstStream {
                stream_id: stream("RST_STREAM")?,
                status: word(&payload, 4).unwrap_or(0),
            }
        }
        SETTINGS => {
            let count = word(&payload, 0)
                .ok_or_else(|| malformed("SETTINGS", "too short for its entry count"))?;
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            if count.checked_mul(8).and_then(|n| n.checked_add(4)) != Some(payload.len()) {
                return Err(malformed(
                    "SETTINGS",
                    "its length does not match its entry count",
                ));
            }
            let entries = (0..count)
                .map(|i| {
                    let at = 4 + 8 * i;
                    (
                        word(&payload, at).unwrap_or(0) & 0x00ff_ffff,
                        word(&payload, at + 4).unwrap_or(0),
                    )
                })
                .collect();
            Frame::Settings { entries }
        }
        PING => {
            exact("PING", 4)?;
            Frame::Ping {
                id: word(&payload, 0).unwrap_or(0),
            }
        }
        GOAWAY => {
            exact("GOAWAY", 8)?;
            Frame::GoAway {
                last_good_stream_id: stream("GOAWAY")?,
                status: word(&payload, 4).unwrap_or(0),
            }
        }
        WINDOW_UPDATE => {
            exact("WINDOW_UPDATE", 8)?;
            let delta = word(&payload, 4).unwrap_or(0) & 0x7fff_ffff;
            if delta == 0 {
                return Err(malformed("WINDOW_UPDATE", "a delta of 0"));
            }
            Frame::WindowUpdate {
                stream_id: stream("WINDOW_UPDATE")?,
                delta,
            }
        }
        kind => Frame::Unknown { kind },
    })
}

/// Reads the next frame: `None` when the peer closed between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    inflater: &mut HeaderInflater,
    max_payload: usize,
) -> Result<Option<Frame>, SpdyError> {
    let mut header = [0u8; 8];
    let mut filled = 0;
    while filled < header.len() {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(SpdyError::Truncated("in a frame header"))
            };
        }
        filled += n;
    }
    let length = usize::try_from(u32::from_be_bytes([0, header[5], header[6], header[7]]))
        .unwrap_or(usize::MAX);
    if length > max_payload {
        return Err(SpdyError::TooLarge {
            length,
            limit: max_payload,
        });
    }
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            SpdyError::Truncated("in a frame payload")
        } else {
            SpdyError::Io(e)
        }
    })?;
    decode(header, Bytes::from(payload), inflater).map(Some)
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]) -> Result<(), SpdyError> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l < 1 << 24)
        .ok_or(SpdyError::TooLarge {
            length: payload.len(),
            limit: (1 << 24) - 1,
        })?;
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32(u32::from(flags) << 24 | length);
    out.put_slice(payload);
    Ok(())
}

/// Appends `frame` to `out`.
pub fn encode(
    frame: &Frame,
    deflater: &mut HeaderDeflater,
    out: &mut BytesMut,
) -> Result<(), SpdyError> {
    let two = |a: u32, b: u32| {
        let mut p = Vec::with_capacity(8);
        p.extend_from_slice(&a.to_be_bytes());
        p.extend_from_slice(&b.to_be_bytes());
        p
    };
    match frame {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            flags,
            headers,
        } => {
            let mut payload = two(*stream_id, *associated_to);
            payload.push(priority << 5);
            payload.push(0);
            payload.extend(deflater.deflate(headers)?);
            control(out, SYN_STREAM, *flags, &payload)
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        }
        | Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            let kind = if matches!(frame, Frame::SynReply { .. }) {
                SYN_REPLY
            } else {
                HEADERS
            };
            let mut payload = stream_id.to_be_bytes().to_vec();
            payload.extend(deflater.deflate(headers)?);
            control(out, kind, *flags, &payload)
        }
        Frame::RstStream { stream_id, status } => {
            control(out, RST_STREAM, 0, &two(*stream_id, *status))
        }
        Frame::Settings { entries } => {
            let mut payload = (entries.len() as u32).to_be_bytes().to_vec();
            for (id, value) in entries {
                payload.extend(two(*id & 0x00ff_ffff, *value));
            }
            control(out, SETTINGS, 0, &payload)
        }
        Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => control(out, GOAWAY, 0, &two(*last_good_stream_id, *status)),
        Frame::WindowUpdate { stream_id, delta } => {
            control(out, WINDOW_UPDATE, 0, &two(*stream_id, *delta))
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let length = u32::try_from(data.len())
                .ok()
                .filter(|l| *l < 1 << 24)
                .ok_or(SpdyError::TooLarge {
                    length: data.len(),
                    limit: (1 << 24) - 1,
                })?;
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32(u32::from(*flags) << 24 | length);
            out.put_slice(data);
            Ok(())
        }
        Frame::Unknown { kind } => control(out, *kind, 0, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                entries: vec![(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20), (4, 100)],
            },
            Frame::Ping { id: 5 },
            Frame::GoAway {
                last_good_stream_id: 7,
                status: 0,
            },
            Frame::Headers {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: vec![("a".into(), "b".into())],
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 65536,
            },
            Frame::Data {
                stream_id: 9,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"payload"),
            },
            Frame::Data {
                stream_id: 9,
                flags: 0,
                data: Bytes::new(),
            },
        ]
    }

    async fn read_all(bytes: &[u8]) -> Result<Vec<Frame>, SpdyError> {
        let mut reader = bytes;
        let mut inflater = HeaderInflater::default();
        let mut frames = Vec::new();
        while let Some(frame) = read_frame(&mut reader, &mut inflater, LIMIT).await? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn encode_all(frames: &[Frame]) -> BytesMut {
        let mut deflater = HeaderDeflater::new().expect("deflater");
        let mut out = BytesMut::new();
        for frame in frames {
            encode(frame, &mut deflater, &mut out).expect("encode");
        }
        out
    }

    #[tokio::test]
    async fn every_frame_survives_a_round_trip() {
        let frames = all_frames();
        let wire = encode_all(&frames);
        assert_eq!(read_all(&wire).await.expect("decode"), frames);
    }

    #[tokio::test]
    async fn the_wire_format_is_the_drafts() {
        let wire = encode_all(&[
            Frame::Ping { id: 0x0102_0304 },
            Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hi"),
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 0x10,
            },
        ]);
        assert_eq!(
            &wire[..],
            &[
                0x80, 3, 0, 6, 0, 0, 0, 4, 1, 2, 3, 4, // PING
                0, 0, 0, 5, 1, 0, 0, 2, b'h', b'i', // DATA with FIN
                0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 0x10, // WINDOW_UPDATE
            ][..]
        );
    }

    #[tokio::test]
    async fn malformed_and_hostile_input_is_an_error_not_a_panic() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("cut in the header", vec![0x80, 3, 0]),
            ("cut in the payload", vec![0x80, 3, 0, 6, 0, 0, 0, 4, 1, 2]),
            ("SPDY/2", vec![0x80, 2, 0, 6, 0, 0, 0, 4, 1, 2, 3, 4]),
            ("PING of 3 bytes", vec![0x80, 3, 0, 6, 0, 0, 0, 3, 1, 2, 3]),
            (
                "RST_STREAM of 4 bytes",
                vec![0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1],
            ),
            (
                "SETTINGS claiming 1000 entries",
                vec![0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 3, 0xe8],
            ),
            (
                "SYN_STREAM shorter than its fields",
                vec![0x80, 3, 0, 1, 0, 0, 0, 2, 0, 1],
            ),
            (
                "SYN_STREAM with a garbage header block",
                vec![
                    0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe,
                    0xef,
                ],
            ),
            ("DATA on stream 0", vec![0, 0, 0, 0, 0, 0, 0, 1, 7]),
            (
                "WINDOW_UPDATE of 0",
                vec![0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0],
            ),
            (
                "a length over the limit",
                vec![0, 0, 0, 1, 0, 0xff, 0xff, 0xff],
            ),
        ];
        for (what, bytes) in cases {
            assert!(read_all(&bytes).await.is_err(), "{what} is refused");
        }
        // Unknown control types are skipped, not fatal.
        let unknown = [0x80, 3, 0, 0x33, 0, 0, 0, 2, 1, 2];
        assert_eq!(
            read_all(&unknown).await.expect("ignored"),
            vec![Frame::Unknown { kind: 0x33 }]
        );
        // Every prefix of a valid exchange either parses or errors cleanly.
        let wire = encode_all(&all_frames());
        for cut in 0..wire.len() {
            let _ = read_all(&wire[..cut]).await;
        }
    }
}
