//! The HTTP side on 127.0.0.1: firmware files, the EnOS file-service login and download
//! (A8), and the admin JSON API.
//!
//! Contract. Every response carries CORS headers (`Access-Control-Allow-Origin: *`, the
//! range headers exposed) so a page on another local port can fetch firmware and drive
//! the admin API; `OPTIONS` on any path is a 204 preflight answer. Bodies always go with a
//! `Content-Length`, never chunked, so a browser can show download progress.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET, HEAD | `/files/{pk}/{version}` | the file; `Range: bytes=a-b` gives 206 + `Content-Range`, an unsatisfiable range 416 |
//! | POST | `/auth/{pk}/{dk}` | `{signMethod:"sha256", lifetime, sign}` → `{code:200, data:{sessionId}}` |
//! | GET, HEAD | `/multipart/sys/{pk}/{dk}/file/download?sessionId&fileUri&category` | the file named by `fileUri`, ranges as above |
//! | GET | `/multipart/sys/{pk}/{dk}/file/download/url?sessionId&fileUri&category` | `{code:200, data:"<direct url>"}` |
//! | POST | `/admin/tasks` | create a task, body [`crate::config::TaskRequest`] → 201 and the task |
//! | GET | `/admin/tasks`, `/admin/tasks/{id}` | tasks with status and recorded steps |
//! | GET | `/admin/devices` | devices with their reported versions |
//! | GET | `/admin/firmwares` | firmware: real and announced sign and size, faults, downloads |
//!
//! Every GET of a firmware body is recorded, on the firmware and on its open task
//! ([`crate::registry::DownloadRecord`]): a task's `downloads` is a list of
//! `{range: "bytes=1234-" | null, status: 200 | 206 | 416, bytes, cut, deviceKey?, atMs}`.
//! A GET the `cutAfter` fault cuts sends its headers (the `Content-Length` of the whole
//! answer) and the first `cutAfter` body bytes, then the connection closes
//! ([`crate::relay`]).
//!
//! Errors are JSON `{code, message}` with `code` equal to the HTTP status (the notes give
//! no EnOS codes for the file service), except the file bytes themselves.

use std::io::Read;
use std::sync::{mpsc, Arc, Mutex};

use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::config::TaskRequest;
use crate::registry::{percent_decode, ApiError, BodyGet, Outbound, Registry};
use crate::relay::Relay;
use crate::Clock;

/// The largest request body read (admin and login JSON are tiny).
const MAX_BODY: u64 = 64 * 1024;

/// What the HTTP thread shares with the rest of the sim.
pub struct Shared {
    /// The registry.
    pub registry: Arc<Mutex<Registry>>,
    /// Where publishes decided here (a push on task creation) go: the MQTT thread.
    pub outbound: mpsc::Sender<Outbound>,
    /// The sim's clock.
    pub clock: Clock,
    /// The public port, which closes connections after a cut download.
    pub relay: Arc<Relay>,
}

/// How long a cut download's bytes stand before the connection closes.
const CUT_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

/// Answers one request.
pub fn handle(shared: &Shared, mut request: Request) {
    let peer = request.remote_addr().copied();
    let answer = route(shared, &mut request);
    // The client may have gone; nothing to do about it.
    let _ = request.respond(answer.reply);
    if let (true, Some(peer)) = (answer.close, peer) {
        // On a real network the break comes after the client read what preceded it. On
        // loopback the bytes and the close arrive together, and a browser's body stream
        // drops chunks it had not handed out yet when it errors: give it time to read.
        std::thread::sleep(CUT_PAUSE);
        shared.relay.close_after_response(peer);
    }
}

type Reply = Response<std::io::Cursor<Vec<u8>>>;

/// A response, and whether the connection ends after it (a cut download).
struct Answer {
    reply: Reply,
    close: bool,
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer {
            reply,
            close: false,
        }
    }
}

