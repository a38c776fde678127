//! Bandwidth limits (`--limit-upload`, `--limit-download`): a token bucket per direction,
//! shared by every concurrent request of the process, applied by [`RateLimitedStore`] around any
//! `object_store` store (local directory, S3, Azure, GCS alike).
//!
//! The bucket ([`TokenBucket`]) is pure: it is given the time, so tests drive it with a fake
//! clock. Waiting happens before a request, never in the middle of one: a request paused
//! half-way would look stalled to `backend/stall.rs`. An upload waits for its whole body (or,
//! in a multipart upload, for each part) before it starts; a ranged download waits for its
//! range; a download of unknown size first waits off what earlier ones took beyond the rate,
//! then charges its size, which the next download waits off. Over a transfer of many requests
//! the rate holds; a single request still moves at the link's speed.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

/// A token bucket measured in bytes: it fills at `rate` bytes per second up to a quarter of a
/// second's worth, and a transfer takes its size from it. Reservations may drive it below
/// zero; the reservation that does waits until the rate has paid for it, and so does every
/// later one, so concurrent requests queue in the order they asked. Integer arithmetic: a
/// reservation's wait is exact to the nanosecond, rounded up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: i128,
    /// Credit in byte-nanoseconds per second (bytes × 10^9): a nanosecond adds `rate`, a byte
    /// costs 10^9; negative when owed.
    credit: i128,
    /// Most credit the bucket holds: how much may move at once after an idle spell.
    burst: i128,
    /// When `credit` was last brought up to date, on the caller's clock.
    updated: Duration,
}

/// Nanoseconds in a second: the credit of one byte.
const BYTE: i128 = 1_000_000_000;

/// A full bucket holds the bytes of this many nanoseconds at the rate (a quarter second).
const BURST_NANOS: i128 = 250_000_000;

impl TokenBucket {
    /// A full bucket for `rate` bytes per second (at least 1) at time zero.
    pub fn new(rate: u64) -> Self {
        let rate = i128::from(rate.max(1));
        Self {
            rate,
            credit: rate * BURST_NANOS,
            burst: rate * BURST_NANOS,
            updated: Duration::ZERO,
        }
    }

    /// Takes `bytes` at time `now` (on a clock that never goes back; an earlier `now` counts
    /// as the last one) and returns how long the caller must wait before moving them.
    pub fn reserve(&mut self, now: Duration, bytes: u64) -> Duration {
        let now = now.max(self.updated);
        let elapsed = now.saturating_sub(self.updated).as_nanos();
        let elapsed = i128::try_from(elapsed).unwrap_or(i128::MAX / 4);
        self.credit = self
            .credit
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.burst);
        self.updated = now;
        self.credit -= i128::from(bytes) * BYTE;
        if self.credit >= 0 {
            return Duration::ZERO;
        }
        let owed = -self.credit;
        let nanos = (owed + self.rate - 1) / self.rate;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// A [`TokenBucket`] shared by concurrent requests, on the monotonic clock.
#[derive(Debug, Clone)]
pub struct SharedLimit {
    bucket: Arc<Mutex<TokenBucket>>,
    started: std::time::Instant,
}

impl SharedLimit {
    /// A limit of `rate` bytes per second.
    pub fn new(rate: u64) -> Self {
        Self {
            bucket: Arc::new(Mutex::new(TokenBucket::new(rate))),
            started: std::time::Instant::now(),
        }
    }

    /// Reserves `bytes` now; the wait the reservation costs.
    fn reserve(&self, bytes: u64) -> Duration {
        let now = self.started.elapsed();
        match self.bucket.lock() {
            Ok(mut bucket) => bucket.reserve(now, bytes),
            Err(poisoned) => poisoned.into_inner().reserve(now, bytes),
        }
    }

    /// Reserves `bytes` and waits until they may move.
    async fn take(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Bytes per second each way; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    /// Limit of uploads (puts and multipart parts).
    pub upload: Option<u64>,
    /// Limit of downloads (whole and ranged gets).
    pub download: Option<u64>,
}

/// An `object_store` store whose uploads and downloads keep to [`Rates`]; listings, heads,
/// deletes and copies are not limited (they move no object bytes through this machine).
pub struct RateLimitedStore {
    inner: Arc<dyn ObjectStore>,
    upload: Option<SharedLimit>,
    download: Option<SharedLimit>,
}

impl RateLimitedStore {
    /// Wraps `inner`; without any rate, `inner` itself is returned.
    pub fn wrap(inner: Arc<dyn ObjectStore>, rates: Rates) -> Arc<dyn ObjectStore> {
        if rates == Rates::default() {
            return inner;
        }
        Arc::new(Self {
            inner,
            upload: rates.upload.map(SharedLimit::new),
            download: rates.download.map(SharedLimit::new),
        })
    }
}

impl fmt::Debug for RateLimitedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitedStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RateLimitedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RateLimitedStore({})", self.inner)
    }
}

/// A multipart upload whose parts each wait for their bytes.
#[derive(Debug)]
struct RateLimitedUpload {
    upload: Box<dyn MultipartUpload>,
    limit: SharedLimit,
}

#[async_trait]
impl MultipartUpload for RateLimitedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        // Reserved now, in the order the parts are handed over; waited for before the part
        // is sent.
        let wait = self.limit.reserve(data.content_length() as u64);
        let put = self.upload.put_part(data);
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            put.await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.upload.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.upload.abort().await
    }
}

