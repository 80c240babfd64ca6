use std::fmt;
use std::io::{self, BufRead, Read};
use std::mem::MaybeUninit;
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use may::net::TcpStream;

use crate::limits::{Limits, Refusal};

pub struct BodyReader<'buf, 'stream> {
    // remaining bytes for body
    req_buf: &'buf mut BytesMut,
    // the max body length limit
    body_limit: usize,
    // total read count
    total_read: usize,
    // used to read extra body bytes
    stream: &'stream mut TcpStream,
    // the whole body must have arrived by then (a body dribbled byte by byte must not
    // hold the connection forever)
    deadline: Instant,
}

impl<'buf, 'stream> BodyReader<'buf, 'stream> {
    fn read_more_data(&mut self) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request body timeout"));
        }
        crate::http_server::reserve_buf(self.req_buf);
        let read_buf: &mut [u8] = unsafe { std::mem::transmute(self.req_buf.chunk_mut()) };
        let n = crate::http_server::read_within(self.stream, read_buf, left)?;
        unsafe { self.req_buf.advance_mut(n) };
        Ok(n)
    }
}

impl<'buf, 'stream> Read for BodyReader<'buf, 'stream> {
    // the user should control the body reading, don't exceeds the body!
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.total_read >= self.body_limit {
            return Ok(0);
        }

        loop {
            if !self.req_buf.is_empty() {
                let min_len = buf.len().min(self.body_limit - self.total_read);
                let n = self.req_buf.reader().read(&mut buf[..min_len])?;
                self.total_read += n;
                return Ok(n);
            }

            if self.read_more_data()? == 0 {
                return Ok(0);
            }
        }
    }
}

impl<'buf, 'stream> BufRead for BodyReader<'buf, 'stream> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let remain = self.body_limit - self.total_read;
        if remain == 0 {
            return Ok(&[]);
        }
        if self.req_buf.is_empty() {
            self.read_more_data()?;
        }
        let n = self.req_buf.len().min(remain);
        Ok(&self.req_buf.chunk()[0..n])
    }

    fn consume(&mut self, amt: usize) {
        assert!(amt <= self.body_limit - self.total_read);
        assert!(amt <= self.req_buf.len());
        self.total_read += amt;
        self.req_buf.advance(amt)
    }
}

impl<'buf, 'stream> Drop for BodyReader<'buf, 'stream> {
    fn drop(&mut self) {
        // consume all the remaining bytes
        while let Ok(n) = self.fill_buf().map(|b| b.len()) {
            if n == 0 {
                break;
            }
            // println!("drop: {:?}", n);
            self.consume(n);
        }
    }
}

// we should hold the mut ref of req_buf
// before into body, this req_buf is only for holding headers
// after into body, this req_buf is mutable to read extra body bytes
// and the headers buf can be reused
pub struct Request<'buf, 'header, 'stream> {
    req: httparse::Request<'header, 'buf>,
    req_buf: &'buf mut BytesMut,
    stream: &'stream mut TcpStream,
    body_deadline: Instant,
}

impl<'buf, 'header, 'stream> Request<'buf, 'header, 'stream> {
    pub fn method(&self) -> &str {
        self.req.method.unwrap_or_default()
    }

    pub fn path(&self) -> &str {
        self.req.path.unwrap_or_default()
    }

    pub fn version(&self) -> u8 {
        self.req.version.unwrap_or_default()
    }

    pub fn headers(&self) -> &[httparse::Header<'_>] {
        self.req.headers
    }

    pub fn body(self) -> BodyReader<'buf, 'stream> {
        BodyReader {
            body_limit: self.content_length().unwrap_or(0),
            total_read: 0,
            stream: self.stream,
            req_buf: self.req_buf,
            deadline: self.body_deadline,
        }
    }

    /// Whether the client ends the connection after this request (RFC 9112 §9.3:
    /// `Connection: close`, or HTTP/1.0 without `keep-alive`).
    pub fn wants_close(&self) -> bool {
        let has = |token: &str| {
            self.req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection")
                    && h.value
                        .split(|b| *b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            })
        };
        if self.version() == 0 {
            !has("keep-alive")
        } else {
            has("close")
        }
    }

    /// The declared body length: `Some(0)` without the header, `None` when malformed
    /// (RFC 9112: ASCII digits only — no sign, no list, no spaces inside).
    pub fn content_length(&self) -> Option<usize> {
        for header in self.req.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let v = header.value.trim_ascii();
                if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                return std::str::from_utf8(v).ok()?.parse().ok();
            }
        }
        Some(0)
    }
}

impl<'buf, 'header, 'stream> fmt::Debug for Request<'buf, 'header, 'stream> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "<HTTP Request {} {}>", self.method(), self.path())
    }
}

/// Parse one request head from `req_buf`: `Ok(None)` while it is incomplete, `Err` for a
/// head this server refuses (answered by the caller, then the connection is closed).
pub fn decode<'header, 'buf, 'stream>(
    headers: &'header mut [MaybeUninit<httparse::Header<'buf>>],
    req_buf: &'buf mut BytesMut,
    stream: &'stream mut TcpStream,
    limits: &Limits,
) -> Result<Option<Request<'buf, 'header, 'stream>>, Refusal> {
    let mut req = httparse::Request::new(&mut []);
    // safety: don't hold the reference of req_buf
    // so we can transfer the mutable reference to Request
    let buf: &[u8] = unsafe { std::mem::transmute(req_buf.chunk()) };
    let len = match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(amt)) => amt,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
            return Err(Refusal::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooManyHeaders),
        Err(e) => {
            debug!("failed to parse http request: {e:?}");
            return Err(if bad_target(buf) { Refusal::BadTarget } else { Refusal::Malformed });
        }
    };
    if len > limits.max_head_bytes {
        return Err(Refusal::HeadTooLarge);
    }
    // httparse lets UTF-8 through; a target is visible ASCII (RFC 3986 percent-encodes the rest).
    if !req.path.is_some_and(|p| p.is_ascii()) {
        return Err(Refusal::BadTarget);
    }
    check_framing(req.headers)?;
    req_buf.advance(len);

    Ok(Some(Request {
        req,
        req_buf,
        stream,
        body_deadline: Instant::now() + limits.body_timeout,
    }))
}

/// RFC 9112 §6: a body is framed by one `Content-Length`. Chunked (or any transfer
/// coding) is not implemented here, so it is refused rather than misread as the next
/// request; several lengths must agree (identical duplicates are accepted as one).
fn check_framing(headers: &[httparse::Header<'_>]) -> Result<(), Refusal> {
    let mut length: Option<&[u8]> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Refusal::TransferEncoding);
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            match length {
                Some(first) if first != v => return Err(Refusal::ConflictingLength),
                _ => length = Some(v),
            }
        }
    }
    Ok(())
}

/// Whether an unparsable request line failed on its target: a byte outside visible
/// ASCII between the method and the version (a space inside the target included).
fn bad_target(buf: &[u8]) -> bool {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(sp) = line.iter().position(|b| *b == b' ') else {
        return false;
    };
    let rest = &line[sp + 1..];
    let target = rest
        .strip_suffix(b" HTTP/1.1")
        .or_else(|| rest.strip_suffix(b" HTTP/1.0"))
        .unwrap_or(rest);
    target.iter().any(|b| !(0x21..=0x7e).contains(b))
}
