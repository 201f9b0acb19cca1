//! `GET /recordings/{call_id}?exp=…&sig=…` (SPEC M-2): a call's WAV behind
//! a signed, expiring link, with single byte ranges (206) so players can
//! seek, streamed from the file. 403 for a missing, bad, tampered or
//! expired signature; 404 when there is no recording (none made, deleted
//! by retention, or not a file siptrack wrote); 409 while the file is
//! still being written (its header is not finalised: the call is in
//! progress, or a crash left it for the repair at the next start). With
//! `tracking.recording_links_require_auth` the API token or a console
//! session is needed too (401 without either): the console's `<audio>`
//! player cannot send a bearer token, so the same route is also served at
//! `/ui/recordings/{call_id}`, where the browser sends the session cookie
//! (`Path=/ui`). The signature is checked either way: neither stands in
//! for it.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, ReadBuf};

use super::{authorized, error, unauthorized, AppState};
use crate::media::{link, wav};
use crate::recording::range::{self, Ranged};
use crate::recording::LinkSettings;

/// What the route needs, fixed at start.
#[derive(Debug)]
pub struct RecordingAccess {
    /// `media.recordings_dir`.
    pub dir: PathBuf,
    pub links: LinkSettings,
    /// `tracking.recording_links_require_auth`.
    pub require_auth: bool,
    pub counts: LinkCounts,
}

/// The statuses `/recordings` answers, counted for `/metrics`: a burst of
/// 403s is someone guessing links.
const STATUSES: [u16; 9] = [200, 206, 307, 401, 403, 404, 409, 416, 500];

/// Answers of `/recordings` by status.
#[derive(Debug, Default)]
pub struct LinkCounts([AtomicU64; STATUSES.len()]);

