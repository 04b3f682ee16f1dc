//! Which events call for a mail, and the mail each one gets.
//!
//! The payload is decoded into `aggregates::Event` and every variant is matched by name: a
//! new event, or a new aggregate, must make whoever adds it decide here whether it mails
//! anyone.
//! Links and codes are derived from the event's nonce with the server secret, exactly as
//! the API checks them, so the log alone never holds a usable secret.

use aggregates::event::{DecodeError, Event};
use aggregates::session::SessionEvent;
use aggregates::user::UserEvent;
use aggregates::StreamEnvelope;
use eventstore::secrets::{Purpose, Secrets};
use uuid::Uuid;

use super::templates::{self, Mail, PasswordChange};

/// What an event cannot be turned into a mail for.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot decode the {aggregate_type} payload: {source}")]
    Payload {
        aggregate_type: String,
        source: serde_json::Error,
    },
    #[error("the aggregate id {0:?} is not a UUID")]
    AggregateId(String),
}

/// Turns events into mails.
#[derive(Debug, Clone)]
pub struct Composer {
    secrets: Secrets,
    /// The API's base URL, no trailing slash (verification links).
    public_url: String,
    /// Where people use Chronicle (reset links, "sign in" links): the front end if there
    /// is one, else the API. No trailing slash.
    app_url: String,
}

impl Composer {
    pub fn new(secrets: Secrets, public_url: &str, frontend_url: Option<&str>) -> Self {
        let public_url = public_url.trim_end_matches('/').to_owned();
        let app_url = frontend_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| public_url.clone());
        Self {
            secrets,
            public_url,
            app_url,
        }
    }

    /// The mail `envelope`'s event calls for, if any.
    pub fn compose(&self, envelope: &StreamEnvelope) -> Result<Option<Mail>, ComposeError> {
        let event = match Event::decode(&envelope.aggregate_type, &envelope.payload) {
            Ok(event) => event,
            // an aggregate newer than this build: nothing it knows of mails anyone
            Err(DecodeError::UnknownAggregate(_)) => return Ok(None),
            Err(DecodeError::Payload(source)) => {
                return Err(ComposeError::Payload {
                    aggregate_type: envelope.aggregate_type.clone(),
                    source,
                })
            }
        };
        match event {
            Event::User(event) => self.user_mail(envelope, event),
            Event::Session(event) => Ok(session_mail(event)),
            // aggregates that never mail anyone
            Event::Meter(_)
            | Event::Conversation(_)
            | Event::Upload(_)
            | Event::ApiKey(_)
            | Event::EmailProbe(_) => Ok(None),
        }
    }

    fn user_mail(
        &self,
        envelope: &StreamEnvelope,
        event: UserEvent,
    ) -> Result<Option<Mail>, ComposeError> {
        let mail = match event {
            UserEvent::EmailVerificationRequested { email, nonce, .. } => {
                let user_id = user_id(envelope)?;
                let purpose = Purpose::EmailVerification;
                let token = self.secrets.link_token(purpose, user_id, &nonce);
                let link = format!("{}/api/v1/auth/verify?token={token}", self.public_url);
                let code = self.secrets.code(purpose, user_id, &nonce);
                templates::verify_email(&email, &link, &code)
            }
            UserEvent::PasswordResetRequested {
                email,
                nonce,
                invitation,
                ..
            } => {
                let user_id = user_id(envelope)?;
                let purpose = Purpose::PasswordReset;
                let token = self.secrets.link_token(purpose, user_id, &nonce);
                let link = format!("{}/reset-password?token={token}", self.app_url);
                let code = self.secrets.code(purpose, user_id, &nonce);
                if invitation {
                    templates::invitation(&email, &link, &code)
                } else {
                    templates::reset_password(&email, &link, &code)
                }
            }
            UserEvent::PasswordReset { email, .. } => {
                templates::password_changed(&email, PasswordChange::Reset, &self.app_url)
            }
            UserEvent::PasswordChanged { email, .. } => {
                templates::password_changed(&email, PasswordChange::Changed, &self.app_url)
            }
            UserEvent::DuplicateRegistrationAttempted { email } => {
                if email.is_empty() {
                    // recorded before the event carried the email: nobody to tell
                    return Ok(None);
                }
                templates::duplicate_registration(&email, &self.app_url)
            }
            UserEvent::UserRegistered { .. }
            | UserEvent::EmailVerificationCodeRejected { .. }
            | UserEvent::EmailVerified { .. }
            | UserEvent::FailedLoginsCleared { .. }
            | UserEvent::UserErased { .. }
            | UserEvent::PlanChanged { .. }
            | UserEvent::LoginFailed { .. }
            | UserEvent::PasswordResetCodeRejected { .. }
            | UserEvent::ProfileUpdated { .. }
            | UserEvent::AvatarChanged { .. }
            | UserEvent::RoleChanged { .. }
            | UserEvent::UserDeactivated { .. }
            | UserEvent::UserReactivated {}
            | UserEvent::EmailChanged { .. } => return Ok(None),
        };
        Ok(Some(mail))
    }
}

