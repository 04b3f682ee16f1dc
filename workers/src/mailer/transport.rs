//! Getting a [`Mail`] out: as a MIME message over SMTP (lettre), or as an `.eml` file.
//!
//! `SMTP_URL` forms and the lettre TLS mode each one chooses:
//!
//! | `SMTP_URL` | lettre | |
//! | --- | --- | --- |
//! | `smtps://user:pass@host:465` | `Tls::Wrapper` | TLS from the first byte (implicit TLS) |
//! | `smtp://user:pass@host:587?tls=required` | `Tls::Required` | STARTTLS, fail if not offered |
//! | `smtp://user:pass@host:587` (or `?tls=opportunistic`) | `Tls::Opportunistic` | STARTTLS when the server offers it, else plain |
//! | `smtp://host:1025?tls=none` | `Tls::None` | never TLS (a local sink or Mailpit) |
//!
//! lettre's own `from_url` reads a bare `smtp://` as "never TLS"; we ask for STARTTLS when
//! offered instead (as `SMTP_URL` is documented), and spell "never" `tls=none`. A server
//! that offers no STARTTLS (Mailpit, the test sink) gets plain SMTP either way.
//! Credentials in the URL are percent-decoded by lettre and sent with AUTH PLAIN or LOGIN.
//! No `SMTP_URL`: each message is written to `{DATA_DIR}/mail/<time>-<event id>.eml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use uuid::Uuid;

use super::templates::Mail;
use super::MailerError;

/// How long one SMTP command may take before the attempt counts as failed.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where mails go.
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Development: `.eml` files in this directory.
    Files(PathBuf),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // the URL may hold a password: not shown
            Transport::Smtp(_) => f.write_str("Transport::Smtp"),
            Transport::Files(dir) => f.debug_tuple("Transport::Files").field(dir).finish(),
        }
    }
}

/// What the transport did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handed {
    /// The SMTP server accepted it.
    Sent,
    /// Written to this file.
    Written(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{}", describe_smtp_error(.0))]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("cannot write {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a mail could not be made into a message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("the recipient is not a usable address")]
    Recipient,
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
}

impl Transport {
    /// SMTP when `smtp_url` is set, else files under `data_dir/mail`.
    pub fn from_config(smtp_url: Option<&str>, data_dir: &Path) -> Result<Self, MailerError> {
        match smtp_url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(Transport::Files(data_dir.join("mail"))),
            Some(url) => {
                let url = lettre_url(url).map_err(MailerError::Smtp)?;
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
                    .map_err(|e| MailerError::Smtp(e.to_string()))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .pool_config(PoolConfig::new().max_size(2))
                    .build();
                Ok(Transport::Smtp(transport))
            }
        }
    }

    pub async fn deliver(
        &self,
        message: Message,
        event_id: Uuid,
    ) -> Result<Handed, TransportError> {
        match self {
            Transport::Smtp(smtp) => {
                smtp.send(message).await?;
                Ok(Handed::Sent)
            }
            Transport::Files(dir) => {
                let name = format!("{}-{event_id}.eml", Utc::now().format("%Y%m%dT%H%M%S%.3fZ"));
                let path = dir.join(name);
                let bytes = message.formatted();
                let (dir, target) = (dir.clone(), path.clone());
                tokio::task::spawn_blocking(move || write_file(&dir, &target, &bytes))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                    .map_err(|source| TransportError::File {
                        path: path.clone(),
                        source,
                    })?;
                Ok(Handed::Written(path))
            }
        }
    }
}

/// Write whole or not at all: a reader of the directory never sees half a message.
fn write_file(dir: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let partial = target.with_extension("eml.partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, target)
}

/// The MIME message for `mail`: multipart/alternative (plain text, then HTML), with the
/// event id in the `Message-ID`, so a message can be traced back to its event.
pub fn build_message(from: &Mailbox, mail: &Mail, event_id: Uuid) -> Result<Message, MessageError> {
    let to: Mailbox = mail.to.parse().map_err(|_| MessageError::Recipient)?;
    Ok(Message::builder()
        .message_id(Some(format!("<{event_id}@chronicle>")))
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            mail.text.clone(),
            mail.html.clone(),
        ))?)
}

/// `SMTP_URL` in the form lettre's `from_url` reads (see the module docs), or what is
/// wrong with it (never the URL itself: it may hold a password).
pub fn lettre_url(url: &str) -> Result<String, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let tls = pairs
        .iter()
        .find_map(|p| p.strip_prefix("tls="))
        .map(str::to_owned);
    if base.starts_with("smtps://") {
        return Ok(url.to_owned());
    }
    if !base.starts_with("smtp://") {
        return Err("must start with smtp:// or smtps://".into());
    }
    match tls.as_deref() {
        None => pairs.push("tls=opportunistic"),
        Some("required" | "opportunistic") => {}
        Some("none") => pairs.retain(|p| !p.starts_with("tls=")),
        Some(_) => return Err("tls= must be required, opportunistic or none".into()),
    }
    Ok(if pairs.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", pairs.join("&"))
    })
}

