//! One readable line per event, for audit trails (the admin's history of a user, the CLI's
//! timeline, the console).
//!
//! It reads the stored JSON (`{"<EventType>": {fields}}`, personal values already opened or
//! `"[erased]"`) rather than the typed events, so an event this build does not know, or an
//! older version of one, still gets a line.

use serde_json::Value;

/// A short sentence saying what the event means.
pub fn summary(event_type: &str, payload: &Value) -> String {
    let body = payload
        .as_object()
        .and_then(|o| o.values().next())
        .cloned()
        .unwrap_or(Value::Null);
    let s = |k: &str| -> String {
        match body.get(k) {
            Some(Value::String(v)) => v.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    };
    let quoted = |k: &str| {
        let v = s(k);
        if v.is_empty() {
            String::new()
        } else {
            format!(" \"{}\"", shorten(&v, 60))
        }
    };
    match event_type {
        "UserRegistered" => format!(
            "Registered as {} with role {} on plan {}",
            s("email"),
            s("role"),
            s("plan")
        ),
        "DuplicateRegistrationAttempted" => "Someone tried to register this email again".into(),
        "EmailVerificationRequested" => format!("Verification mail requested for {}", s("email")),
        "EmailVerificationCodeRejected" => {
            format!("Wrong verification code (attempt {})", s("attempts"))
        }
        "EmailVerified" => format!("Email verified (by {})", s("method")),
        "FailedLoginsCleared" => "Signed in after failed attempts; the count starts again".into(),
        "LoginFailed" => {
            // `reason` since version 2.0 (older events are upcast to it on read)
            let why = if s("reason") == "no_password" {
                "the account has no password"
            } else {
                "wrong password"
            };
            let locked = s("locked_until");
            if locked.is_empty() {
                format!("Sign-in failed: {why} (attempt {})", s("attempts"))
            } else {
                format!("Sign-in failed: {why}; account locked until {locked}")
            }
        }
        "PasswordResetRequested" if s("invitation") == "true" => {
            format!("Invited to choose a password ({})", s("email"))
        }
        "PasswordResetRequested" => format!("Password reset requested for {}", s("email")),
        "PasswordResetCodeRejected" => format!("Wrong reset code (attempt {})", s("attempts")),
        "PasswordReset" => format!(
            "Password reset (by {}); every session signed out",
            s("method")
        ),
        "PasswordChanged" => "Password changed; other sessions signed out".into(),
        "ProfileUpdated" => "Profile updated".into(),
        "AvatarChanged" => format!(
            "Avatar changed ({}, {} bytes)",
            s("content_type"),
            s("size")
        ),
        "PlanChanged" => format!("Plan changed from {} to {}", s("previous"), s("plan")),
        "UserErased" => format!("Account erased (requested by {})", s("requested_by")),
        "RoleChanged" => format!("Role changed from {} to {}", s("previous"), s("role")),
        "UserDeactivated" => {
            let reason = s("reason");
            if reason.is_empty() {
                "Account deactivated; every session signed out".into()
            } else {
                format!(
                    "Account deactivated ({}); every session signed out",
                    shorten(&reason, 80)
                )
            }
        }
        "UserReactivated" => "Account reactivated".into(),
        "EmailChanged" => format!("Email changed to {} (to be verified)", s("email")),
        "SessionStarted" => format!(
            "Signed in on {} from {}",
            or_unknown(&s("device")),
            or_unknown(&s("ip"))
        ),
        "RefreshTokenRotated" => "Session refreshed".into(),
        "RefreshTokenReuseDetected" => {
            "An old refresh token was replayed; the session was revoked".into()
        }
        "SessionRevoked" => format!("Session ended ({})", s("reason")),
        "UsageRecorded" => format!("Used {} {} on {}", s("amount"), s("kind"), s("day")),
        "ConversationStarted" => format!("Started conversation{}", quoted("title")),
        "ConversationRenamed" => format!("Renamed a conversation to{}", quoted("title")),
        "ConversationDeleted" => "Deleted a conversation".into(),
        "MessagePosted" if s("role") == "assistant" => "The assistant replied".into(),
        "MessagePosted" => "Posted a message".into(),
        "MessageEdited" => "Edited a message".into(),
        "MessageDeleted" => "Deleted a message".into(),
        "AssistantFailed" => format!("The assistant could not reply: {}", s("reason")),
        "UploadStored" => format!("Uploaded{} ({} bytes)", quoted("filename"), s("size")),
        "UploadDeleted" => "Deleted an upload".into(),
        "ApiKeyCreated" => format!("API key{} created by {}", quoted("name"), s("created_by")),
        "ApiKeyRevoked" => format!("API key revoked by {}", s("revoked_by")),
        "ProbeRecorded" => format!(
            "Asked for {} with an address that has no account",
            s("kind").replace('_', " ")
        ),
        "SignInFailed" => "Failed sign-in with an address that has no account".into(),
        other => other.to_owned(),
    }
}

fn or_unknown(v: &str) -> &str {
    if v.is_empty() {
        "an unknown device"
    } else {
        v
    }
}

fn shorten(v: &str, max: usize) -> String {
    if v.chars().count() <= max {
        v.to_owned()
    } else {
        let mut out: String = v.chars().take(max).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn known_events_read_as_sentences() {
        assert_eq!(
            summary(
                "RoleChanged",
                &json!({"RoleChanged": {"role": "admin", "previous": "user"}})
            ),
            "Role changed from user to admin"
        );
        assert_eq!(
            summary(
                "LoginFailed",
                &json!({"LoginFailed": {"attempts": 2, "locked_until": null}})
            ),
            "Sign-in failed: wrong password (attempt 2)"
        );
        assert_eq!(
            summary(
                "LoginFailed",
                &json!({"LoginFailed": {"attempts": 1, "locked_until": null, "reason": "wrong_password"}})
            ),
            "Sign-in failed: wrong password (attempt 1)"
        );
        assert_eq!(
            summary(
                "LoginFailed",
                &json!({"LoginFailed": {"attempts": 3, "locked_until": null, "reason": "no_password"}})
            ),
            "Sign-in failed: the account has no password (attempt 3)"
        );
        assert_eq!(
            summary(
                "SessionStarted",
                &json!({"SessionStarted": {"device": "Firefox on Linux", "ip": "10.0.0.1"}})
            ),
            "Signed in on Firefox on Linux from 10.0.0.1"
        );
        assert_eq!(
            summary(
                "UsageRecorded",
                &json!({"UsageRecorded": {"amount": 3, "kind": "messages", "day": "2026-01-01"}})
            ),
            "Used 3 messages on 2026-01-01"
        );
    }

    #[test]
    fn unknown_events_and_odd_payloads_still_get_a_line() {
        assert_eq!(
            summary("SomethingNew", &json!({"SomethingNew": {}})),
            "SomethingNew"
        );
        assert_eq!(
            summary("RoleChanged", &json!(null)),
            "Role changed from  to "
        );
        let long = "x".repeat(200);
        let line = summary(
            "ConversationStarted",
            &json!({"ConversationStarted": {"title": long}}),
        );
        assert!(line.chars().count() < 90, "{line}");
    }
}
