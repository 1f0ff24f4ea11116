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
//!
//! Errors are JSON `{code, message}` with `code` equal to the HTTP status (the notes give
//! no EnOS codes for the file service), except the file bytes themselves.

use std::io::Read;
use std::sync::{mpsc, Arc, Mutex};

use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::config::TaskRequest;
use crate::registry::{percent_decode, ApiError, Outbound, Registry};
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
}

/// Answers one request.
pub fn handle(shared: &Shared, mut request: Request) {
    let response = route(shared, &mut request);
    // The client may have gone; nothing to do about it.
    let _ = request.respond(response);
}

type Reply = Response<std::io::Cursor<Vec<u8>>>;

fn route(shared: &Shared, request: &mut Request) -> Reply {
    let method = request.method().clone();
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let range = header(request, "Range");
    let now = shared.clock.now_ms();
    match (&method, segments.as_slice()) {
        (Method::Options, _) => with_cors(Response::from_data(Vec::new()).with_status_code(204)),
        (Method::Get | Method::Head, ["files", pk, version]) => {
            let (Some(pk), Some(version)) =
                (percent_decode(pk, false), percent_decode(version, false))
            else {
                return error(&ApiError {
                    status: 400,
                    message: "bad escape in the path".into(),
                });
            };
            let registry = lock(shared);
            match registry.firmware(&pk, &version) {
                Some(fw) => file(&fw.bytes, range.as_deref()),
                None => error(&ApiError {
                    status: 404,
                    message: format!("no firmware {pk}/{version}"),
                }),
            }
        }
        (Method::Post, ["auth", pk, dk]) => {
            let body = match read_body(request) {
                Ok(b) => b,
                Err(e) => return error(&e),
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
                return error(&e);
            }
            let Some(fw) = registry.firmware_by_uri(get("fileUri").unwrap_or("")) else {
                return error(&ApiError {
                    status: 404,
                    message: "no file with that fileUri".into(),
                });
            };
            if fw.product_key != *pk {
                return error(&ApiError {
                    status: 403,
                    message: "the file is another product's".into(),
                });
            }
            match rest {
                [] => file(&fw.bytes, range.as_deref()),
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
                Err(e) => return error(&e),
            };
            let req: TaskRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return error(&ApiError {
                        status: 400,
                        message: format!("bad task: {e}"),
                    })
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
        _ => not_found(),
    }
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

fn file(bytes: &[u8], range: Option<&str>) -> Reply {
    let len = bytes.len() as u64;
    let octets = ("Content-Type", "application/octet-stream");
    let response = match range {
        None => Response::from_data(bytes.to_vec()),
        Some(value) => match parse_range(value, len) {
            Ok((first, last)) => {
                // Both ends are within the file, checked by parse_range.
                let part = bytes[first as usize..=last as usize].to_vec();
                Response::from_data(part)
                    .with_status_code(206)
                    .header("Content-Range", &format!("bytes {first}-{last}/{len}"))
            }
            Err(()) => Response::from_data(Vec::new())
                .with_status_code(416)
                .header("Content-Range", &format!("bytes */{len}")),
        },
    };
    with_cors(
        response
            .header(octets.0, octets.1)
            .header("Accept-Ranges", "bytes"),
    )
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

/// Binds the server on 127.0.0.1:`port` (0 = any free port).
pub fn bind(port: u16) -> Result<Server, String> {
    Server::http(("127.0.0.1", port)).map_err(|e| format!("HTTP on 127.0.0.1:{port}: {e}"))
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
