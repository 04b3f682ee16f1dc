//! What the catalogue says of each event: earlier versions, one-line descriptions (each an
//! exhaustive `match`, so a new variant does not compile without one) and examples.

use super::*;

// ---------------------------------------------------------------------------------------
// Earlier versions

/// The shapes of earlier versions, frozen: the log may hold them, and every reader upcasts
/// them to the current version (`eventstore::upcast`). Kept for their schemas and for
/// tests that check stored fixtures really are of that version; never used to decide.
pub mod v1 {
    use chrono::{DateTime, Utc};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// `user` events whose 1.0 shape differs from the current one.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub enum UserEvent {
        /// A sign-in with a wrong password (version 1.0: no `reason`).
        LoginFailed {
            /// Failed sign-ins in a row, this one included.
            attempts: u32,
            /// Set when this failure locked the account.
            locked_until: Option<DateTime<Utc>>,
        },
    }
}

pub(super) fn earlier_versions(aggregate_type: &str, event_type: &str) -> Vec<EarlierVersion> {
    let earlier_schema = |version: &str, description: &str| {
        let (variants, defs) = variant_schemas::<v1::UserEvent>();
        standalone_schema(
            aggregate_type,
            event_type,
            version,
            description,
            variants.get(event_type).cloned().unwrap_or(Value::Null),
            &defs,
        )
    };
    match (aggregate_type, event_type) {
        (user::AGGREGATE_TYPE, "LoginFailed") => vec![EarlierVersion {
            version: "1.0",
            change: "2.0 added the required `reason`; a 1.0 event reads as 2.0 with \
                     `reason: \"wrong_password\"` (1.0 did not record why).",
            schema: earlier_schema(
                "1.0",
                "A sign-in failed (version 1.0, upcast to 2.0 when read).",
            ),
        }],
        _ => vec![],
    }
}

// ---------------------------------------------------------------------------------------
// Descriptions: exhaustive matches, so a new variant does not compile without one.

pub(super) fn describe_user(e: &UserEvent) -> &'static str {
    match e {
        UserEvent::UserRegistered { .. } => {
            "An account was opened (`password_hash`: argon2id PHC string, or null for an \
             email-first account; never a raw password)."
        }
        UserEvent::DuplicateRegistrationAttempted { .. } => {
            "Someone tried to register with this account's email; the owner is told by mail."
        }
        UserEvent::EmailVerificationRequested { .. } => {
            "A verification mail is due; its link and code are HMACs of `nonce` under the \
             server secret, so the log alone cannot produce them."
        }
        UserEvent::EmailVerificationCodeRejected { .. } => {
            "A wrong verification code; `exhausted` when no more may be tried."
        }
        UserEvent::EmailVerified { .. } => {
            "The email was verified by link, code, or trusted (created verified)."
        }
        UserEvent::FailedLoginsCleared { .. } => {
            "A sign-in after failed ones: the count starts again (a clean sign-in appends \
             nothing here; see `SessionStarted`)."
        }
        UserEvent::LoginFailed { .. } => {
            "A sign-in failed: `reason` is `wrong_password`, or `no_password` for an account \
             without one; `locked_until` is set when this failure locked the account."
        }
        UserEvent::PasswordResetRequested { .. } => {
            "A password reset mail (link and code derived from `nonce`) is due."
        }
        UserEvent::PasswordResetCodeRejected { .. } => {
            "A wrong reset code; `exhausted` when no more may be tried."
        }
        UserEvent::PasswordReset { .. } => {
            "The password was reset with a link or code; every session is revoked."
        }
        UserEvent::PasswordChanged { .. } => {
            "The owner changed the password (giving the current one)."
        }
        UserEvent::ProfileUpdated { .. } => "The profile changed (the new values).",
        UserEvent::AvatarChanged { .. } => "A new avatar image (its type, SHA-256 and size).",
        UserEvent::PlanChanged { .. } => {
            "The account moved to another plan; its limits apply at once."
        }
        UserEvent::UserErased { .. } => {
            "The account was erased: the user's key is deleted, so their sealed values read \
             as \"[erased]\" from now on."
        }
        UserEvent::RoleChanged { .. } => {
            "An admin gave the account another role (`user` or `admin`)."
        }
        UserEvent::UserDeactivated { .. } => {
            "An admin switched the account off: no sign-in until reactivated, and every \
             session is revoked."
        }
        UserEvent::UserReactivated {} => "An admin switched the account back on.",
        UserEvent::EmailChanged { .. } => {
            "An admin moved the account to another (unverified) email; a verification \
             request to it follows."
        }
    }
}

pub(super) fn describe_session(e: &SessionEvent) -> &'static str {
    match e {
        SessionEvent::SessionStarted { .. } => {
            "A sign-in on a device: the refresh token's HMAC, where from, until when."
        }
        SessionEvent::RefreshTokenRotated { .. } => {
            "The refresh token was exchanged for a new one."
        }
        SessionEvent::RefreshTokenReuseDetected { .. } => {
            "A refresh token this session had rotated away from was presented again."
        }
        SessionEvent::SessionRevoked { .. } => {
            "The session ended: `logout`, `logout_all`, `revoked_by_user`, `password_reset`, \
             `refresh_token_reuse`, `deactivated` or `revoked by an admin`."
        }
    }
}

