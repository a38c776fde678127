//! A loopback TCP proxy that makes a local object store look distant: every byte is delayed by a
//! fixed latency in each direction, both directions may be capped to a shared byte rate, and
//! every HTTP request line passing towards the store is appended to a log, so that every tool's
//! requests are counted at the same place. It also counts the bytes it delivers in each direction
//! (to the client: responses; to the store: requests) and, with `--stats FILE`, keeps FILE holding
//! one line `requests N bytes_to_client N bytes_to_store N` (rewritten whole within 100 ms of a
//! change), so that a caller can read the counters before and after a step.
//!
//! ```text
//! latency_proxy --listen 127.0.0.1:9100 --upstream 127.0.0.1:9000 --delay-ms 10 \
//!               [--rate 50M] [--request-log FILE] [--stats FILE]
//! ```
//!
//! The delay is a pipeline delay (bytes read at time t are written at t + delay, reading goes on
//! meanwhile), as on a long link, not a pause per read. The rate is a token bucket per
//! direction shared by all connections, as one link. Runs until killed. Bench tool: loopback
//! only, no TLS, HTTP/1.1 request framing by Content-Length or chunked encoding.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Loopback TCP proxy adding latency and a rate cap, counting HTTP requests")]
struct Options {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The store's address (loopback).
    #[arg(long)]
    upstream: SocketAddr,
    /// Added delay in each direction, in milliseconds.
    #[arg(long, default_value_t = 10)]
    delay_ms: u64,
    /// Byte rate cap per direction (e.g. 50M = 50,000,000 bytes per second); none by default.
    #[arg(long)]
    rate: Option<String>,
    /// Appends each request's method and target (path and query), one line per request.
    #[arg(long)]
    request_log: Option<std::path::PathBuf>,
    /// Keeps this file holding the request and byte counters (see the module documentation).
    #[arg(long)]
    stats: Option<std::path::PathBuf>,
}

/// What passed through the proxy since it started, over every connection.
#[derive(Default)]
struct Counters {
    /// HTTP requests seen going to the store.
    requests: AtomicU64,
    /// Bytes delivered to the clients (responses).
    bytes_to_client: AtomicU64,
    /// Bytes delivered to the store (requests and their bodies).
    bytes_to_store: AtomicU64,
}

impl Counters {
    /// Counts `bytes` delivered in `direction`.
    fn delivered(&self, direction: Direction, bytes: usize) {
        let counter = match direction {
            Direction::Upload => &self.bytes_to_store,
            Direction::Download => &self.bytes_to_client,
        };
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The counters as the stats file's one line.
    fn line(&self) -> String {
        format!(
            "requests {} bytes_to_client {} bytes_to_store {}",
            self.requests.load(Ordering::Relaxed),
            self.bytes_to_client.load(Ordering::Relaxed),
            self.bytes_to_store.load(Ordering::Relaxed)
        )
    }
}

/// A token bucket shared by every connection of one direction.
struct RateLimit {
    bytes_per_second: f64,
    /// When the bytes sent so far will have been paid for.
    free_at: Mutex<Instant>,
}

impl RateLimit {
    /// Waits until `bytes` more may pass.
    fn pass(&self, bytes: usize) {
        #[allow(clippy::cast_precision_loss)]
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second);
        let wait_until = {
            let mut free_at = self.free_at.lock().expect("rate lock");
            let now = Instant::now();
            // A burst of at most 50 ms after idleness.
            let start = (*free_at).max(now.checked_sub(Duration::from_millis(50)).unwrap_or(now));
            *free_at = start + cost;
            *free_at
        };
        let now = Instant::now();
        if wait_until > now {
            thread::sleep(wait_until - now);
        }
    }
}

/// What a connection shares with the others.
struct Shared {
    delay: Duration,
    upload: Option<RateLimit>,
    download: Option<RateLimit>,
    request_log: Option<Mutex<File>>,
    counters: Counters,
}

fn parse_rate(text: &str) -> Result<f64> {
    let (number, unit) = text
        .find(|character: char| !character.is_ascii_digit() && character != '.')
        .map_or((text, ""), |split| text.split_at(split));
    let multiplier = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        other => bail!("unknown rate unit {other} (use K, M or G: bytes per second)"),
    };
    Ok(number.parse::<f64>().context("rate")? * multiplier)
}