fn session_mail(event: SessionEvent) -> Option<Mail> {
    match event {
        SessionEvent::SessionStarted {
            email,
            device,
            ip,
            started_at,
            ..
        } => Some(templates::new_sign_in(
            &email,
            &device,
            ip.as_deref(),
            started_at,
        )),
        SessionEvent::RefreshTokenRotated { .. }
        | SessionEvent::RefreshTokenReuseDetected { .. }
        | SessionEvent::SessionRevoked { .. } => None,
    }
}

fn user_id(envelope: &StreamEnvelope) -> Result<Uuid, ComposeError> {
    envelope
        .aggregate_id
        .parse()
        .map_err(|_| ComposeError::AggregateId(envelope.aggregate_id.clone()))
}

#[cfg(test)]
mod tests {
    use aggregates::{EventMetadata, LogCursor};
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::mailer::templates::MailKind;

    fn envelope(
        aggregate_type: &str,
        aggregate_id: Uuid,
        payload: serde_json::Value,
    ) -> StreamEnvelope {
        let event_type = payload
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default();
        StreamEnvelope {
            cursor: LogCursor::default(),
            transaction_id: 1,
            position: 1,
            event_id: Uuid::new_v4(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.to_string(),
            sequence: 1,
            event_type,
            event_version: "1.0".into(),
            recorded_at: Utc::now(),
            metadata: EventMetadata::default(),
            payload,
        }
    }

    fn composer() -> (Composer, Secrets) {
        let secrets = Secrets::new(b"0123456789abcdef0123456789abcdef");
        (
            Composer::new(
                secrets.clone(),
                "https://api.example.com/",
                Some("https://app.example.com"),
            ),
            secrets,
        )
    }

    #[test]
    fn a_verification_request_mails_a_link_and_a_code_the_server_accepts() {
        let (c, secrets) = composer();
        let user = Uuid::now_v7();
        let e = envelope(
            "user",
            user,
            json!({"EmailVerificationRequested": {"email": "ada@example.com", "nonce": "n1", "requested_at": Utc::now()}}),
        );
        let mail = c.compose(&e).ok().flatten().expect("a mail");
        assert_eq!(mail.kind, MailKind::VerifyEmail);
        assert_eq!(mail.to, "ada@example.com");
        let prefix = "https://api.example.com/api/v1/auth/verify?token=";
        let token = mail
            .text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .expect("the link");
        assert_eq!(
            secrets.open_link_token(Purpose::EmailVerification, token),
            Some((user, "n1".to_owned()))
        );
        let code = secrets.code(Purpose::EmailVerification, user, "n1");
        assert!(mail.text.contains(&code) && mail.html.contains(&code));
    }

    #[test]
    fn an_invitation_is_its_own_mail_with_the_same_kind_of_link() {
        let (c, secrets) = composer();
        let user = Uuid::now_v7();
        let e = envelope(
            "user",
            user,
            json!({"PasswordResetRequested": {"email": "new@example.com", "nonce": "n3", "requested_at": Utc::now(), "invitation": true}}),
        );
        let mail = c.compose(&e).ok().flatten().expect("a mail");
        assert_eq!(mail.kind, MailKind::Invitation);
        assert_eq!(mail.subject, "You are invited");
        let token = secrets.link_token(Purpose::PasswordReset, user, "n3");
        assert!(mail.text.contains(&token) && mail.text.contains("7 days"));
    }

    #[test]
    fn a_reset_request_links_to_the_front_end() {
        let (c, secrets) = composer();
        let user = Uuid::now_v7();
        let e = envelope(
            "user",
            user,
            json!({"PasswordResetRequested": {"email": "ada@example.com", "nonce": "n2", "requested_at": Utc::now()}}),
        );
        let mail = c.compose(&e).ok().flatten().expect("a mail");
        let token = secrets.link_token(Purpose::PasswordReset, user, "n2");
        assert!(mail.text.contains(&format!(
            "https://app.example.com/reset-password?token={token}"
        )));
        assert!(mail
            .text
            .contains(&secrets.code(Purpose::PasswordReset, user, "n2")));
    }

    #[test]
    fn each_mail_worthy_event_gets_its_mail_and_the_rest_none() {
        let (c, _) = composer();
        let id = Uuid::now_v7();
        let now = Utc::now();
        let cases = [
            (
                "user",
                json!({"PasswordReset": {"email": "a@x.io", "password_hash": "h", "method": "code"}}),
                Some(MailKind::PasswordChanged),
            ),
            (
                "user",
                json!({"PasswordChanged": {"email": "a@x.io", "password_hash": "h"}}),
                Some(MailKind::PasswordChanged),
            ),
            (
                "user",
                json!({"DuplicateRegistrationAttempted": {"email": "a@x.io"}}),
                Some(MailKind::DuplicateRegistration),
            ),
            ("user", json!({"DuplicateRegistrationAttempted": {}}), None),
            (
                "user",
                json!({"UserRegistered": {"user_id": id, "email": "a@x.io", "display_name": null, "password_hash": null, "role": "user", "plan": "free"}}),
                None,
            ),
            (
                "user",
                json!({"EmailVerified": {"method": "link", "verified_at": now}}),
                None,
            ),
            (
                "session",
                json!({"SessionStarted": {"user_id": id, "email": "a@x.io", "refresh_token_hash": "h", "device": "Firefox on Linux", "ip": "203.0.113.7", "user_agent": null, "started_at": now, "expires_at": now}}),
                Some(MailKind::NewSignIn),
            ),
            (
                "session",
                json!({"SessionRevoked": {"reason": "logout"}}),
                None,
            ),
            ("invoice", json!({"Whatever": {}}), None),
        ];
        for (aggregate, payload, expected) in cases {
            let e = envelope(aggregate, id, payload.clone());
            let got = c.compose(&e).map(|m| m.map(|m| m.kind));
            assert_eq!(got.ok(), Some(expected), "{payload}");
        }
    }

    #[test]
    fn an_unknown_user_event_is_an_error_not_silence() {
        let (c, _) = composer();
        let e = envelope("user", Uuid::now_v7(), json!({"SomethingNew": {}}));
        assert!(matches!(c.compose(&e), Err(ComposeError::Payload { .. })));
        let mut e = envelope(
            "user",
            Uuid::now_v7(),
            json!({"EmailVerificationRequested": {"email": "a@x.io", "nonce": "n", "requested_at": Utc::now()}}),
        );
        e.aggregate_id = "not-a-uuid".into();
        assert!(matches!(c.compose(&e), Err(ComposeError::AggregateId(_))));
    }
}