#[async_trait]
impl ObjectStore for RateLimitedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if let Some(limit) = &self.upload {
            limit.take(payload.content_length() as u64).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(match &self.upload {
            Some(limit) => Box::new(RateLimitedUpload {
                upload,
                limit: limit.clone(),
            }),
            None => upload,
        })
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let Some(limit) = &self.download else {
            return self.inner.get_opts(location, options).await;
        };
        if options.head {
            return self.inner.get_opts(location, options).await;
        }
        if let Some(GetRange::Bounded(range)) = &options.range {
            limit.take(range.end.saturating_sub(range.start)).await;
            return self.inner.get_opts(location, options).await;
        }
        // Unknown size: wait off what earlier downloads owe, then owe this one's size.
        limit.take(0).await;
        let result = self.inner.get_opts(location, options).await?;
        limit.reserve(result.range.end.saturating_sub(result.range.start));
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if let Some(limit) = &self.download {
            let total = ranges
                .iter()
                .map(|range| range.end.saturating_sub(range.start))
                .sum();
            limit.take(total).await;
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_full_bucket_lets_a_quarter_second_through_then_paces_at_the_rate() {
        let mut bucket = TokenBucket::new(1000);
        assert_eq!(bucket.reserve(Duration::ZERO, 250), Duration::ZERO);
        // Empty now: 500 bytes cost half a second.
        assert_eq!(bucket.reserve(Duration::ZERO, 500), 500 * MS);
        // A second reservation at the same instant queues behind the first.
        assert_eq!(bucket.reserve(Duration::ZERO, 100), 600 * MS);
        // Once the first waits are over, time has paid for them.
        assert_eq!(bucket.reserve(600 * MS, 0), Duration::ZERO);
        assert_eq!(bucket.reserve(600 * MS, 1000), 1000 * MS);
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let mut bucket = TokenBucket::new(4000);
        assert_eq!(bucket.reserve(Duration::ZERO, 1000), Duration::ZERO);
        // An hour idle still leaves one quarter second's worth (1000 bytes).
        let later = Duration::from_hours(1);
        assert_eq!(bucket.reserve(later, 1000), Duration::ZERO);
        assert_eq!(bucket.reserve(later, 2000), 500 * MS);
    }

    #[test]
    fn the_rate_holds_over_any_sequence_of_transfers() {
        // Four senders of uneven sizes, each asking again when its previous wait ends, served
        // in the order of their clocks: the whole takes the bytes over the rate, less the
        // quarter second a full bucket lets through at the start.
        for rate in [1000, 64 * 1024, 10 << 20] {
            let mut bucket = TokenBucket::new(rate);
            let mut clocks = [Duration::ZERO; 4];
            let mut total = 0u64;
            for step in 0..4000u64 {
                let sender = (0..4).min_by_key(|&index| clocks[index]).unwrap();
                let bytes = 1 + (step * 7919) % (rate / 2);
                total += bytes;
                let wait = bucket.reserve(clocks[sender], bytes);
                clocks[sender] += wait;
            }
            let elapsed = clocks.iter().max().unwrap().as_secs_f64();
            #[allow(clippy::cast_precision_loss)]
            let ideal = total as f64 / rate as f64;
            assert!(
                elapsed >= ideal - 0.25 - 1e-6,
                "{rate}: {elapsed} s for {ideal} s"
            );
            assert!(elapsed <= ideal + 1e-3, "{rate}: {elapsed} s for {ideal} s");
        }
    }

    #[test]
    fn a_clock_that_goes_back_refills_nothing() {
        let mut bucket = TokenBucket::new(1000);
        assert_eq!(bucket.reserve(Duration::from_secs(10), 250), Duration::ZERO);
        assert_eq!(bucket.reserve(Duration::from_secs(5), 100), 100 * MS);
    }

    #[test]
    fn a_rate_of_zero_is_one_byte_per_second_not_a_division_by_zero() {
        let mut bucket = TokenBucket::new(0);
        assert_eq!(
            bucket.reserve(Duration::ZERO, 2),
            Duration::from_secs_f64(1.75)
        );
    }

    #[test]
    fn the_store_moves_bytes_unchanged_through_both_limits() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let unlimited = RateLimitedStore::wrap(Arc::clone(&inner), Rates::default());
        assert!(Arc::ptr_eq(&unlimited, &inner), "no rate: no wrapper");
        let store = RateLimitedStore::wrap(
            inner,
            Rates {
                upload: Some(1 << 30),
                download: Some(1 << 30),
            },
        );
        let path = Path::from("a/b");
        let data: Vec<u8> = (0..100_000u32)
            .map(|index| u8::try_from(index % 251).unwrap())
            .collect();
        runtime.block_on(async {
            use object_store::ObjectStoreExt;
            store.put(&path, data.clone().into()).await.unwrap();
            let whole = store.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(whole, data);
            let part = store.get_range(&path, 10..20_010).await.unwrap();
            assert_eq!(part, data[10..20_010]);
            assert_eq!(store.head(&path).await.unwrap().size, 100_000);
            let mut upload = store.put_multipart(&Path::from("m")).await.unwrap();
            upload
                .put_part(data[..50_000].to_vec().into())
                .await
                .unwrap();
            upload
                .put_part(data[50_000..].to_vec().into())
                .await
                .unwrap();
            upload.complete().await.unwrap();
            let joined = store.get(&Path::from("m")).await.unwrap().bytes().await;
            assert_eq!(joined.unwrap(), data);
        });
    }
}