fn main() -> Result<()> {
    let options = Options::parse();
    if !options.listen.ip().is_loopback() || !options.upstream.ip().is_loopback() {
        bail!("the proxy only listens on and forwards to loopback");
    }
    let rate = options.rate.as_deref().map(parse_rate).transpose()?;
    let limit = |rate: Option<f64>| {
        rate.map(|bytes_per_second| RateLimit {
            bytes_per_second,
            free_at: Mutex::new(Instant::now()),
        })
    };
    let request_log = match &options.request_log {
        Some(path) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("open {}", path.display()))?,
        )),
        None => None,
    };
    let shared = Arc::new(Shared {
        delay: Duration::from_millis(options.delay_ms),
        upload: limit(rate),
        download: limit(rate),
        request_log,
        counters: Counters::default(),
    });
    let listener = TcpListener::bind(options.listen).context("bind")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    if let Some(path) = options.stats {
        let shared = Arc::clone(&shared);
        thread::spawn(move || keep_stats_file(&path, &shared.counters));
    }
    serve(&listener, options.upstream, &shared);
    Ok(())
}

/// Relays every connection `listener` accepts to `upstream`, each on its own threads.
fn serve(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let shared = Arc::clone(shared);
        thread::spawn(move || {
            if let Ok(server) = TcpStream::connect(upstream) {
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                relay(client, server, &shared);
            }
        });
    }
}

