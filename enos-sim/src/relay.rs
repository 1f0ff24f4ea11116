//! The sim's public HTTP port: a TCP relay in front of the tiny_http server, there so that
//! a response can end its connection (the `cutAfter` fault), which tiny_http cannot do.
//!
//! Contract. [`Relay::run`] accepts on the public port and joins each client connection to
//! a connection of its own to the server (on another 127.0.0.1 port), on a thread of its own
//! so that accepting never waits for the server, copying bytes both ways; either side's end
//! of stream is passed on. The server sees each client as the relay-side address of its
//! server connection ([`tiny_http::Request::remote_addr`]), and
//! [`Relay::close_after_response`] with that address ends the client connection once
//! everything the server already wrote to it has been passed on: it ends the server
//! connection's request stream, so tiny_http, reading for the next request, closes its side,
//! and the relay then closes the client's. [`Relay::stop`] stops accepting and closes every
//! connection.
//!
//! Why: tiny_http keeps an HTTP/1.1 connection open for the next request unless the
//! *request* said `Connection: close`, and hands a handler no socket to close; a browser
//! that got fewer body bytes than the `Content-Length` would then wait forever instead of
//! failing the download.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Both ends of one relayed connection.
#[derive(Debug)]
struct Link {
    client: TcpStream,
    server: TcpStream,
}

/// The relay. See the module docs.
#[derive(Debug)]
pub struct Relay {
    listener: TcpListener,
    addr: SocketAddr,
    server: SocketAddr,
    /// Live connections by the relay-side address of their server connection.
    links: Mutex<HashMap<SocketAddr, Link>>,
    stopping: AtomicBool,
}

impl Relay {
    /// Binds 127.0.0.1:`port` (0 = any free port) in front of the server at `server`.
    pub fn bind(port: u16, server: SocketAddr) -> Result<Relay, String> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("HTTP on 127.0.0.1:{port}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        Ok(Relay {
            listener,
            addr,
            server,
            links: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
        })
    }

    /// The public address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts and relays connections until [`Relay::stop`]; each gets two threads.
    pub fn run(self: &Arc<Self>) {
        for client in self.listener.incoming() {
            if self.stopping.load(Ordering::Relaxed) {
                break;
            }
            match client {
                Ok(client) => {
                    // Joining connects to the server and starts two threads: off the accept
                    // loop, so a burst of clients (a fleet's downloads) does not overflow the
                    // listen queue while it waits.
                    let relay = self.clone();
                    std::thread::spawn(move || {
                        if let Err(e) = relay.join(client) {
                            eprintln!("enos-sim: relaying an HTTP connection: {e}");
                        }
                    });
                }
                // Out of descriptors or the like: the client is gone; pause, then go on.
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Ends the connection whose server side is `peer` after the response already written.
    pub fn close_after_response(&self, peer: SocketAddr) {
        if let Some(link) = self.lock().get(&peer) {
            // tiny_http reads end of stream where the next request would be and closes its
            // side; the copy to the client then finishes the response and closes the client.
            let _ = link.server.shutdown(Shutdown::Write);
        }
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Wakes the blocked accept; it sees `stopping` and returns.
        let _ = TcpStream::connect(self.addr);
        for link in self.lock().values() {
            let _ = link.client.shutdown(Shutdown::Both);
            let _ = link.server.shutdown(Shutdown::Both);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Link>> {
        // The map is only inserted into and removed from: consistent after any panic.
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn join(self: &Arc<Self>, client: TcpStream) -> io::Result<()> {
        let server = TcpStream::connect(self.server)?;
        // Small admin answers and MQTT-paced downloads: latency over batching.
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        let key = server.local_addr()?;
        {
            let mut links = self.lock();
            // A join that finishes after `stop` closed the others closes its own.
            if self.stopping.load(Ordering::Relaxed) {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                return Ok(());
            }
            links.insert(
                key,
                Link {
                    client: client.try_clone()?,
                    server: server.try_clone()?,
                },
            );
        }
        let (up_from, up_to) = (client.try_clone()?, server.try_clone()?);
        std::thread::spawn(move || {
            // The client's end of stream (or a reset) ends the server's request stream.
            let _ = io::copy(&mut &up_from, &mut &up_to);
            let _ = up_to.shutdown(Shutdown::Write);
        });
        let relay = self.clone();
        std::thread::spawn(move || {
            let _ = io::copy(&mut &server, &mut &client);
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            relay.lock().remove(&key);
        });
        Ok(())
    }
}
