//! An SMTP server inside the test process: it accepts every message (or rejects the next
//! few on request) and keeps them for the test to read.
//!
//! It speaks what lettre needs: the 220 greeting, EHLO/HELO (without STARTTLS, so the
//! client stays in plain text), MAIL FROM, RCPT TO, DATA (up to `\r\n.\r\n`, with
//! dot-stuffing undone), RSET, NOOP and QUIT. [`ReceivedMail`] reads enough MIME to find
//! the plain-text part (quoted-printable or base64) of lettre's multipart messages.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The envelope (MAIL FROM and RCPT TO), which may differ from the headers.
    pub envelope_from: String,
    pub envelope_to: Vec<String>,
    /// What came after DATA, dot-stuffing undone, CRLF line ends.
    pub data: String,
}

#[derive(Default)]
struct Shared {
    mails: Mutex<Vec<ReceivedMail>>,
    /// How many of the next RCPT TO commands to answer 451 (try again later).
    reject_next: Mutex<usize>,
    rejected: Mutex<usize>,
    arrived: Notify,
}

pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the sink binds a port");
        let addr = listener.local_addr().expect("the sink's address");
        let shared = Arc::new(Shared::default());
        let for_accept = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(session(socket, for_accept.clone()));
            }
        });
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// `smtp://127.0.0.1:<port>`: no TLS parameter, as a developer would write it.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.mails.lock().expect("sink lock").clone()
    }

    /// Answer the next `n` recipients with `451` (a temporary failure).
    pub fn reject_next(&self, n: usize) {
        *self.shared.reject_next.lock().expect("sink lock") = n;
    }

    /// How many recipients were answered `451`.
    pub fn rejected(&self) -> usize {
        *self.shared.rejected.lock().expect("sink lock")
    }

    /// The messages to `to` whose subject contains `subject_contains`.
    pub fn matching(&self, to: &str, subject_contains: &str) -> Vec<ReceivedMail> {
        self.messages()
            .into_iter()
            .filter(|m| m.is_to(to) && m.subject().unwrap_or_default().contains(subject_contains))
            .collect()
    }

    /// Wait (woken by each arriving message) until a message to `to` whose subject contains
    /// `subject_contains` has arrived; panic after `deadline`.
    pub async fn wait_for(
        &self,
        to: &str,
        subject_contains: &str,
        deadline: Duration,
    ) -> ReceivedMail {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable(); // from here on, no arrival is missed
            if let Some(m) = self.matching(to, subject_contains).into_iter().next() {
                return m;
            }
            if tokio::time::timeout_at(until, arrived).await.is_err() {
                let seen: Vec<String> = self
                    .messages()
                    .iter()
                    .map(|m| format!("{:?} {:?}", m.envelope_to, m.subject()))
                    .collect();
                panic!(
                    "timed out after {deadline:?} waiting for a mail to {to} about {subject_contains:?}; received: {seen:?}"
                );
            }
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn session(socket: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    let mut from = String::new();
    let mut to: Vec<String> = vec![];
    if write.write_all(b"220 smtp-sink ready\r\n").await.is_err() {
        return;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = String::from_utf8_lossy(&line).trim_end().to_owned();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-smtp-sink\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n",
            "HELO" => b"250 smtp-sink\r\n",
            "MAIL" => {
                from = address(&command);
                to.clear();
                b"250 2.1.0 OK\r\n"
            }
            "RCPT" => {
                let mut reject = shared.reject_next.lock().expect("sink lock");
                if *reject > 0 {
                    *reject -= 1;
                    *shared.rejected.lock().expect("sink lock") += 1;
                    b"451 4.3.0 try again later\r\n"
                } else {
                    to.push(address(&command));
                    b"250 2.1.5 OK\r\n"
                }
            }
            "DATA" if to.is_empty() => b"554 5.5.1 no valid recipients\r\n",
            "DATA" => {
                if write
                    .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let Some(data) = read_data(&mut lines).await else {
                    return;
                };
                shared.mails.lock().expect("sink lock").push(ReceivedMail {
                    envelope_from: std::mem::take(&mut from),
                    envelope_to: std::mem::take(&mut to),
                    data,
                });
                shared.arrived.notify_waiters();
                b"250 2.0.0 queued\r\n"
            }
            "RSET" => {
                from.clear();
                to.clear();
                b"250 2.0.0 OK\r\n"
            }
            "NOOP" => b"250 2.0.0 OK\r\n",
            "QUIT" => {
                let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                return;
            }
            _ => b"502 5.5.2 command not implemented\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Lines up to the lone `.`, with a leading `.` removed from lines that start with two.
async fn read_data<R: AsyncBufReadExt + Unpin>(lines: &mut R) -> Option<String> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).await.ok()? == 0 {
            return None;
        }
        if line == b".\r\n" || line == b".\n" {
            return Some(String::from_utf8_lossy(&data).into_owned());
        }
        let unstuffed = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(unstuffed);
    }
}