pub(super) fn describe_meter(e: &MeterEvent) -> &'static str {
    match e {
        MeterEvent::UsageRecorded { .. } => {
            "Usage counted against the user's daily limit; the aggregate id is \
             `<user id>:<YYYY-MM-DD>` (UTC day)."
        }
    }
}

pub(super) fn describe_conversation(e: &ConversationEvent) -> &'static str {
    match e {
        ConversationEvent::ConversationStarted { .. } => "A user started a conversation.",
        ConversationEvent::ConversationRenamed { .. } => "The conversation got a new title.",
        ConversationEvent::ConversationDeleted { .. } => "The conversation was deleted.",
        ConversationEvent::MessagePosted { .. } => {
            "A message by the user or the assistant (`in_reply_to`: the user message a reply \
             answers)."
        }
        ConversationEvent::MessageEdited { .. } => "A message's content was changed.",
        ConversationEvent::MessageDeleted { .. } => "A message was deleted.",
        ConversationEvent::AssistantFailed { .. } => {
            "The assistant gave up on a user message (`reason` from a fixed vocabulary); no \
             reply will come."
        }
    }
}

pub(super) fn describe_upload(e: &UploadEvent) -> &'static str {
    match e {
        UploadEvent::UploadStored { .. } => {
            "A user stored a file (content-addressed by its SHA-256 under the data directory)."
        }
        UploadEvent::UploadDeleted { .. } => "The upload was deleted.",
    }
}

pub(super) fn describe_api_key(e: &ApiKeyEvent) -> &'static str {
    match e {
        ApiKeyEvent::ApiKeyCreated { .. } => {
            "An admin API key was made; only the SHA-256 of its secret part is kept."
        }
        ApiKeyEvent::ApiKeyRevoked { .. } => "The API key was revoked; it stops working at once.",
    }
}

pub(super) fn describe_email_probe(e: &EmailProbeEvent) -> &'static str {
    match e {
        EmailProbeEvent::ProbeRecorded { .. } => {
            "A registration, verification mail or password reset was asked for an address with no account (or one that refuses it): nothing is sent. Keyed by a keyed hash of the address, which is never stored; it exists so that known and unknown addresses leave the same trace in the log."
        }
        EmailProbeEvent::SignInFailed { .. } => {
            "A sign-in with an address that has no account; counted and locked exactly like an account's failures."
        }
    }
}

// ---------------------------------------------------------------------------------------
// Examples: one real instance of every variant.

pub(super) mod examples {
    use super::*;

    const USER: Uuid = Uuid::from_u128(0x019a8f3e_2b7c_7d11_a1a4_3c2f9e0b6d21);
    const SESSION: Uuid = Uuid::from_u128(0x019a8f41_0c5e_7a2b_8f3d_5e1c9a7b2d40);
    const MESSAGE: Uuid = Uuid::from_u128(0x019a8f44_7d1a_7c3e_9a2b_1f4e6c8d0b52);

    fn at(seconds: i64) -> DateTime<Utc> {
        // 2026-11-22T00:41:12Z and a few seconds after
        DateTime::from_timestamp(1_795_308_072 + seconds, 0).unwrap_or_default()
    }

    fn day() -> NaiveDate {
        at(0).date_naive()
    }

    const HASH: &str =
        "$argon2id$v=19$m=9216,t=4,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
    const TOKEN_HASH: &str = "03bf0ccf52e2e136815ee5436a7a2e3377e88354f4e3325f05187727553c4768";
    const NONCE: &str = "q7Lw2yYc0m3f8r1TZ4sVnA";

