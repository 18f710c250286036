//! SPDY/3 header blocks: name/value pairs with 32-bit lengths, several
//! values of one name joined by NUL, compressed with zlib primed with the
//! SPDY/3 dictionary. Each direction of a session is one zlib stream that
//! every block continues (flushed with a sync flush), so the compressor
//! and decompressor live as long as the session.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use super::SpdyError;

/// The names and values of one header block, names lowercase, one entry
/// per value.
pub type Headers = Vec<(String, String)>;

/// The most header pairs one block may carry.
const MAX_PAIRS: u32 = 128;
/// The most bytes a block may inflate to.
const MAX_INFLATED: usize = 64 * 1024;

/// Words the SPDY/3 dictionary holds with a 32-bit length before each.
#[rustfmt::skip]
const DICTIONARY_WORDS: [&str; 65] = [
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type",
    "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
    "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
    "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
    "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
];

/// What follows the words in the dictionary, as is.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 zlib dictionary (section 2.6.10.1 of the draft).
pub fn dictionary() -> Vec<u8> {
    let mut out = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        out.extend_from_slice(&(word.len() as u32).to_be_bytes());
        out.extend_from_slice(word.as_bytes());
    }
    out.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    out
}

/// Compresses the header blocks one side of a session sends.
pub struct HeaderDeflater {
    zlib: Compress,
}

impl HeaderDeflater {
    pub fn new() -> Result<Self, SpdyError> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&dictionary())
            .map_err(|e| SpdyError::HeaderBlock(format!("priming the compressor: {e}")))?;
        Ok(Self { zlib })
    }

    /// `headers` serialized and compressed, continuing the session's stream.
    pub fn deflate(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        let plain = serialize(headers)?;
        let mut out = Vec::with_capacity(plain.len() / 2 + 64);
        let start_in = self.zlib.total_in();
        loop {
            let consumed = usize::try_from(self.zlib.total_in() - start_in).unwrap_or(usize::MAX);
            let input = plain.get(consumed..).unwrap_or_default();
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.zlib
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::HeaderBlock(format!("compressing: {e}")))?;
            let consumed = usize::try_from(self.zlib.total_in() - start_in).unwrap_or(usize::MAX);
            // Done once all input is in and the flush left room unused.
            if consumed >= plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Inflates the header blocks the peer sends.
pub struct HeaderInflater {
    zlib: Decompress,
}

impl Default for HeaderInflater {
    fn default() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }
}

impl HeaderInflater {
    /// The headers of one compressed block.
    pub fn inflate(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let corrupt = |why: String| SpdyError::HeaderBlock(why);
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let start_in = self.zlib.total_in();
        loop {
            let consumed = usize::try_from(self.zlib.total_in() - start_in).unwrap_or(usize::MAX);
            let input = block.get(consumed..).unwrap_or_default();
            if out.capacity() - out.len() < 256 {
                out.reserve(1024);
            }
            let before_out = out.len();
            match self
                .zlib
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(error) if error.needs_dictionary().is_some() => {
                    self.zlib.set_dictionary(&dictionary()).map_err(|e| {
                        corrupt(format!("the peer's dictionary is not SPDY/3's: {e}"))
                    })?;
                    continue;
                }
                Err(error) => return Err(corrupt(format!("inflating: {error}"))),
            }
            if out.len() > MAX_INFLATED {
                return Err(corrupt(format!(
                    "it inflates to more than {MAX_INFLATED} bytes"
                )));
            }
            let now_consumed =
                usize::try_from(self.zlib.total_in() - start_in).unwrap_or(usize::MAX);
            if now_consumed >= block.len() && out.len() < out.capacity() {
                break;
            }
            if now_consumed == consumed && out.len() == before_out {
                return Err(corrupt("the compressed block is cut short".into()));
            }
        }
        parse(&out)
    }
}

fn serialize(headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
    // Values of one name travel together, NUL-separated.
    let mut grouped: Vec<(String, Vec<&str>)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match grouped.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => grouped.push((name, vec![value])),
        }
    }
    let too_long = |what: &str| SpdyError::HeaderBlock(format!("{what} too long to send"));
    let mut out = Vec::new();
    let count = u32::try_from(grouped.len()).map_err(|_| too_long("header list"))?;
    out.extend_from_slice(&count.to_be_bytes());
    for (name, values) in grouped {
        let value = values.join("\0");
        for field in [name.as_bytes(), value.as_bytes()] {
            let length = u32::try_from(field.len()).map_err(|_| too_long("header"))?;
            out.extend_from_slice(&length.to_be_bytes());
            out.extend_from_slice(field);
        }
    }
    Ok(out)
}

