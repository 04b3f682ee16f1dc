//! The mails themselves: subject, plain text and HTML for each [`MailKind`].
//!
//! Both parts are written through one [`Body`] builder, so they always say the same thing;
//! every value reaches the HTML part escaped (a device name is whatever a browser sent).
//! Nothing here knows about events or secrets: [`super::compose`] hands in finished links
//! and codes.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// What a mail is about; also the `kind` label of metrics and of `mail_deliveries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    VerifyEmail,
    ResetPassword,
    PasswordChanged,
    DuplicateRegistration,
    NewSignIn,
    Invitation,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::VerifyEmail => "verify_email",
            MailKind::ResetPassword => "reset_password",
            MailKind::PasswordChanged => "password_changed",
            MailKind::DuplicateRegistration => "duplicate_registration",
            MailKind::NewSignIn => "new_sign_in",
            MailKind::Invitation => "invitation",
        }
    }
}

impl std::fmt::Display for MailKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rendered mail, not yet addressed by a transport. Its text may hold a one-time link
/// or code: never log it.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    pub kind: MailKind,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the bodies may carry secrets
        f.debug_struct("Mail")
            .field("kind", &self.kind)
            .field("to_domain", &recipient_domain(&self.to))
            .finish_non_exhaustive()
    }
}

/// The part of an address after `@` (what logs and `mail_deliveries` keep).
pub fn recipient_domain(email: &str) -> &str {
    email.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// "Verify your email": a link (30 minutes) and a code (10 minutes).
pub fn verify_email(to: &str, link: &str, code: &str) -> Mail {
    let mut b = Body::new("Verify your email");
    b.para("Please confirm that this is your email address by opening this link:");
    b.link("Verify my email", link);
    b.para("The link works for 30 minutes.");
    b.para("Or enter this code where you signed up (it works for 10 minutes):");
    b.code(code);
    b.para("If you did not create an account, you can ignore this mail.");
    b.finish(MailKind::VerifyEmail, to)
}

/// "Reset your password": a link and a code.
pub fn reset_password(to: &str, link: &str, code: &str) -> Mail {
    let mut b = Body::new("Reset your password");
    b.para("Someone (hopefully you) asked to reset the password of your account.");
    b.para("To choose a new password, open this link:");
    b.link("Reset my password", link);
    b.para("The link works for 30 minutes.");
    b.para("Or enter this code on the reset page (it works for 10 minutes):");
    b.code(code);
    b.para("If you did not ask for this, ignore this mail: your password stays as it is.");
    b.finish(MailKind::ResetPassword, to)
}

/// "You are invited": an admin opened an account for this address; a link and a code to
/// choose a first password (both work for 7 days), which also verifies the address.
pub fn invitation(to: &str, link: &str, code: &str) -> Mail {
    let mut b = Body::new("You are invited");
    b.para("An administrator opened an account for this email address.");
    b.para("To start, choose your password with this link:");
    b.link("Choose my password", link);
    b.para("The link and the code below work for 7 days.");
    b.para("Or enter this code on the password page:");
    b.code(code);
    b.para("If you did not expect this, you can ignore this mail: nothing happens without you.");
    b.finish(MailKind::Invitation, to)
}

/// How the password came to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordChange {
    /// With a reset link or code (every session was signed out).
    Reset,
    /// By the owner, who gave the current password.
    Changed,
}

/// "Your password was changed".
pub fn password_changed(to: &str, how: PasswordChange, app_url: &str) -> Mail {
    let mut b = Body::new("Your password was changed");
    match how {
        PasswordChange::Reset => {
            b.para("The password of your account was just reset. Every device was signed out.")
        }
        PasswordChange::Changed => b.para("The password of your account was just changed."),
    }
    b.para("If this was you, there is nothing more to do.");
    b.para(
        "If it was not you, reset your password at once and check the devices signed in to \
         your account:",
    );
    b.link("Open Chronicle", app_url);
    b.finish(MailKind::PasswordChanged, to)
}

/// "Someone tried to register with your email": the account exists already.
pub fn duplicate_registration(to: &str, app_url: &str) -> Mail {
    let mut b = Body::new("Someone tried to register with your email");
    b.para(
        "Someone tried to create a new account with this email address, but you have an \
         account already.",
    );
    b.para(
        "If that was you, sign in instead; if you forgot your password, reset it from the \
         sign-in page:",
    );
    b.link("Sign in to Chronicle", app_url);
    b.para("If it was not you, you can ignore this mail: nothing was changed.");
    b.finish(MailKind::DuplicateRegistration, to)
}

/// "New sign-in to your account": which device, from where, when.
pub fn new_sign_in(to: &str, device: &str, ip: Option<&str>, at: DateTime<Utc>) -> Mail {
    let mut b = Body::new("New sign-in to your account");
    b.para("Your account was just signed in to:");
    let when = at.format("%Y-%m-%d %H:%M UTC").to_string();
    b.facts(&[
        ("Device", device),
        ("IP address", ip.unwrap_or("unknown")),
        ("Time", &when),
    ]);
    b.para(
        "If this was you, there is nothing to do. If not, change your password and sign out \
         the devices you do not know.",
    );
    b.finish(MailKind::NewSignIn, to)
}

/// Writes the plain-text and the HTML part side by side.
struct Body {
    subject: String,
    text: String,
    html: String,
}