    pub(in crate::catalog) fn user() -> Vec<UserEvent> {
        vec![
            UserEvent::UserRegistered {
                user_id: USER,
                email: "ada@example.com".into(),
                display_name: Some("Ada".into()),
                password_hash: Some(HASH.into()),
                role: user::ROLE_USER.into(),
                plan: "free".into(),
            },
            UserEvent::EmailVerificationRequested {
                email: "ada@example.com".into(),
                nonce: NONCE.into(),
                requested_at: at(0),
            },
            UserEvent::EmailVerificationCodeRejected {
                attempts: 1,
                exhausted: false,
            },
            UserEvent::EmailVerified {
                method: SecretMethod::Code,
                verified_at: at(60),
            },
            UserEvent::DuplicateRegistrationAttempted {
                email: "ada@example.com".into(),
            },
            UserEvent::LoginFailed {
                attempts: 1,
                locked_until: None,
                reason: user::LOGIN_FAILED_WRONG_PASSWORD.into(),
            },
            UserEvent::FailedLoginsCleared {
                session_id: SESSION,
                at: at(120),
            },
            UserEvent::PasswordResetRequested {
                email: "ada@example.com".into(),
                nonce: NONCE.into(),
                requested_at: at(180),
                invitation: false,
            },
            UserEvent::PasswordResetCodeRejected {
                attempts: 2,
                exhausted: false,
            },
            UserEvent::PasswordReset {
                email: "ada@example.com".into(),
                password_hash: HASH.into(),
                method: SecretMethod::Link,
            },
            UserEvent::PasswordChanged {
                email: "ada@example.com".into(),
                password_hash: HASH.into(),
            },
            UserEvent::ProfileUpdated {
                display_name: Some("Ada Lovelace".into()),
                locale: Some("en-GB".into()),
                timezone: Some("Europe/London".into()),
            },
            UserEvent::AvatarChanged {
                content_type: "image/png".into(),
                sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
                size: 48_213,
            },
            UserEvent::PlanChanged {
                plan: "pro".into(),
                previous: "free".into(),
            },
            UserEvent::RoleChanged {
                role: user::ROLE_ADMIN.into(),
                previous: user::ROLE_USER.into(),
            },
            UserEvent::UserDeactivated {
                reason: Some("left the company".into()),
            },
            UserEvent::UserReactivated {},
            UserEvent::EmailChanged {
                email: "ada.lovelace@example.com".into(),
            },
            UserEvent::UserErased {
                requested_by: "user".into(),
            },
        ]
    }

    pub(in crate::catalog) fn session() -> Vec<SessionEvent> {
        vec![
            SessionEvent::SessionStarted {
                user_id: USER,
                email: "ada@example.com".into(),
                refresh_token_hash: TOKEN_HASH.into(),
                device: "Firefox on Linux".into(),
                ip: Some("203.0.113.7".into()),
                user_agent: Some(
                    "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0".into(),
                ),
                started_at: at(120),
                expires_at: at(120 + 30 * 86_400),
            },
            SessionEvent::RefreshTokenRotated {
                refresh_token_hash: TOKEN_HASH.into(),
                rotated_at: at(1_020),
                expires_at: at(1_020 + 30 * 86_400),
            },
            SessionEvent::RefreshTokenReuseDetected {
                presented_at: at(2_000),
            },
            SessionEvent::SessionRevoked {
                reason: session::REVOKED_LOGOUT.into(),
            },
        ]
    }

    pub(in crate::catalog) fn meter() -> Vec<MeterEvent> {
        vec![MeterEvent::UsageRecorded {
            user_id: USER,
            day: day(),
            kind: meter::KIND_MESSAGES.into(),
            amount: 1,
            occurred_at: at(300),
            record_id: Some("rec-2026-05-04-0001".into()),
        }]
    }

    pub(in crate::catalog) fn conversation() -> Vec<ConversationEvent> {
        vec![
            ConversationEvent::ConversationStarted {
                owner_id: USER,
                title: "Trip to Lisbon".into(),
            },
            ConversationEvent::ConversationRenamed {
                owner_id: USER,
                title: "Lisbon in May".into(),
            },
            ConversationEvent::ConversationDeleted { owner_id: USER },
            ConversationEvent::MessagePosted {
                owner_id: USER,
                message_id: MESSAGE,
                role: conversation::ROLE_USER.into(),
                content: "Where should we eat?".into(),
                in_reply_to: None,
            },
            ConversationEvent::MessageEdited {
                owner_id: USER,
                message_id: MESSAGE,
                content: "Where should we eat on Sunday?".into(),
            },
            ConversationEvent::MessageDeleted {
                owner_id: USER,
                message_id: MESSAGE,
            },
            ConversationEvent::AssistantFailed {
                owner_id: USER,
                message_id: MESSAGE,
                reason: "tokens limit reached".into(),
            },
        ]
    }

    pub(in crate::catalog) fn upload() -> Vec<UploadEvent> {
        vec![
            UploadEvent::UploadStored {
                owner_id: USER,
                filename: "notes.txt".into(),
                content_type: "text/plain".into(),
                size: 1_024,
                sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".into(),
            },
            UploadEvent::UploadDeleted { owner_id: USER },
        ]
    }

    pub(in crate::catalog) fn api_key() -> Vec<ApiKeyEvent> {
        vec![
            ApiKeyEvent::ApiKeyCreated {
                name: "nightly export".into(),
                secret_hash: "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
                    .into(),
                created_by: "cli:alice".into(),
                created_at: at(600),
            },
            ApiKeyEvent::ApiKeyRevoked {
                revoked_by: "cli:alice".into(),
                revoked_at: at(90_000),
            },
        ]
    }

    pub(in crate::catalog) fn email_probe() -> Vec<EmailProbeEvent> {
        vec![
            EmailProbeEvent::ProbeRecorded {
                kind: crate::email_probe::KIND_PASSWORD_RESET.into(),
            },
            EmailProbeEvent::SignInFailed {
                attempts: 5,
                locked_until: Some(at(660)),
            },
        ]
    }
}
