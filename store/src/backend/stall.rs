//! Stall detection for HTTP object stores: a request on which no byte moves, in either
//! direction, for the stall limit is abandoned as timed out (and retried by the layers above),
//! however long a slow but moving transfer takes.
//!
//! `object_store`'s own client offers a whole-request timeout (which fails a large upload on a
//! slow link) and reqwest's per-read timeout (which, before the answer's headers arrive, is not
//! reset by the upload either, so it bounds the whole upload too). Neither tells "no progress"
//! from "slow". So this module builds the reqwest client itself from the store's client options
//! and watches the bytes: every frame of the request body hyper takes (it takes the next one only
//! when its write buffer has room, so a peer that stops reading stops the frames), the answer's
//! headers, and every frame of the answer's body. Only the backend uses it; it knows tokio.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use object_store::client::{
    ClientConfigKey, ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind,
    HttpRequest, HttpRequestBody, HttpResponse, HttpResponseBody, HttpService,
};
use tokio::time::{Instant, Sleep};

/// Request bodies are handed to hyper in slices of this size, so that a stalled upload shows
/// within one slice (plus hyper's write buffer and the kernel's socket buffer).
pub const UPLOAD_SLICE: usize = 64 * 1024;

/// The error of a request on which nothing moved for the stall limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "no data moved for {}s: the store accepts no more and answers nothing (raise -o stall_timeout if it is only slow)",
    .0.as_secs_f64()
)]
pub struct Stalled(pub Duration);

/// Makes [`HttpClient`]s whose requests fail with [`Stalled`] after `stall` without progress.
#[derive(Debug, Clone, Copy)]
pub struct StallConnector {
    /// How long a request may move no byte.
    pub stall: Duration,
    /// A limit on each whole request, only when the user asked for one (`-o timeout=`):
    /// `object_store`'s default of 30 s would fail any upload slower than about 0.5 MiB/s.
    pub overall: Option<Duration>,
}

impl HttpConnector for StallConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = reqwest_client(options, self.stall, self.overall).map_err(|source| {
            object_store::Error::Generic {
                store: "HTTP client",
                source: source.into(),
            }
        })?;
        Ok(HttpClient::new(StallService {
            client,
            stall: self.stall,
        }))
    }
}

fn truthy(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "1" | "true" | "on" | "yes" | "y"
    )
}

