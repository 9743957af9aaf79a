//! Compression of archived WAL and base backups. zstd by default; lz4 and gzip for users who already
//! chose them for WAL-G (`WALG_COMPRESSION_METHOD`). The codec is stored with each object, so changing
//! the setting never makes older objects unreadable.

use std::pin::Pin;
use std::str::FromStr;

use async_compression::tokio::bufread::{
    GzipDecoder, GzipEncoder, Lz4Decoder, Lz4Encoder, ZstdDecoder, ZstdEncoder,
};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt};
use tokio::runtime::Handle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Lz4,
    Gzip,
}

impl FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "zstd" => Ok(Codec::Zstd),
            "lz4" => Ok(Codec::Lz4),
            "gzip" | "gz" => Ok(Codec::Gzip),
            other => Err(format!("{other:?} is not supported; use zstd, lz4 or gzip")),
        }
    }
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
            Codec::Gzip => "gzip",
        }
    }

    pub fn encoder<'a>(
        self,
        input: impl AsyncBufRead + Send + 'a,
    ) -> Pin<Box<dyn AsyncRead + Send + 'a>> {
        match self {
            Codec::Zstd => Box::pin(ZstdEncoder::new(input)),
            Codec::Lz4 => Box::pin(Lz4Encoder::new(input)),
            Codec::Gzip => Box::pin(GzipEncoder::new(input)),
        }
    }

    pub fn decoder<'a>(
        self,
        input: impl AsyncBufRead + Send + 'a,
    ) -> Pin<Box<dyn AsyncRead + Send + 'a>> {
        match self {
            Codec::Zstd => Box::pin(ZstdDecoder::new(input)),
            Codec::Lz4 => Box::pin(Lz4Decoder::new(input)),
            Codec::Gzip => Box::pin(GzipDecoder::new(input)),
        }
    }

    /// `data` compressed at once, for a whole file in memory (a WAL segment) that must not hold up the event
    /// loop: call it on a blocking-pool thread (on a runtime's own thread it panics). The input never waits
    /// on I/O, so the runtime's handle drives the same encoder as [`Codec::encoder`]: the same bytes.
    pub fn compress(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        #[cfg(test)]
        hold::reached(data);
        let mut out = Vec::with_capacity(data.len() / 4);
        Handle::current().block_on(self.encoder(data).read_to_end(&mut out))?;
        Ok(out)
    }

    /// `data` decompressed, blocking the calling thread, like [`Codec::compress`].
    pub fn decompress(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        #[cfg(test)]
        hold::reached(data);
        let mut out = Vec::new();
        Handle::current().block_on(self.decoder(data).read_to_end(&mut out))?;
        Ok(out)
    }
}

/// Stops a (de)compression of chosen content until the test releases it: what the event loop does while
/// a WAL file is being compressed is then observed deterministically, not by timing.
#[cfg(test)]
pub mod hold {
    use std::sync::{Arc, Condvar, Mutex, Weak};
    use std::time::Duration;

    /// How long a held (de)compression waits to be released: it bounds only how long a test that
    /// never releases it (its event loop blocked by this very wait) takes to fail.
    const PATIENCE: Duration = Duration::from_secs(20);

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum State {
        Armed,
        Held,
        Released,
        GaveUp,
    }

    pub struct Hold {
        input: Vec<u8>,
        state: Mutex<State>,
        changed: Condvar,
    }

    static HOLDS: Mutex<Vec<Weak<Hold>>> = Mutex::new(Vec::new());

    /// Holds the next (de)compression whose input is exactly `input`, for as long as the result lives.
    pub fn on(input: &[u8]) -> Arc<Hold> {
        let hold = Arc::new(Hold {
            input: input.to_vec(),
            state: Mutex::new(State::Armed),
            changed: Condvar::new(),
        });
        HOLDS.lock().unwrap().push(Arc::downgrade(&hold));
        hold
    }

    pub(super) fn reached(input: &[u8]) {
        let hold = HOLDS
            .lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .find(|h| h.input == input);
        let Some(hold) = hold else { return };
        let mut state = hold.state.lock().unwrap();
        if *state != State::Armed {
            return;
        }
        *state = State::Held;
        hold.changed.notify_all();
        let (mut state, waited) = hold
            .changed
            .wait_timeout_while(state, PATIENCE, |s| *s == State::Held)
            .unwrap();
        if waited.timed_out() {
            *state = State::GaveUp;
        }
    }

    impl Hold {
        /// Whether the (de)compression has started (it may have given up waiting since).
        pub fn reached(&self) -> bool {
            *self.state.lock().unwrap() != State::Armed
        }

        /// Lets the held (de)compression go on. False when it was not waiting any more: it gave up, so
        /// whatever the test did meanwhile happened only after the (de)compression.
        pub fn release(&self) -> bool {
            let mut state = self.state.lock().unwrap();
            let held = *state == State::Held;
            *state = State::Released;
            self.changed.notify_all();
            held
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn round_trips_every_codec() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
            let mut compressed = Vec::new();
            codec
                .encoder(&data[..])
                .read_to_end(&mut compressed)
                .await
                .unwrap();
            assert!(compressed.len() < data.len() / 2, "{codec:?} compresses");
            let mut back = Vec::new();
            codec
                .decoder(&compressed[..])
                .read_to_end(&mut back)
                .await
                .unwrap();
            assert_eq!(back, data, "{codec:?} round-trips");
            let (whole, restored) = {
                let (data, compressed) = (data.clone(), compressed.clone());
                tokio::task::spawn_blocking(move || {
                    (codec.compress(&data), codec.decompress(&compressed))
                })
                .await
                .unwrap()
            };
            assert_eq!(
                whole.unwrap(),
                compressed,
                "{codec:?}: the same bytes as the stream"
            );
            assert_eq!(restored.unwrap(), data, "{codec:?} decompresses whole");
            assert_eq!(codec.name().parse::<Codec>().unwrap(), codec);
        }
    }
}
