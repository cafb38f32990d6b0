//! The scrape endpoint: `GET /metrics` over plain HTTP/1.0-style connections (one
//! request each, then closed), on one thread. Anything else is 404 (405 for other
//! methods). Meant for a local address (127.0.0.1): it has no authentication.

use super::METRICS;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Of a request, at most this much is read.
const MAX_REQUEST: u64 = 8 * 1024;

/// Binds `addr` and answers scrapes on a thread from then on; returns the bound address
/// (port 0 picks one).
pub fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("registryfs-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream) {
                            log::debug!("metrics request: {e}");
                        }
                    }
                    Err(e) => log::debug!("metrics connection: {e}"),
                }
            }
        })?;
    Ok(bound)
}

fn answer(stream: TcpStream) -> std::io::Result<()> {
    // A slow or silent client must not hold the only thread for long.
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new((&stream).take(MAX_REQUEST));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the headers to their end, so that closing does not reset the connection.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", METRICS.render()),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found; see /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_string()),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        out.write_all(body.as_bytes())?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connects");
        s.write_all(request.as_bytes()).expect("writes");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("reads");
        out
    }

    #[test]
    fn serves_the_metrics_and_nothing_else() {
        let addr = serve("127.0.0.1:0".parse().expect("address")).expect("binds");
        let answer = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(answer.contains("\r\n\r\n# HELP registryfs_lookups_total"));
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let head = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
    }
}