/// Rewrites `path` (whole, through a temporary file and a rename) whenever the counters change,
/// checking every 100 ms; runs until the process ends.
fn keep_stats_file(path: &std::path::Path, counters: &Counters) {
    let temporary = path.with_extension("tmp");
    let mut written = String::new();
    loop {
        let line = counters.line();
        if line != written
            && std::fs::write(&temporary, format!("{line}\n")).is_ok()
            && std::fs::rename(&temporary, path).is_ok()
        {
            written = line;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Relays both directions of one connection until both ends close.
fn relay(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) {
    let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = {
        let shared = Arc::clone(shared);
        thread::spawn(move || pipe(client_reader, server, &shared, Direction::Upload))
    };
    pipe(server_reader, client, shared, Direction::Download);
    let _ = upstream.join();
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Upload,
    Download,
}

/// Copies `from` to `to`, each piece written `delay` after it was read (a reading thread and a
/// writing thread joined by a queue), within the direction's rate.
fn pipe(mut from: TcpStream, mut to: TcpStream, shared: &Arc<Shared>, direction: Direction) {
    let (sender, receiver) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = {
        let shared = Arc::clone(shared);
        thread::spawn(move || {
            for (read_at, bytes) in receiver {
                let due = read_at + shared.delay;
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                let limit = match direction {
                    Direction::Upload => shared.upload.as_ref(),
                    Direction::Download => shared.download.as_ref(),
                };
                if let Some(limit) = limit {
                    limit.pass(bytes.len());
                }
                if to.write_all(&bytes).is_err() {
                    break;
                }
                shared.counters.delivered(direction, bytes.len());
            }
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let mut requests = RequestCounter::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                let piece = buffer[..read].to_vec();
                if direction == Direction::Upload {
                    for line in requests.feed(&piece) {
                        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
                        if let Some(log) = &shared.request_log
                            && let Ok(mut log) = log.lock()
                        {
                            let _ = writeln!(log, "{line}");
                        }
                    }
                }
                if sender.send((Instant::now(), piece)).is_err() {
                    break;
                }
            }
        }
    }
    drop(sender);
    let _ = writer.join();
}

/// Finds HTTP/1.1 request lines in a client's byte stream: a head up to the blank line, then a
/// body framed by `Content-Length` or chunked encoding, then the next request.
#[derive(Default)]
struct RequestCounter {
    head: Vec<u8>,
    body_left: u64,
    /// Inside a chunked body: the bytes seen since the body started, to find its end.
    chunked: Option<Vec<u8>>,
}

impl RequestCounter {
    /// Consumes `bytes`; returns the request lines (method and target) that started in them.
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let take = usize::try_from(self.body_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.body_left -= take as u64;
                bytes = &bytes[take..];
                continue;
            }
            if let Some(seen) = &mut self.chunked {
                // The last chunk is "0\r\n" followed by (empty) trailers and "\r\n".
                let mut consumed = bytes.len();
                for (index, byte) in bytes.iter().enumerate() {
                    seen.push(*byte);
                    if seen.len() > 5 {
                        seen.drain(..seen.len() - 5);
                    }
                    if seen.as_slice() == b"0\r\n\r\n" {
                        consumed = index + 1;
                        self.chunked = None;
                        break;
                    }
                }
                bytes = &bytes[consumed..];
                continue;
            }
            self.head.push(bytes[0]);
            bytes = &bytes[1..];
            if !self.head.ends_with(b"\r\n\r\n") {
                continue;
            }
            let head = String::from_utf8_lossy(&self.head).into_owned();
            self.head.clear();
            let mut head_lines = head.split("\r\n");
            let request_line = head_lines.next().unwrap_or_default();
            let mut parts = request_line.split(' ');
            let method = parts.next().unwrap_or_default();
            let target = parts.next().unwrap_or_default();
            lines.push(format!("{method} {target}"));
            for line in head_lines {
                let lower = line.to_ascii_lowercase();
                if let Some(length) = lower.strip_prefix("content-length:") {
                    self.body_left = length.trim().parse().unwrap_or(0);
                } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                    self.chunked = Some(Vec::new());
                }
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_across_bodies_and_pieces() {
        let mut counter = RequestCounter::default();
        let stream = b"PUT /b/k1?x=1 HTTP/1.1\r\nContent-Length: 12\r\n\r\nGET / HTTP\r\nHEAD /b/k2 HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /b/k3 HTTP/1.1\r\n\r\n";
        let mut lines = Vec::new();
        for piece in stream.chunks(7) {
            lines.extend(counter.feed(piece));
        }
        assert_eq!(
            lines,
            ["PUT /b/k1?x=1", "HEAD /b/k2", "POST /b", "GET /b/k3"]
        );
    }

    /// A store on loopback that answers every connection's request head (up to its blank line)
    /// with `response` and closes.
    fn store_answering(response: Vec<u8>) -> SocketAddr {
        let store = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = store.local_addr().unwrap();
        thread::spawn(move || {
            for connection in store.incoming() {
                let mut connection = connection.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8];
                while !head.ends_with(b"\r\n\r\n") && connection.read(&mut byte).unwrap() == 1 {
                    head.push(byte[0]);
                }
                connection.write_all(&response).unwrap();
            }
        });
        address
    }

    #[test]
    fn bytes_delivered_are_counted_in_each_direction() {
        for (response_length, connections) in [(0, 1), (1, 1), (65_536, 2), (300_001, 3)] {
            let response: Vec<u8> = (0..response_length)
                .map(|index| u8::try_from(index % 251).unwrap())
                .collect();
            let upstream = store_answering(response.clone());
            let shared = Arc::new(Shared {
                delay: Duration::ZERO,
                upload: None,
                download: None,
                request_log: None,
                counters: Counters::default(),
            });
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let proxy = listener.local_addr().unwrap();
            {
                let shared = Arc::clone(&shared);
                thread::spawn(move || serve(&listener, upstream, &shared));
            }
            let request = b"GET /bucket/key HTTP/1.1\r\nRange: bytes=0-9\r\n\r\n";
            for _ in 0..connections {
                let mut client = TcpStream::connect(proxy).unwrap();
                client.write_all(request).unwrap();
                let mut received = Vec::new();
                // The end of the stream comes after the proxy counted every byte it wrote.
                client.read_to_end(&mut received).unwrap();
                assert_eq!(received, response);
            }
            let expected_to_store = (request.len() * connections) as u64;
            // The request's direction finishes on its own thread; wait for it, untimed.
            while shared.counters.bytes_to_store.load(Ordering::Relaxed) < expected_to_store {
                thread::yield_now();
            }
            assert_eq!(
                shared.counters.line(),
                format!(
                    "requests {connections} bytes_to_client {} bytes_to_store {expected_to_store}",
                    response_length * connections
                )
            );
        }
    }

    #[test]
    fn rates_read_as_bytes_per_second() {
        assert!((parse_rate("50M").unwrap() - 5e7).abs() < 1.0);
        assert!((parse_rate("1.5G").unwrap() - 1.5e9).abs() < 1.0);
        assert!(parse_rate("5X").is_err());
    }
}