/// `MAIL FROM:<a@b> SIZE=10` → `a@b`.
fn address(command: &str) -> String {
    let start = command.find('<').map(|i| i + 1).unwrap_or(0);
    let end = command[start..]
        .find('>')
        .map(|i| start + i)
        .unwrap_or(command.len());
    command[start..end].to_owned()
}

impl ReceivedMail {
    pub fn is_to(&self, to: &str) -> bool {
        self.envelope_to.iter().any(|t| t.eq_ignore_ascii_case(to))
    }

    /// A top-level header, unfolded. (Encoded words are left as they are: lettre uses
    /// them only for non-ASCII text, and our subjects are ASCII.)
    pub fn header(&self, name: &str) -> Option<String> {
        header_in(split_head(&self.data).0, name)
    }

    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    /// The decoded `text/plain` part (or the body of a single-part plain message).
    pub fn text_body(&self) -> Option<String> {
        find_part(&self.data, "text/plain")
    }

    pub fn html_body(&self) -> Option<String> {
        find_part(&self.data, "text/html")
    }

    /// The first http(s) URL in the text part that contains `path_fragment`.
    pub fn link_containing(&self, path_fragment: &str) -> Option<String> {
        let text = self.text_body()?;
        text.split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
            .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
            .find(|w| w.contains(path_fragment))
            .map(str::to_owned)
    }

    /// The first word of the text part that is exactly six digits.
    pub fn six_digit_code(&self) -> Option<String> {
        let text = self.text_body()?;
        text.split(|c: char| c.is_whitespace() || matches!(c, '.' | ',' | ':' | ';'))
            .find(|w| w.len() == 6 && w.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
    }
}

/// Headers and body of an entity (split at the first empty line).
fn split_head(entity: &str) -> (&str, &str) {
    if let Some(i) = entity.find("\r\n\r\n") {
        (&entity[..i], &entity[i + 4..])
    } else if let Some(i) = entity.find("\n\n") {
        (&entity[..i], &entity[i + 2..])
    } else {
        (entity, "")
    }
}

fn header_in(headers: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in headers.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(v) = value.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if value.is_some() {
            break; // the header we wanted has ended
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.trim().eq_ignore_ascii_case(name) {
                value = Some(v.trim().to_owned());
            }
        }
    }
    value
}

/// A parameter of a header value: `multipart/alternative; boundary="x"` → `x`.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Depth-first search for the first part of `mime_type`, decoded.
fn find_part(entity: &str, mime_type: &str) -> Option<String> {
    let (headers, body) = split_head(entity);
    let content_type = header_in(headers, "Content-Type").unwrap_or_else(|| "text/plain".into());
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.starts_with("multipart/") {
        let boundary = format!("--{}", param(&content_type, "boundary")?);
        return body
            .split(boundary.as_str())
            .skip(1) // the preamble
            .take_while(|part| !part.starts_with("--")) // the closing delimiter
            .map(|part| part.trim_start_matches(['\r', '\n']))
            .find_map(|part| find_part(part, mime_type));
    }
    if essence != mime_type {
        return None;
    }
    let encoding = header_in(headers, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "quoted-printable" => quoted_printable(body),
        "base64" => base64(body),
        _ => body.as_bytes().to_vec(),
    };
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn quoted_printable(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if bytes[i + 1..].starts_with(b"\r\n") {
                i += 3; // soft line break
                continue;
            }
            if bytes[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            if let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn base64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_parts_and_encodings_are_read() {
        let data = "Subject: Verify your\r\n email\r\n\
                    Content-Type: multipart/alternative;\r\n boundary=\"BB\"\r\n\r\n\
                    --BB\r\nContent-Type: text/plain; charset=utf-8\r\n\
                    Content-Transfer-Encoding: quoted-printable\r\n\r\n\
                    https://x.example/api/v1/auth/verify?token=3Da.b=\r\n.c\r\n\r\n    123456\r\n\
                    --BB\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                    PHA+aGk8L3A+\r\n--BB--\r\n";
        let m = ReceivedMail {
            envelope_from: String::new(),
            envelope_to: vec!["a@b.c".into()],
            data: data.into(),
        };
        assert_eq!(m.subject().as_deref(), Some("Verify your email"));
        assert_eq!(
            m.link_containing("/auth/verify").as_deref(),
            Some("https://x.example/api/v1/auth/verify?token=a.b.c")
        );
        assert_eq!(m.six_digit_code().as_deref(), Some("123456"));
        assert_eq!(m.html_body().as_deref(), Some("<p>hi</p>"));
    }
}