fn route(shared: &Shared, request: &mut Request) -> Answer {
    let method = request.method().clone();
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let range = header(request, "Range");
    let now = shared.clock.now_ms();
    let reply = match (&method, segments.as_slice()) {
        (Method::Options, _) => with_cors(Response::from_data(Vec::new()).with_status_code(204)),
        (Method::Get | Method::Head, ["files", pk, version]) => {
            let (Some(pk), Some(version)) =
                (percent_decode(pk, false), percent_decode(version, false))
            else {
                return error(&ApiError {
                    status: 400,
                    message: "bad escape in the path".into(),
                })
                .into();
            };
            let get = BodyGet {
                product_key: &pk,
                version: &version,
                device_key: None,
                range: range.as_deref(),
            };
            return file(&mut lock(shared), now, &method, &get);
        }
        (Method::Post, ["auth", pk, dk]) => {
            let body = match read_body(request) {
                Ok(b) => b,
                Err(e) => return error(&e).into(),
            };
            match lock(shared).login(now, pk, dk, &body) {
                Ok(session) => json_reply(
                    200,
                    &json!({ "code": 200, "data": { "sessionId": session }, "message": "" }),
                ),
                Err(e) => error(&e),
            }
        }
        (
            Method::Get | Method::Head,
            ["multipart", "sys", pk, dk, "file", "download", rest @ ..],
        ) => {
            let q = parse_query(query);
            let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let mut registry = lock(shared);
            if let Err(e) = registry.use_session(now, get("sessionId").unwrap_or(""), pk, dk) {
                return error(&e).into();
            }
            let Some(fw) = registry.firmware_by_uri(get("fileUri").unwrap_or("")) else {
                return error(&ApiError {
                    status: 404,
                    message: "no file with that fileUri".into(),
                })
                .into();
            };
            if fw.product_key != *pk {
                return error(&ApiError {
                    status: 403,
                    message: "the file is another product's".into(),
                })
                .into();
            }
            match rest {
                [] => {
                    let version = fw.version.clone();
                    let get = BodyGet {
                        product_key: pk,
                        version: &version,
                        device_key: Some(dk),
                        range: range.as_deref(),
                    };
                    return file(&mut registry, now, &method, &get);
                }
                ["url"] => json_reply(
                    200,
                    &json!({ "code": 200, "data": registry.direct_url(fw), "message": "" }),
                ),
                _ => not_found(),
            }
        }
        (Method::Post, ["admin", "tasks"]) => {
            let body = match read_body(request) {
                Ok(b) => b,
                Err(e) => return error(&e).into(),
            };
            let req: TaskRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return error(&ApiError {
                        status: 400,
                        message: format!("bad task: {e}"),
                    })
                    .into()
                }
            };
            let created = lock(shared).create_task(now, &req);
            match created {
                Ok((task, out)) => {
                    for msg in out {
                        // The MQTT thread outlives the HTTP thread; a send error means the
                        // sim is stopping, when the push no longer matters.
                        let _ = shared.outbound.send(msg);
                    }
                    json_reply(201, &json!(task))
                }
                Err(e) => error(&e),
            }
        }
        (Method::Get, ["admin", "tasks"]) => {
            json_reply(200, &json!({ "tasks": lock(shared).tasks() }))
        }
        (Method::Get, ["admin", "tasks", id]) => {
            let registry = lock(shared);
            match id.parse().ok().and_then(|id| registry.task(id)) {
                Some(task) => json_reply(200, &json!(task)),
                None => not_found(),
            }
        }
        (Method::Get, ["admin", "devices"]) => json_reply(200, &lock(shared).devices_json()),
        (Method::Get, ["admin", "firmwares"]) => json_reply(200, &lock(shared).firmwares_json()),
        _ => not_found(),
    };
    reply.into()
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    // A panic while holding the lock leaves the registry consistent enough for a test
    // service: every mutation is a few field writes.
    shared
        .registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn header(request: &Request, name: &'static str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str().to_string())
}

fn read_body(request: &mut Request) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY)
        .read_to_end(&mut body)
        .map_err(|e| ApiError {
            status: 400,
            message: format!("reading the body: {e}"),
        })?;
    Ok(body)
}

