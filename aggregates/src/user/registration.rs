//! The user's decisions about joining: registration, a second registration of the same
//! address, and the email's verification (by link or by code).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use uuid::Uuid;

use super::{
    check_email, check_profile_field, SecretMethod, User, UserError, UserEvent, UserPolicy,
};

/// What `RegisterUser` carries.
pub(super) struct Registration {
    pub user_id: Uuid,
    pub email: String,
    pub password_hash: Option<String>,
    pub display_name: Option<String>,
    pub role: String,
    pub plan: String,
    pub verified: bool,
    pub verification_nonce: String,
    pub invitation: bool,
    pub now: DateTime<Utc>,
}

impl User {
    pub(super) async fn register(
        &mut self,
        r: Registration,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if self.registered {
            return Err(UserError::AlreadyRegistered);
        }
        check_email(&r.email)?;
        check_profile_field(&r.display_name, "display_name", 100)?;
        let registered = UserEvent::UserRegistered {
            user_id: r.user_id,
            email: r.email.clone(),
            display_name: r.display_name,
            password_hash: r.password_hash,
            role: r.role,
            plan: r.plan,
        };
        sink.write(registered, self).await;
        if r.verified {
            let trusted = UserEvent::EmailVerified {
                method: SecretMethod::Trusted,
                verified_at: r.now,
            };
            sink.write(trusted, self).await;
        } else if !r.invitation {
            let mail = UserEvent::EmailVerificationRequested {
                email: r.email.clone(),
                nonce: r.verification_nonce.clone(),
                requested_at: r.now,
            };
            sink.write(mail, self).await;
        }
        if r.invitation {
            let invite = UserEvent::PasswordResetRequested {
                email: r.email,
                nonce: r.verification_nonce,
                requested_at: r.now,
                invitation: true,
            };
            sink.write(invite, self).await;
        }
        Ok(())
    }

    pub(super) async fn record_duplicate_registration(
        &mut self,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        let email = self.email.clone();
        sink.write(UserEvent::DuplicateRegistrationAttempted { email }, self)
            .await;
        Ok(())
    }

    pub(super) async fn request_email_verification(
        &mut self,
        nonce: String,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        if self.email_verified {
            return Err(UserError::AlreadyVerified);
        }
        let email = self.email.clone();
        sink.write(
            UserEvent::EmailVerificationRequested {
                email,
                nonce,
                requested_at: now,
            },
            self,
        )
        .await;
        Ok(())
    }

    pub(super) async fn verify_email(
        &mut self,
        nonce: String,
        method: SecretMethod,
        now: DateTime<Utc>,
        policy: &UserPolicy,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        if self.email_verified {
            return Err(UserError::AlreadyVerified);
        }
        User::check_link(
            &self.verification,
            &nonce,
            policy.link_ttl,
            policy.max_code_attempts,
            now,
        )?;
        sink.write(
            UserEvent::EmailVerified {
                method,
                verified_at: now,
            },
            self,
        )
        .await;
        Ok(())
    }

    pub(super) async fn verify_email_code(
        &mut self,
        code_ok: bool,
        now: DateTime<Utc>,
        policy: &UserPolicy,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        self.must_exist()?;
        if self.email_verified {
            return Err(UserError::AlreadyVerified);
        }
        let failed = User::check_code(
            &self.verification,
            policy.code_ttl,
            policy.max_code_attempts,
            now,
        )?;
        let event = if code_ok {
            UserEvent::EmailVerified {
                method: SecretMethod::Code,
                verified_at: now,
            }
        } else {
            UserEvent::EmailVerificationCodeRejected {
                attempts: failed + 1,
                exhausted: failed + 1 >= policy.max_code_attempts,
            }
        };
        sink.write(event, self).await;
        Ok(())
    }
}