/// The reqwest client `object_store` would build from `options`, minus its default whole-request
/// timeout, plus the kernel's limit on unacknowledged data.
fn reqwest_client(
    options: &ClientOptions,
    stall: Duration,
    overall: Option<Duration>,
) -> Result<reqwest::Client, String> {
    let value = |key: ClientConfigKey| options.get_config_value(&key);
    let flag = |key: ClientConfigKey| value(key).is_some_and(|value| truthy(&value));
    let duration = |key: ClientConfigKey| -> Result<Option<Duration>, String> {
        value(key)
            .map(|text| {
                humantime::parse_duration(&text).map_err(|error| format!("{text:?}: {error}"))
            })
            .transpose()
    };
    let number = |key: ClientConfigKey| -> Result<Option<usize>, String> {
        value(key)
            .map(|text| {
                text.parse()
                    .map_err(|_| format!("{text:?} is not a number"))
            })
            .transpose()
    };
    // The kernel drops a connection whose sent bytes stay unacknowledged for the stall limit
    // (a network that went dark while the body's tail sat in the socket's buffer).
    let mut builder = reqwest::Client::builder()
        .tcp_user_timeout(stall)
        .user_agent(
            value(ClientConfigKey::UserAgent)
                .unwrap_or_else(|| concat!("cairn/", env!("CARGO_PKG_VERSION")).to_owned()),
        );
    if let Some(url) = value(ClientConfigKey::ProxyUrl) {
        let mut proxy = reqwest::Proxy::all(&url).map_err(|error| error.to_string())?;
        if let Some(pem) = value(ClientConfigKey::ProxyCaCertificate) {
            let certificate = reqwest::tls::Certificate::from_pem(pem.as_bytes())
                .map_err(|error| error.to_string())?;
            builder = builder.tls_certs_merge(std::iter::once(certificate));
        }
        if let Some(excludes) = value(ClientConfigKey::ProxyExcludes) {
            proxy = proxy.no_proxy(reqwest::NoProxy::from_string(&excludes));
        }
        builder = builder.proxy(proxy);
    }
    if flag(ClientConfigKey::NoSystemCertificates) {
        builder = builder.tls_certs_only(std::iter::empty());
    }
    if let Some(timeout) = overall {
        builder = builder.timeout(timeout);
    }
    if let Some(timeout) = duration(ClientConfigKey::ConnectTimeout)? {
        builder = builder.connect_timeout(timeout);
    }
    if let Some(timeout) = duration(ClientConfigKey::ReadTimeout)? {
        builder = builder.read_timeout(timeout);
    }
    if let Some(timeout) = duration(ClientConfigKey::PoolIdleTimeout)? {
        builder = builder.pool_idle_timeout(timeout);
    }
    if let Some(max) = number(ClientConfigKey::PoolMaxIdlePerHost)? {
        builder = builder.pool_max_idle_per_host(max);
    }
    if let Some(interval) = duration(ClientConfigKey::Http2KeepAliveInterval)? {
        builder = builder.http2_keep_alive_interval(interval);
    }
    if let Some(timeout) = duration(ClientConfigKey::Http2KeepAliveTimeout)? {
        builder = builder.http2_keep_alive_timeout(timeout);
    }
    if flag(ClientConfigKey::Http2KeepAliveWhileIdle) {
        builder = builder.http2_keep_alive_while_idle(true);
    }
    if let Some(size) = number(ClientConfigKey::Http2MaxFrameSize)? {
        let size = u32::try_from(size).map_err(|_| format!("{size} is too large a frame"))?;
        builder = builder.http2_max_frame_size(Some(size));
    }
    if flag(ClientConfigKey::Http1Only) {
        builder = builder.http1_only();
    }
    if flag(ClientConfigKey::Http2Only) {
        builder = builder.http2_prior_knowledge();
    }
    if flag(ClientConfigKey::AllowInvalidCertificates) {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .https_only(!flag(ClientConfigKey::AllowHttp))
        .build()
        .map_err(|error| error.to_string())
}

/// When a request last moved a byte, in milliseconds since it started, and the request body's
/// hand-over to the connection.
#[derive(Debug)]
struct Progress {
    started: Instant,
    last_millis: AtomicU64,
    /// (milliseconds since the start, bytes handed over so far) at each body frame.
    handover: std::sync::Mutex<Vec<(u64, u64)>>,
    /// How long the bytes still in the kernel's buffers may take to leave, once the whole body
    /// is handed over (`u64::MAX` before).
    drain_millis: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_millis: AtomicU64::new(0),
            handover: std::sync::Mutex::new(Vec::new()),
            drain_millis: AtomicU64::new(u64::MAX),
        }
    }

    fn elapsed_millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a body frame of `length` bytes.
    fn handed_over(&self, length: usize) {
        let now = self.elapsed_millis();
        self.last_millis.fetch_max(now, Ordering::Relaxed);
        let mut handover = self
            .handover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total = handover.last().map_or(0, |&(_, total)| total) + length as u64;
        handover.push((now, total));
    }

    /// Records the end of the body and estimates how long its buffered tail takes to leave.
    fn body_done(&self, stall: Duration) {
        let handover = self
            .handover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let drain = drain_estimate(&handover, stall);
        self.drain_millis.store(
            u64::try_from(drain.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// When the request counts as stalled unless something moves before: the stall limit
    /// after the last byte moved, plus, once the body is handed over, the time its tail needs
    /// to leave the buffers.
    fn deadline(&self, stall: Duration) -> Instant {
        let drain = match self.drain_millis.load(Ordering::Relaxed) {
            u64::MAX => 0,
            drain => drain,
        };
        self.started
            + Duration::from_millis(self.last_millis.load(Ordering::Relaxed))
            + Duration::from_millis(drain)
            + stall
    }
}

/// The rate assumed for the buffered tail of a body whose hand-over shows no rate (it fit the
/// buffers at once): 256 KiB/s, about 2 Mbit/s.
const TAIL_RATE_FLOOR: u64 = 256 * 1024;

/// How long the end of a request body handed over at `handover` ((milliseconds, bytes so far)
/// per frame) may take to leave the kernel's buffers, at most one stall limit (so a store that
/// reads and discards is still given up in bounded time). The connection takes the first bytes
/// at once (they fill the buffers), then at the link's rate: the rate of the second half of the
/// hand-over is that rate, and what was handed over beyond rate × time is still buffered. A body
/// that fit the buffers at once shows no rate: all of it may still be buffered, at
/// [`TAIL_RATE_FLOOR`]. Pure.
fn drain_estimate(handover: &[(u64, u64)], stall: Duration) -> Duration {
    let (Some(&(first_millis, _)), Some(&(last_millis, total))) =
        (handover.first(), handover.last())
    else {
        return Duration::ZERO;
    };
    let unmeasured = || Duration::from_millis(total * 1000 / TAIL_RATE_FLOOR).min(stall);
    let span = last_millis.saturating_sub(first_millis);
    if span < 200 {
        return unmeasured();
    }
    let middle = first_millis + span / 2;
    let at_middle = handover
        .iter()
        .find(|&&(millis, _)| millis >= middle)
        .map_or(total, |&(_, bytes)| bytes);
    // The link's rate is moved / window bytes a millisecond.
    let moved = u128::from(total - at_middle);
    let window = u128::from(last_millis.saturating_sub(middle).max(1));
    if moved == 0 {
        return unmeasured();
    }
    let buffered = u128::from(total).saturating_sub(moved * u128::from(span) / window);
    let drain_millis = u64::try_from(buffered * window / moved).unwrap_or(u64::MAX);
    Duration::from_millis(drain_millis).min(stall)
}

/// A request body that records each frame hyper takes.
struct ProgressBody {
    inner: HttpRequestBody,
    progress: Arc<Progress>,
    stall: Duration,
}

impl Body for ProgressBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(context);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => self
                .progress
                .handed_over(frame.data_ref().map_or(0, Bytes::len)),
            Poll::Ready(_) => self.progress.body_done(self.stall),
            Poll::Pending => {}
        }
        if self.inner.is_end_stream() {
            self.progress.body_done(self.stall);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer body that fails with [`Stalled`] when no frame arrives for the limit.
struct StallBody {
    inner: reqwest::Body,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Body for StallBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(context) {
            Poll::Ready(frame) => {
                let next = Instant::now() + this.stall;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|frame| frame.map_err(http_error)))
            }
            Poll::Pending => match this.timer.as_mut().poll(context) {
                Poll::Ready(()) => Poll::Ready(Some(Err(stalled(this.stall)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn stalled(stall: Duration) -> HttpError {
    HttpError::new(HttpErrorKind::Timeout, Stalled(stall))
}

/// Classifies a reqwest error the way `object_store` does, so its retry layer treats it alike.
fn http_error(error: reqwest::Error) -> HttpError {
    let mut kind = if error.is_timeout() {
        HttpErrorKind::Timeout
    } else if error.is_connect() {
        HttpErrorKind::Connect
    } else if error.is_decode() {
        HttpErrorKind::Decode
    } else if error.is_request() || error.is_body() {
        HttpErrorKind::Request
    } else {
        HttpErrorKind::Unknown
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::TimedOut => kind = HttpErrorKind::Timeout,
                std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => kind = HttpErrorKind::Interrupted,
                _ => {}
            }
        }
        source = cause.source();
    }
    HttpError::new(kind, error.without_url())
}

#[derive(Debug)]
struct StallService {
    client: reqwest::Client,
    stall: Duration,
}

#[async_trait::async_trait]
impl HttpService for StallService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let progress = Arc::new(Progress::new());
        let (parts, body) = request.into_parts();
        let url = parts
            .uri
            .to_string()
            .parse()
            .map_err(|error| HttpError::new(HttpErrorKind::Unknown, error))?;
        let mut outgoing = reqwest::Request::new(parts.method, url);
        *outgoing.headers_mut() = parts.headers;
        *outgoing.body_mut() = Some(match body.as_bytes() {
            // Small fixed bodies (XML of a multipart completion or a bulk delete): hyper sends
            // them at once.
            Some(bytes) => reqwest::Body::from(bytes.clone()),
            None => reqwest::Body::wrap(ProgressBody {
                inner: body,
                progress: Arc::clone(&progress),
                stall: self.stall,
            }),
        });
        let mut answer = std::pin::pin!(self.client.execute(outgoing));
        let response = loop {
            let deadline = progress.deadline(self.stall);
            match tokio::time::timeout_at(deadline, answer.as_mut()).await {
                Ok(response) => break response.map_err(http_error)?,
                // The body moved meanwhile: wait again from its last frame.
                Err(_) if progress.deadline(self.stall) > Instant::now() => {}
                Err(_) => return Err(stalled(self.stall)),
            }
        };
        let response: http::Response<reqwest::Body> = response.into();
        let (parts, body) = response.into_parts();
        let body = StallBody {
            inner: body,
            stall: self.stall,
            timer: Box::pin(tokio::time::sleep(self.stall)),
        };
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffered_tail_of_a_slow_upload_is_waited_for() {
        let stall = Duration::from_secs(10);
        // 4 MiB taken at once by the buffers, then 1 MiB/s for 12 s: 4 MiB are still
        // buffered, 4 s at the link's rate.
        let mut handover = vec![(0, 4 << 20)];
        handover.extend((1..=12u64).map(|second| (second * 1000, (4 + second) << 20)));
        assert_eq!(drain_estimate(&handover, stall), Duration::from_secs(4));
        // Never more than one stall limit.
        assert_eq!(
            drain_estimate(&handover, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        // A fast sink (or a proxy that swallows): nothing is buffered.
        let fast: Vec<(u64, u64)> = (0..=300u64).map(|millis| (millis, millis << 20)).collect();
        assert_eq!(drain_estimate(&fast, stall), Duration::ZERO);
        // A body that fit the buffers at once: all of it at the floor rate, within the limit.
        assert_eq!(
            drain_estimate(&[(0, 256 << 10), (5, 512 << 10)], stall),
            Duration::from_secs(2)
        );
        assert_eq!(drain_estimate(&[(7, 100 << 20)], stall), stall);
        assert_eq!(drain_estimate(&[], stall), Duration::ZERO);
    }

    #[test]
    fn progress_moves_the_deadline_forward_only() {
        let progress = Progress::new();
        let stall = Duration::from_secs(5);
        let first = progress.deadline(stall);
        assert_eq!(first, progress.started + stall);
        progress.last_millis.store(2_000, Ordering::Relaxed);
        progress.last_millis.fetch_max(1_000, Ordering::Relaxed);
        assert_eq!(
            progress.deadline(stall),
            progress.started + Duration::from_secs(7)
        );
    }

    #[test]
    fn the_stall_error_names_the_limit_and_the_option() {
        let text = Stalled(Duration::from_secs(15)).to_string();
        assert!(text.contains("15s"), "{text}");
        assert!(text.contains("-o stall_timeout"), "{text}");
    }
}
