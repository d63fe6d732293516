//! Request bodies: read within a byte budget shared by all requests in flight, then decoded
//! per `Content-Encoding` (gzip, deflate, br, zstd) with the decoded size capped, so neither a
//! large upload nor a decompression bomb can take more memory than the limits allow.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use std::io::Read;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    #[error("unsupported content encoding {0:?}")]
    UnsupportedEncoding(String),
    #[error("the body is not valid {encoding}: {message}")]
    Corrupt {
        encoding: &'static str,
        message: String,
    },
    #[error("reading the body failed: {0}")]
    Read(String),
}

/// Bytes of request bodies held at once, across requests. A request waits for room.
#[derive(Clone)]
pub struct Budget {
    bytes: Arc<Semaphore>,
}

/// Room taken from the budget; given back when dropped.
pub struct Held {
    pub permits: Vec<OwnedSemaphorePermit>,
}

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        Budget {
            bytes: Arc::new(Semaphore::new(bytes.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// Takes `n` bytes of room (waiting for it) and keeps them in `held`.
    pub async fn take(
        &self,
        n: usize,
        held: &mut Vec<OwnedSemaphorePermit>,
    ) -> Result<(), BodyError> {
        let mut left = n;
        while left > 0 {
            let step = left.min(u32::MAX as usize);
            let permit = Arc::clone(&self.bytes)
                .acquire_many_owned(step as u32)
                .await
                .map_err(|_| BodyError::Read("shutting down".into()))?;
            held.push(permit);
            left -= step;
        }
        Ok(())
    }
}

/// A body read whole, with the budget it holds.
pub struct Received {
    pub bytes: Bytes,
    pub held: Held,
}

/// Reads `body` up to `limit` bytes (`what` names it in the error), taking room from `budget`
/// as data arrives.
pub async fn read(
    body: axum::body::Body,
    content_length: Option<usize>,
    limit: usize,
    what: &'static str,
    budget: &Budget,
) -> Result<Received, BodyError> {
    let mut body = body;
    let mut held = Vec::new();
    // A declared length is refused at once when too large, and reserved whole before reading,
    // so concurrent large uploads never hold part of the budget while waiting for the rest.
    let reserved = match content_length {
        Some(n) if n > limit => return Err(BodyError::TooLarge { what, limit }),
        Some(n) => {
            budget.take(n, &mut held).await?;
            n
        }
        None => 0,
    };
    let mut buf = BytesMut::with_capacity(reserved);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(BodyError::TooLarge { what, limit });
        }
        let beyond = (buf.len() + data.len()).saturating_sub(reserved.max(buf.len()));
        budget.take(beyond, &mut held).await?;
        buf.extend_from_slice(&data);
    }
    Ok(Received {
        bytes: buf.freeze(),
        held: Held { permits: held },
    })
}

/// The encodings a body can be sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Encoding {
    /// Parses a `Content-Encoding` header (absent or empty = identity).
    pub fn parse(header: Option<&str>) -> Result<Encoding, BodyError> {
        let value = header.unwrap_or("").trim().to_ascii_lowercase();
        Ok(match value.as_str() {
            "" | "identity" => Encoding::Identity,
            "gzip" | "x-gzip" => Encoding::Gzip,
            "deflate" => Encoding::Deflate,
            "br" => Encoding::Brotli,
            "zstd" => Encoding::Zstd,
            _ => return Err(BodyError::UnsupportedEncoding(value)),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

/// Decodes `bytes` sent in `encoding`, refusing output beyond `limit` bytes (`what` names it).
/// Blocking: large bodies should be decoded off the async workers.
pub fn decode(
    bytes: Bytes,
    encoding: Encoding,
    limit: usize,
    what: &'static str,
) -> Result<Bytes, BodyError> {
    let corrupt = |e: std::io::Error| BodyError::Corrupt {
        encoding: encoding.name(),
        message: e.to_string(),
    };
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Identity => {
            if bytes.len() > limit {
                return Err(BodyError::TooLarge { what, limit });
            }
            return Ok(bytes);
        }
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&bytes[..])),
        Encoding::Deflate => {
            // HTTP's "deflate" is zlib-wrapped; some clients send the raw stream.
            if looks_like_zlib(&bytes) {
                Box::new(flate2::read::ZlibDecoder::new(&bytes[..]))
            } else {
                Box::new(flate2::read::DeflateDecoder::new(&bytes[..]))
            }
        }
        Encoding::Brotli => Box::new(brotli_decompressor::Decompressor::new(
            &bytes[..],
            16 * 1024,
        )),
        Encoding::Zstd => Box::new(zstd::stream::read::Decoder::new(&bytes[..]).map_err(corrupt)?),
    };
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() > limit {
        return Err(BodyError::TooLarge { what, limit });
    }
    Ok(Bytes::from(out))
}

/// A zlib header: deflate method, window ≤ 32 KiB, and the check bits.
fn looks_like_zlib(b: &[u8]) -> bool {
    b.len() >= 2
        && b[0] & 0x0f == 8
        && b[0] >> 4 <= 7
        && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap_or_else(|e| panic!("{e}"));
        e.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_encoding_decodes() {
        let data = b"{\"message\":\"hello\"}".repeat(50);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap_or_else(|e| panic!("{e}"));
        let zlib = z.finish().unwrap_or_else(|e| panic!("{e}"));
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(&data).unwrap_or_else(|e| panic!("{e}"));
        let raw = d.finish().unwrap_or_else(|e| panic!("{e}"));
        let zstd = zstd::encode_all(&data[..], 3).unwrap_or_else(|e| panic!("{e}"));
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&data).unwrap_or_else(|e| panic!("{e}"));
        }
        for (encoding, body) in [
            (Encoding::Identity, data.clone()),
            (Encoding::Gzip, gzip(&data)),
            (Encoding::Deflate, zlib),
            (Encoding::Deflate, raw),
            (Encoding::Zstd, zstd),
            (Encoding::Brotli, br),
        ] {
            let out = decode(Bytes::from(body), encoding, 1 << 20, "body")
                .unwrap_or_else(|e| panic!("{encoding:?}: {e}"));
            assert_eq!(&out[..], &data[..], "{encoding:?}");
        }
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 100 << 10, "{}", bomb.len());
        let r = decode(Bytes::from(bomb), Encoding::Gzip, 1 << 20, "envelope");
        assert!(
            matches!(r, Err(BodyError::TooLarge { limit, .. }) if limit == 1 << 20),
            "{r:?}"
        );
    }

    #[test]
    fn corrupt_and_unknown_encodings_are_refused() {
        assert!(matches!(
            decode(Bytes::from_static(b"not gzip"), Encoding::Gzip, 100, "x"),
            Err(BodyError::Corrupt { .. })
        ));
        assert!(matches!(
            Encoding::parse(Some("compress")),
            Err(BodyError::UnsupportedEncoding(_))
        ));
        assert_eq!(Encoding::parse(Some(" GZIP ")).ok(), Some(Encoding::Gzip));
        assert_eq!(Encoding::parse(None).ok(), Some(Encoding::Identity));
    }
}