/// An SMTP error for the logs: the reply code but not the server's text, which may quote
/// the recipient's address.
fn describe_smtp_error(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) if e.is_permanent() => format!("permanent SMTP error {code}"),
        Some(code) => format!("transient SMTP error {code}"),
        None if e.is_timeout() => "SMTP timeout".to_owned(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailer::templates;

    #[test]
    fn smtp_urls_map_to_lettre_tls_modes() {
        let ok = |u: &str| lettre_url(u).unwrap_or_else(|e| panic!("{u}: {e}"));
        assert_eq!(
            ok("smtp://u:p@mail.example.com:587"),
            "smtp://u:p@mail.example.com:587?tls=opportunistic"
        );
        assert_eq!(ok("smtp://h:587?tls=required"), "smtp://h:587?tls=required");
        assert_eq!(
            ok("smtp://h:587?tls=opportunistic"),
            "smtp://h:587?tls=opportunistic"
        );
        assert_eq!(
            ok("smtp://127.0.0.1:1025?tls=none"),
            "smtp://127.0.0.1:1025"
        );
        assert_eq!(
            ok("smtp://h:25/ehlo.example?tls=none&x=1"),
            "smtp://h:25/ehlo.example?x=1"
        );
        assert_eq!(ok("smtps://u:p@h:465"), "smtps://u:p@h:465");
        assert!(lettre_url("http://h").is_err());
        assert!(lettre_url("smtp://h?tls=maybe").is_err());
        let e = lettre_url("smtp://user:secret@h?tls=maybe")
            .err()
            .unwrap_or_default();
        assert!(!e.contains("secret"));
    }

    #[tokio::test]
    async fn every_url_form_builds_a_transport() {
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://user:p%40ss@mail.example.com:587?tls=required",
            "smtp://localhost:1025?tls=none",
            "smtps://user:pass@mail.example.com",
        ] {
            let t = Transport::from_config(Some(url), Path::new("/tmp"));
            assert!(matches!(t, Ok(Transport::Smtp(_))), "{url}");
        }
        assert!(matches!(
            Transport::from_config(None, Path::new("/data")),
            Ok(Transport::Files(d)) if d == Path::new("/data/mail")
        ));
        assert!(Transport::from_config(Some("mail.example.com"), Path::new("/tmp")).is_err());
    }

    #[test]
    fn a_message_is_multipart_alternative_with_the_event_id() {
        let from: Mailbox = "Chronicle <no-reply@chronicle.local>"
            .parse()
            .expect("from");
        let mail = templates::verify_email(
            "ada@example.com",
            "https://x/api/v1/auth/verify?token=t",
            "123456",
        );
        let id = Uuid::now_v7();
        let raw = build_message(&from, &mail, id)
            .map(|m| m.formatted())
            .expect("message");
        let raw = String::from_utf8_lossy(&raw);
        assert!(
            raw.contains(&format!("Message-ID: <{id}@chronicle>")),
            "{raw}"
        );
        assert!(raw.contains("From: Chronicle <no-reply@chronicle.local>"));
        assert!(raw.contains("To: ada@example.com"));
        assert!(raw.contains("Subject: Verify your email"));
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("text/plain") && raw.contains("text/html"));
        let bad = templates::verify_email("not an address", "l", "c");
        assert!(matches!(
            build_message(&from, &bad, id),
            Err(MessageError::Recipient)
        ));
    }

    #[tokio::test]
    async fn without_smtp_a_message_becomes_an_eml_file() {
        let dir =
            std::env::temp_dir().join(format!("chronicle-mailer-{}", Uuid::new_v4().simple()));
        let t = Transport::from_config(None, &dir).expect("files");
        let from: Mailbox = "no-reply@chronicle.local".parse().expect("from");
        let mail = templates::duplicate_registration("ada@example.com", "https://app");
        let id = Uuid::now_v7();
        let handed = t
            .deliver(build_message(&from, &mail, id).expect("message"), id)
            .await
            .expect("written");
        let Handed::Written(path) = handed else {
            panic!("not a file")
        };
        assert!(path.starts_with(dir.join("mail")));
        assert!(path.to_string_lossy().ends_with(&format!("-{id}.eml")));
        let content = std::fs::read_to_string(&path).expect("readable");
        assert!(content.contains("Someone tried to register with your email"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