impl Body {
    fn new(subject: &str) -> Self {
        let mut html = String::from(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n\
             <body style=\"font-family: sans-serif; line-height: 1.5; color: #222;\">\n",
        );
        let _ = writeln!(
            html,
            "<h1 style=\"font-size: 20px;\">{}</h1>",
            escape(subject)
        );
        Self {
            subject: subject.to_owned(),
            text: String::new(),
            html,
        }
    }

    fn para(&mut self, s: &str) {
        let _ = write!(self.text, "{s}\n\n");
        let _ = writeln!(self.html, "<p>{}</p>", escape(s));
    }

    fn link(&mut self, label: &str, url: &str) {
        // the URL on a line of its own, so mail clients make it clickable whole
        let _ = write!(self.text, "{url}\n\n");
        let _ = writeln!(
            self.html,
            "<p><a href=\"{}\" style=\"font-weight: bold;\">{}</a></p>\n\
             <p style=\"font-size: 12px; color: #555;\">{}</p>",
            escape(url),
            escape(label),
            escape(url)
        );
    }

    fn code(&mut self, code: &str) {
        let _ = write!(self.text, "    {code}\n\n");
        let _ = writeln!(
            self.html,
            "<p style=\"font-size: 24px; letter-spacing: 4px; font-family: monospace;\">\
             <strong>{}</strong></p>",
            escape(code)
        );
    }

    fn facts(&mut self, facts: &[(&str, &str)]) {
        self.html.push_str("<table>\n");
        for (label, value) in facts {
            let _ = writeln!(self.text, "{label}: {value}");
            let _ = writeln!(
                self.html,
                "<tr><td style=\"padding-right: 12px; color: #555;\">{}</td><td>{}</td></tr>",
                escape(label),
                escape(value)
            );
        }
        self.text.push('\n');
        self.html.push_str("</table>\n");
    }

    fn finish(mut self, kind: MailKind, to: &str) -> Mail {
        self.text.push_str("-- \nChronicle\n");
        self.html
            .push_str("<p style=\"color: #777; font-size: 12px;\">Chronicle</p>\n</body></html>\n");
        Mail {
            kind,
            to: to.to_owned(),
            subject: self.subject,
            text: self.text,
            html: self.html,
        }
    }
}

/// Escape text for HTML element content and double- or single-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const LINK: &str = "https://api.example.com/api/v1/auth/verify?token=u.n.t&x=1";

    #[test]
    fn the_verification_mail_has_the_link_and_the_code_in_both_parts() {
        let m = verify_email("ada@example.com", LINK, "042137");
        assert_eq!(m.subject, "Verify your email");
        assert_eq!(m.kind, MailKind::VerifyEmail);
        assert!(m.text.contains(LINK));
        assert!(m.text.contains("042137"));
        assert!(m.text.contains("30 minutes") && m.text.contains("10 minutes"));
        // in HTML the `&` of the query is escaped, as an attribute must be
        assert!(m
            .html
            .contains("href=\"https://api.example.com/api/v1/auth/verify?token=u.n.t&amp;x=1\""));
        assert!(m.html.contains("042137"));
    }

    #[test]
    fn the_reset_mail_has_the_link_and_the_code_in_both_parts() {
        let link = "https://app.example.com/reset-password?token=abc";
        let m = reset_password("ada@example.com", link, "999999");
        assert_eq!(m.subject, "Reset your password");
        for part in [&m.text, &m.html] {
            assert!(part.contains(link));
            assert!(part.contains("999999"));
        }
    }

    #[test]
    fn display_values_are_escaped_in_html_and_kept_in_text() {
        let device = "<script>alert('x')</script> & \"Firefox\"";
        let at = Utc
            .with_ymd_and_hms(2026, 3, 4, 5, 6, 7)
            .single()
            .unwrap_or_default();
        let m = new_sign_in("ada@example.com", device, Some("203.0.113.7"), at);
        assert!(!m.html.contains("<script>"));
        assert!(m
            .html
            .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Firefox&quot;"));
        assert!(m.text.contains(device));
        for part in [&m.text, &m.html] {
            assert!(part.contains("203.0.113.7"));
            assert!(part.contains("2026-03-04 05:06 UTC"));
        }
        let m = new_sign_in("ada@example.com", "Safari on iOS", None, at);
        assert!(m.text.contains("IP address: unknown"));
    }

    #[test]
    fn notifications_say_what_happened() {
        let m = password_changed("a@b.c", PasswordChange::Reset, "https://app");
        assert_eq!(m.subject, "Your password was changed");
        assert!(m.text.contains("reset") && m.text.contains("signed out"));
        let m = password_changed("a@b.c", PasswordChange::Changed, "https://app");
        assert!(m.text.contains("just changed"));
        let m = duplicate_registration("a@b.c", "https://app");
        assert_eq!(m.subject, "Someone tried to register with your email");
        assert!(m.text.contains("sign in") && m.text.contains("reset"));
        assert!(m.html.contains("href=\"https://app\""));
    }

    #[test]
    fn debug_output_keeps_bodies_out() {
        let m = verify_email("ada@example.com", LINK, "042137");
        let shown = format!("{m:?}");
        assert!(!shown.contains("042137") && !shown.contains("token"));
        assert!(shown.contains("example.com"));
        assert_eq!(recipient_domain("x@y.example"), "y.example");
        assert_eq!(recipient_domain("nobody"), "");
    }
}