impl LinkCounts {
    fn count(&self, status: StatusCode) {
        if let Some(i) = STATUSES.iter().position(|&s| s == status.as_u16()) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `siptrack_recording_requests_total{status="…"}`.
    pub fn render(&self) -> String {
        let mut out = String::from("# TYPE siptrack_recording_requests_total counter\n");
        for (s, n) in STATUSES.iter().zip(&self.0) {
            out.push_str(&format!(
                "siptrack_recording_requests_total{{status=\"{s}\"}} {}\n",
                n.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// Where a call's recording is (or would be): never outside `dir`, since
/// the name is `media::link::file_name` of the Call-ID, the recorder's.
pub fn file_of(dir: &FsPath, call_id: &str) -> PathBuf {
    dir.join(link::file_name(call_id.as_bytes()))
}

/// Bytes read from the file per body chunk.
const CHUNK: usize = 64 * 1024;

pub(super) async fn get_recording(
    State(s): State<AppState>,
    Path(call_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let r = serve(&s, &call_id, &q, &uri, &headers).await;
    s.recordings.counts.count(r.status());
    r
}

/// A validly signed request for a recording another node of a cluster
/// holds (its link base in the call's row): 307 to the same link on that
/// node (the signing key is the database's, so the signature holds
/// there), where it was a 404 here (links made before the base was kept,
/// a balancer sending `/recordings/` anywhere). The console's path goes
/// to the plain one: a session is this node's. None: the call is not
/// known, or its WAV is this node's and gone.
async fn elsewhere(s: &AppState, call_id: &str, uri: &axum::http::Uri) -> Option<Response> {
    let call = s.store.find_call(call_id).await.ok()??;
    let base = call.recording_base;
    if base.is_empty() || base == s.recordings.links.base_url {
        return None;
    }
    let asked = uri.path_and_query()?.as_str();
    let path = asked
        .strip_prefix(crate::recording::links::CONSOLE_PREFIX)
        .unwrap_or(asked);
    let location = header::HeaderValue::from_str(&format!("{base}{path}")).ok()?;
    let mut r = error(
        StatusCode::TEMPORARY_REDIRECT,
        format!("the recording is on the node at {base}"),
    );
    r.headers_mut().insert(header::LOCATION, location);
    Some(r)
}

/// Whether a recording file's last write is more than `retention_seconds`
/// before `now` (Unix seconds).
fn past_retention(m: &std::fs::Metadata, retention_seconds: u64, now: u64) -> bool {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|written| written.as_secs().saturating_add(retention_seconds) < now)
}

async fn serve(
    s: &AppState,
    call_id: &str,
    q: &HashMap<String, String>,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Response {
    let access = &s.recordings;
    if access.require_auth
        && !authorized(headers, s.token.as_deref())
        && !super::ui::signed_in(s, headers)
    {
        return unauthorized();
    }
    let (Some(exp), Some(sig)) = (q.get("exp"), q.get("sig")) else {
        return error(StatusCode::FORBIDDEN, "link: exp and sig are required");
    };
    let now = s.clock.unix_ms() / 1000;
    if let Err(e) = link::verify(&access.links.key, call_id.as_bytes(), exp, sig, now) {
        return error(StatusCode::FORBIDDEN, format!("link: {e}"));
    }
    let path = file_of(&access.dir, call_id);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(there) = elsewhere(s, call_id, uri).await {
                return there;
            }
            return error(StatusCode::NOT_FOUND, "no recording of this call");
        }
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "opening a recording");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "recording unreadable");
        }
    };
    let len = match file.metadata().await {
        // Past retention by the file's last write, as the sweep judges
        // it: a link made while media.retention_days was longer still
        // carries the longer expiry (trial, 2026-12-03: it played a file
        // `recording-url` called deleted).
        Ok(m) if m.is_file() && past_retention(&m, access.links.retention_seconds, now) => {
            return error(
                StatusCode::FORBIDDEN,
                "link: expired (the recording is past media.retention_days)",
            );
        }
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return error(StatusCode::NOT_FOUND, "no recording of this call"),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "reading a recording's size");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "recording unreadable");
        }
    };
    let mut head = [0u8; wav::HEADER_LEN as usize];
    let read = if len >= wav::HEADER_LEN {
        file.read_exact(&mut head).await.map(|_| ())
    } else {
        Ok(())
    };
    if let Err(e) = read {
        tracing::error!(file = %path.display(), error = %e, "reading a recording's header");
        return error(StatusCode::INTERNAL_SERVER_ERROR, "recording unreadable");
    }
    match wav::header_state(&head, len) {
        wav::HeaderState::Complete { .. } => {}
        wav::HeaderState::Partial { .. } => {
            return error(StatusCode::CONFLICT, "recording is still being written");
        }
        wav::HeaderState::NotOurs => {
            tracing::warn!(file = %path.display(), "not a recording siptrack wrote; not served");
            return error(StatusCode::NOT_FOUND, "no recording of this call");
        }
    }
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, count) = match range::parse(asked, len) {
        Ranged::Whole => (StatusCode::OK, 0, len),
        Ranged::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Ranged::Unsatisfiable => {
            let mut r = error(StatusCode::RANGE_NOT_SATISFIABLE, "range outside the file");
            if let Ok(v) = format!("bytes */{len}").parse() {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    if let Err(e) = file.seek(SeekFrom::Start(start)).await {
        tracing::error!(file = %path.display(), error = %e, "seeking in a recording");
        return error(StatusCode::INTERNAL_SERVER_ERROR, "recording unreadable");
    }
    let body = Body::from_stream(FileChunks {
        file,
        remaining: count,
    });
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("audio/wav"),
    );
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = format!("bytes {start}-{}/{len}", start + count - 1).parse() {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    r
}

/// The file from its position, `remaining` bytes, in chunks: a recording
/// is never read whole into memory.
struct FileChunks {
    file: tokio::fs::File,
    remaining: u64,
}

impl futures_core::Stream for FileChunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = self.remaining.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut self.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    // The file shrank under us (retention deleted it):
                    // end the body short rather than hang.
                    self.remaining = 0;
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "recording shorter than its length",
                    ))));
                }
                self.remaining -= n as u64;
                buf.truncate(n);
                Poll::Ready(Some(Ok(Bytes::from(buf))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_status() {
        let c = LinkCounts::default();
        for s in [200, 206, 206, 403, 418] {
            c.count(StatusCode::from_u16(s).expect("status"));
        }
        let text = c.render();
        for line in [
            "siptrack_recording_requests_total{status=\"200\"} 1\n",
            "siptrack_recording_requests_total{status=\"206\"} 2\n",
            "siptrack_recording_requests_total{status=\"403\"} 1\n",
            "siptrack_recording_requests_total{status=\"404\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn files_stay_in_the_directory() {
        let dir = FsPath::new("/srv/rec");
        for id in ["../../etc/passwd", "..", "/abs", "a/../../b", "x\0y", ""] {
            let f = file_of(dir, id);
            assert_eq!(f.parent(), Some(dir), "{id:?} → {}", f.display());
            let name = f.file_name().and_then(|n| n.to_str()).expect("name");
            assert!(!name.starts_with('.') && name.ends_with(".wav"), "{name}");
        }
        let long = "a".repeat(10_000);
        let f = file_of(dir, &long);
        assert!(f.file_name().map_or(0, |n| n.len()) < 200);
    }
}