/// `a=b&c=d` with percent escapes decoded; undecodable pairs are skipped.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// A single byte range `bytes=a-b`, `bytes=a-` or `bytes=-n` of a `len`-byte file, as an
/// inclusive `(first, last)`; `Err` when unsatisfiable or not of that form (multiple
/// ranges are not offered).
fn parse_range(value: &str, len: u64) -> Result<(u64, u64), ()> {
    let spec = value.trim().strip_prefix("bytes=").ok_or(())?;
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (first, last) = match (a.is_empty(), b.is_empty()) {
        (false, _) => {
            let first: u64 = a.parse().map_err(|_| ())?;
            let last = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                b.parse().map_err(|_| ())?
            };
            (first, last.min(len.saturating_sub(1)))
        }
        (true, false) => {
            let n: u64 = b.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (true, true) => return Err(()),
    };
    if len == 0 || first > last || first >= len {
        return Err(());
    }
    Ok((first, last))
}

/// Answers a GET or HEAD of a firmware file's body: whole, a range, or 416. A GET is
/// recorded, and cut short when the firmware's `cutAfter` fault says so.
fn file(registry: &mut Registry, now: u64, method: &Method, get: &BodyGet<'_>) -> Answer {
    let Some(fw) = registry.firmware(get.product_key, get.version) else {
        return error(&ApiError {
            status: 404,
            message: format!("no firmware {}/{}", get.product_key, get.version),
        })
        .into();
    };
    let len = fw.bytes.len() as u64;
    let (status, body, content_range) = match get.range.map(|v| parse_range(v, len)) {
        None => (200, fw.bytes.clone(), None),
        // Both ends are within the file, checked by parse_range.
        Some(Ok((first, last))) => (
            206,
            fw.bytes[first as usize..=last as usize].to_vec(),
            Some(format!("bytes {first}-{last}/{len}")),
        ),
        Some(Err(())) => (416, Vec::new(), Some(format!("bytes */{len}"))),
    };
    let full = body.len();
    let cut = match method {
        Method::Get => registry.download(now, get, status, full as u64),
        _ => None,
    };
    let mut body = body;
    if let Some(n) = cut {
        // Below `full`, which fits in usize, checked by Registry::download.
        body.truncate(n as usize);
    }
    let mut response = Response::from_data(body).with_status_code(status);
    if let Some(value) = content_range {
        response = response.header("Content-Range", &value);
    }
    if cut.is_some() {
        // The whole answer's length, as a server whose connection drops would have sent.
        response = response.header("Content-Length", &full.to_string());
    }
    Answer {
        reply: with_cors(
            response
                .header("Content-Type", "application/octet-stream")
                .header("Accept-Ranges", "bytes"),
        ),
        close: cut.is_some(),
    }
}

fn json_reply(status: u16, value: &Value) -> Reply {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    with_cors(
        Response::from_data(body)
            .with_status_code(status)
            .header("Content-Type", "application/json"),
    )
}

fn error(e: &ApiError) -> Reply {
    json_reply(e.status, &json!({ "code": e.status, "message": e.message }))
}

fn not_found() -> Reply {
    error(&ApiError {
        status: 404,
        message: "no such endpoint".into(),
    })
}

fn with_cors(response: Reply) -> Reply {
    response
        .header("Access-Control-Allow-Origin", "*")
        .header("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
        .header("Access-Control-Allow-Headers", "Range, Content-Type")
        .header(
            "Access-Control-Expose-Headers",
            "Content-Length, Content-Range, Accept-Ranges",
        )
        .header("Access-Control-Max-Age", "600")
        // Known lengths only: a browser's progress needs Content-Length.
        .with_chunked_threshold(usize::MAX)
}

/// Adds a header by name and value.
trait AddHeader {
    fn header(self, name: &str, value: &str) -> Self;
}

impl AddHeader for Reply {
    fn header(self, name: &str, value: &str) -> Self {
        // Every name and value here is ASCII built in this file, so tiny_http accepts it; a
        // header it refused would only be left out.
        match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            Ok(h) => self.with_header(h),
            Err(()) => self,
        }
    }
}

/// Binds the server on a free 127.0.0.1 port, for the [`Relay`] in front of it.
pub fn bind() -> Result<Server, String> {
    Server::http(("127.0.0.1", 0)).map_err(|e| format!("HTTP on 127.0.0.1: {e}"))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok((0, 9)));
        assert_eq!(parse_range("bytes=50-", 100), Ok((50, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Ok((90, 99)));
        assert_eq!(parse_range("bytes=90-500", 100), Ok((90, 99)));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-2", 100), Err(()));
        assert_eq!(parse_range("items=0-1", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1", 0), Err(()));
    }
}