fn parse(mut plain: &[u8]) -> Result<Headers, SpdyError> {
    let malformed = |why: &str| SpdyError::HeaderBlock(why.to_owned());
    let take_u32 = |plain: &mut &[u8]| -> Result<u32, SpdyError> {
        let (head, rest) = plain
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("a length runs past the end of the block"))?;
        *plain = rest;
        Ok(u32::from_be_bytes(*head))
    };
    let count = take_u32(&mut plain)?;
    if count > MAX_PAIRS {
        return Err(malformed("more header pairs than allowed"));
    }
    let mut headers = Vec::new();
    for _ in 0..count {
        let field = |plain: &mut &[u8]| -> Result<String, SpdyError> {
            let length = usize::try_from(take_u32(plain)?).unwrap_or(usize::MAX);
            if length > plain.len() {
                return Err(malformed("a header runs past the end of the block"));
            }
            let (text, rest) = plain.split_at(length);
            *plain = rest;
            String::from_utf8(text.to_vec()).map_err(|_| malformed("a header is not UTF-8"))
        };
        let name = field(&mut plain)?;
        if name.is_empty() {
            return Err(malformed("an empty header name"));
        }
        let value = field(&mut plain)?;
        let name = name.to_ascii_lowercase();
        for part in value.split('\0') {
            headers.push((name.clone(), part.to_owned()));
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_drafts() {
        let dictionary = dictionary();
        assert_eq!(dictionary.len(), 1423);
        assert_eq!(&dictionary[..11], b"\0\0\0\x07options");
        assert!(dictionary.ends_with(b",*,enq=0."));
    }

    #[test]
    fn blocks_survive_a_round_trip_in_one_zlib_stream() {
        let mut deflater = HeaderDeflater::new().expect("deflater");
        let mut inflater = HeaderInflater::default();
        let first: Headers = vec![
            ("streamType".into(), "stdin".into()),
            ("x".into(), "1".into()),
            ("x".into(), "2".into()),
        ];
        let second: Headers = vec![("port".into(), "8080".into())];
        let one = deflater.deflate(&first).expect("deflate");
        let two = deflater.deflate(&second).expect("deflate");
        let empty = deflater.deflate(&[]).expect("deflate");
        assert_eq!(
            inflater.inflate(&one).expect("inflate"),
            vec![
                ("streamtype".to_owned(), "stdin".to_owned()),
                ("x".into(), "1".into()),
                ("x".into(), "2".into())
            ]
        );
        assert_eq!(inflater.inflate(&two).expect("inflate"), second);
        assert_eq!(inflater.inflate(&empty).expect("inflate"), vec![]);
    }

    #[test]
    fn broken_blocks_are_errors() {
        let mut deflater = HeaderDeflater::new().expect("deflater");
        let block = deflater
            .deflate(&[("a".into(), "b".into())])
            .expect("deflate");
        // Garbage instead of zlib.
        assert!(HeaderInflater::default()
            .inflate(b"not zlib at all")
            .is_err());
        // Cut short.
        assert!(HeaderInflater::default()
            .inflate(&block[..block.len() / 2])
            .is_err());
        // A zlib stream primed with another dictionary.
        let mut other = Compress::new(Compression::default(), true);
        other.set_dictionary(b"another dictionary").expect("dict");
        let mut foreign = Vec::with_capacity(256);
        other
            .compress_vec(&[0, 0, 0, 0], &mut foreign, FlushCompress::Sync)
            .expect("compress");
        assert!(HeaderInflater::default().inflate(&foreign).is_err());
        // Well compressed, badly framed pairs.
        for plain in [
            &[0u8, 0, 0, 1, 0, 0, 0, 9, b'a'][..],
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xff, 0xff, 0xff, 0xff],
            &[0, 0],
        ] {
            let mut zlib = Compress::new(Compression::default(), true);
            zlib.set_dictionary(&dictionary()).expect("dict");
            let mut block = Vec::with_capacity(256);
            zlib.compress_vec(plain, &mut block, FlushCompress::Sync)
                .expect("compress");
            assert!(
                HeaderInflater::default().inflate(&block).is_err(),
                "{plain:?} is refused"
            );
        }
    }
}
